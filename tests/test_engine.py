"""zjobs.core.engine: the call engine alone, with a fake clock and no sockets.

Every event order that matters: answer before and after a deadline, retries and their
count, undelivered first attempts, duplicates and late answers, readiness per instance,
processors coming back, liveness, closing and a failed receiver.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from zjobs.core.engine import CallEngine, Completion, completions
from zjobs.core.monitor import ProcessorMonitor
from zjobs.core.options import ClientOptions
from zjobs.errors import CallTimeout, ClosedError, ProcessorsGone, RemoteError
from zjobs.wire.heartbeat import Heartbeat, with_seq
from zjobs.wire.protocol import ERROR, OK, PONG, ErrorInfo, Response


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, monitor: ProcessorMonitor | None = None,
         routes: list[str] | None = None, **options: Any) -> CallEngine:
    counter = iter(range(1, 1_000_000))
    return CallEngine(ids=lambda: f"id-{next(counter)}", clock=clock,
                      options=ClientOptions(**options), monitor=monitor, routes=routes)


def ok(rid: Any, value: Any = None, *, instance: str = "i1", replay: bool = False) -> Response:
    return Response(rid, OK, value, processor="p", instance=instance, replay=replay)


def pong(rid: Any, instance: str = "i1", processor: str = "p") -> Response:
    return Response(rid, PONG, processor=processor, instance=instance)


def settle(items: list[Completion]) -> None:
    completions(items)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_an_answer_completes_its_call_once(clock: Clock) -> None:
    engine = make(clock)
    future: Future[Any] = Future()
    call = engine.start("x", future)
    done = engine.receive(ok(call.id, 42))
    assert done is not None
    settle([done])
    assert future.result(0) == 42
    assert engine.pending == {}
    assert engine.receive(ok(call.id, 42)) is None  # a duplicate answers nothing
    assert engine.unmatched == 1


def test_an_error_response_becomes_a_remote_error(clock: Clock) -> None:
    engine = make(clock)
    future: Future[Any] = Future()
    call = engine.start("x", future)
    error = Response(call.id, ERROR, error=ErrorInfo("JobFailed", "ValueError: no"),
                     processor="p", instance="i1")
    settle([engine.receive(error)])  # type: ignore[list-item]
    exc = future.exception(0)
    assert isinstance(exc, RemoteError)
    assert (exc.type, exc.id, exc.processor) == ("JobFailed", call.id, "p")


def test_whole_calls_get_the_response_itself(clock: Clock) -> None:
    engine = make(clock)
    future: Future[Any] = Future()
    call = engine.start("x", future, whole=True)
    response = Response(call.id, ERROR, error=ErrorInfo("BadRequest", "no"), processor="p")
    settle([engine.receive(response)])  # type: ignore[list-item]
    assert future.result(0) is response


def test_without_retries_the_deadline_fails_the_call(clock: Clock) -> None:
    engine = make(clock, timeout_s=2.0)
    future: Future[Any] = Future()
    call = engine.start("x", future)
    clock.now += 1.999
    assert engine.expire() == ([], [])
    clock.now += 0.001
    again, failed = engine.expire()
    assert again == []
    settle(failed)
    exc = future.exception(0)
    assert isinstance(exc, CallTimeout) and exc.attempts == 1 and exc.id == call.id
    assert engine.receive(ok(call.id)) is None  # the late answer is unmatched
    assert engine.unmatched == 1


def test_retries_resend_the_same_call_then_fail_with_the_attempt_count(clock: Clock) -> None:
    engine = make(clock, timeout_s=1.0, retries=2)
    future: Future[Any] = Future()
    call = engine.start("x", future)
    assert call.dedup  # retried requests are marked for the replay window
    for attempt in (2, 3):
        clock.now += 1.0
        again, failed = engine.expire()
        assert again == [call] and failed == []
        assert call.attempts == attempt
    clock.now += 1.0
    again, failed = engine.expire()
    settle(failed)
    exc = future.exception(0)
    assert isinstance(exc, CallTimeout) and exc.attempts == 3
    assert engine.resent == 2


def test_an_answer_to_any_attempt_ends_the_call_and_counts_a_replay(clock: Clock) -> None:
    engine = make(clock, timeout_s=1.0, retries=3)
    future: Future[Any] = Future()
    call = engine.start("x", future)
    clock.now += 1.0
    engine.expire()
    settle([engine.receive(ok(call.id, "v", replay=True))])  # type: ignore[list-item]
    assert future.result(0) == "v"
    assert engine.replays == 1
    clock.now += 10
    assert engine.expire() == ([], [])  # nothing left to resend or fail


def test_an_undelivered_first_attempt_goes_on_when_retries_are_left(clock: Clock) -> None:
    engine = make(clock, timeout_s=1.0, retries=1)
    future: Future[Any] = Future()
    call = engine.start("x", future)
    assert engine.undelivered(call) is True
    assert call.id in engine.pending
    clock.now += 1.0
    again, _ = engine.expire()
    assert again == [call]
    settle([engine.receive(ok(call.id, 1))])  # type: ignore[list-item]
    assert future.result(0) == 1


def test_an_undelivered_attempt_without_retries_forgets_the_call(clock: Clock) -> None:
    engine = make(clock)
    call = engine.start("x", Future())
    assert engine.undelivered(call) is False
    assert engine.pending == {}
    clock.now += 100
    assert engine.expire() == ([], [])


def test_a_cancelled_call_is_not_resent(clock: Clock) -> None:
    engine = make(clock, timeout_s=1.0, retries=5)
    future: Future[Any] = Future()
    engine.start("x", future)
    future.cancel()
    clock.now += 1.0
    again, failed = engine.expire()
    assert again == []
    settle(failed)  # completing a cancelled future is skipped, not an error


def test_a_resend_that_raises_fails_its_call(clock: Clock) -> None:
    engine = make(clock, timeout_s=1.0, retries=1)
    future: Future[Any] = Future()
    call = engine.start("x", future)
    clock.now += 1.0
    again, _ = engine.expire()
    boom = RuntimeError("sender broke")
    settle(engine.resend_failed(again[0], boom))
    assert future.exception(0) is boom
    assert engine.resend_failed(call, boom) == []  # already done: nothing twice


def test_deadlines_of_different_timeouts_expire_in_time_order(clock: Clock) -> None:
    engine = make(clock)
    slow: Future[Any] = Future()
    fast: Future[Any] = Future()
    engine.start("slow", slow, timeout_s=5.0)
    engine.start("fast", fast, timeout_s=1.0)
    assert engine.next_deadline() == clock.now + 1.0
    clock.now += 1.0
    settle(engine.expire()[1])
    assert fast.done() and not slow.done()
    clock.now += 4.0
    settle(engine.expire()[1])
    assert slow.done()
    assert engine.next_deadline() is None


def test_answered_calls_do_not_keep_deadline_entries(clock: Clock) -> None:
    # Memory follows the calls in flight, not rate x timeout.
    engine = make(clock, timeout_s=3600.0)
    for _ in range(20_000):
        call = engine.start("x", Future())
        engine.receive(ok(call.id))
    queued = sum(len(queue) for queue in engine._queues.values())
    assert queued <= 2 * 1024 + 1024


def test_bad_options_are_refused(clock: Clock) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        make(clock, timeout_s=0)
    with pytest.raises(ValueError, match="retries"):
        make(clock, retries=-1)
    engine = make(clock)
    with pytest.raises(ValueError, match="timeout_s"):
        engine.start("x", Future(), timeout_s=-1)


def test_readiness_waits_for_distinct_instances(clock: Clock) -> None:
    engine = make(clock, expect_processors=2)
    assert not engine.ready and engine.ping_due()
    first, second, third = (engine.readiness_ping() for _ in range(3))
    engine.receive(pong(first, "a"))
    engine.receive(pong(second, "a"))  # the same processor twice counts once
    assert not engine.ready and engine.confirmed == 1
    engine.receive(pong(third, "b"))
    assert engine.ready and engine.confirmed == 2
    assert engine.unmatched == 0  # late handshake pongs are expected, not unmatched


def test_readiness_without_instance_counts_processor_names(clock: Clock) -> None:
    engine = make(clock, expect_processors=2)
    one, two = engine.readiness_ping(), engine.readiness_ping()
    engine.receive(Response(one, PONG, processor="p1"))
    engine.receive(Response(two, PONG, processor="p2"))
    assert engine.ready


def test_pings_back_off_and_stop_once_ready(clock: Clock) -> None:
    engine = make(clock)
    assert engine.ping_due()
    assert not engine.ping_due()  # not again at once
    gaps = []
    last = clock.now
    for _ in range(12):
        while not engine.ping_due():
            clock.now += 0.001
        gaps.append(clock.now - last)
        last = clock.now
    assert gaps[-1] > gaps[0] and max(gaps) <= 0.101
    engine.receive(pong(engine.readiness_ping()))
    clock.now += 1
    assert engine.ready and not engine.ping_due()


def test_a_processor_that_comes_back_is_pinged_and_counted(clock: Clock) -> None:
    engine = make(clock)
    engine.receive(pong(engine.readiness_ping(), "run-1"))
    assert engine.ready and not engine.ping_due()
    future: Future[Any] = Future()
    call = engine.start("x", future)
    engine.receive(ok(call.id, 1, instance="run-2"))  # a restarted processor answered
    assert engine.returned == 1
    assert engine.unconfirmed == {"run-2"}
    assert engine.ping_due()
    engine.receive(pong(engine.readiness_ping(), "run-2"))
    assert engine.unconfirmed == frozenset()
    assert not engine.ping_due()


def heartbeat(instance: str, seq: int, interval_ms: int = 100) -> list[bytes]:
    return with_seq(Heartbeat("p", instance, interval_ms).to_frames(), seq)


def test_heartbeats_of_an_unknown_instance_trigger_pings(clock: Clock) -> None:
    monitor = ProcessorMonitor(3, clock=clock)
    engine = make(clock, monitor=monitor)
    engine.receive(pong(engine.readiness_ping(), "run-1"))
    monitor.heartbeat(heartbeat("run-2", 1))
    assert engine.check_liveness() == []
    assert engine.unconfirmed == {"run-2"} and engine.returned == 1


def test_liveness_fails_waiting_calls_once_every_processor_is_gone(clock: Clock) -> None:
    monitor = ProcessorMonitor(3, clock=clock)
    engine = make(clock, monitor=monitor, liveness=3, timeout_s=60)
    engine.receive(pong(engine.readiness_ping(), "run-1"))
    monitor.heartbeat(heartbeat("run-1", 1))
    future: Future[Any] = Future()
    engine.start("x", future)
    clock.now += 0.25
    assert engine.check_liveness() == []
    clock.now += 0.1  # 3 intervals of 100 ms with no heartbeat
    settle(engine.check_liveness())
    exc = future.exception(0)
    assert isinstance(exc, ProcessorsGone) and isinstance(exc, CallTimeout)
    assert engine.confirmed == 0  # the gone run no longer counts


def test_close_fails_everything_and_refuses_new_calls(clock: Clock) -> None:
    engine = make(clock, retries=3)
    futures: list[Future[Any]] = [Future() for _ in range(3)]
    for future in futures:
        engine.start("x", future)
    settle(engine.close())
    assert all(isinstance(f.exception(0), ClosedError) for f in futures)
    with pytest.raises(ClosedError):
        engine.start("y", Future())
    clock.now += 1000
    assert engine.expire() == ([], [])


def test_a_failed_receiver_fails_every_call_and_refuses_new_ones(clock: Clock) -> None:
    engine = make(clock)
    future: Future[Any] = Future()
    engine.start("x", future)
    boom = OSError("receiver gone")
    settle(engine.fail(boom))
    assert future.exception(0) is boom
    with pytest.raises(ClosedError) as info:
        engine.start("y", Future())
    assert info.value.__cause__ is boom
