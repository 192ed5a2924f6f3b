"""One behaviour suite for both clients: the same calls, timeouts, retries, liveness,
restarts, close and errors against :class:`zjobs.Client` and :class:`zjobs.AsyncClient`.

A difference between the two is a failing test. The asyncio client runs on an event loop
in a thread of its own and is driven through the same synchronous adapter, so every test
below is written once.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from drivers import WAIT_S, Driven
from jobs_reliability import serve

from zjobs import (
    CallTimeout,
    ClosedError,
    NotReady,
    ProcessorsGone,
    RemoteError,
    SendTimeout,
    ZmqProcessor,
)
from zjobs.testing import wait_until


class Gate:
    """A job that waits until opened, and counts its runs per request."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.runs: Counter[Any] = Counter()
        self.lock = threading.Lock()

    def __call__(self, request: Any, resources: Any) -> Any:
        with self.lock:
            self.runs[repr(request)] += 1
        if request == "boom":
            raise ValueError("no")
        self.open.wait(WAIT_S)
        return request


@pytest.fixture
def gate() -> Iterator[tuple[ZmqProcessor, Gate]]:
    job = Gate()
    with ZmqProcessor(job, name="gate", heartbeat_interval_s=0.1) as proc:
        yield proc, job
        job.open.set()


def test_calls_values_and_errors(connect: Callable[..., Driven],
                                 gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, job = gate
    job.open.set()
    client = connect(proc.endpoints.requests, proc.endpoints.responses, timeout_s=WAIT_S)
    assert client.call({"a": [1, b"\x00"]}) == {"a": [1, b"\x00"]}
    with pytest.raises(RemoteError) as info:
        client.call("boom")
    assert (info.value.type, info.value.processor) == ("JobFailed", "gate")
    assert "ValueError" in info.value.message
    futures = [client.submit(n) for n in range(500)]
    assert [f.result(WAIT_S) for f in futures] == list(range(500))
    assert client.ping() >= 0
    assert client.pending == 0 and client.unmatched == 0


def test_an_unanswered_call_times_out_with_its_attempts(
        connect: Callable[..., Driven], gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, job = gate
    client = connect(proc.endpoints.requests, proc.endpoints.responses)
    client.wait_ready()
    with pytest.raises(CallTimeout) as info:
        client.call("held", timeout_s=0.2)
    assert info.value.attempts == 1
    with pytest.raises(CallTimeout) as info:
        client.call("held-too", timeout_s=0.2, retries=2)
    assert info.value.attempts == 3
    assert client.resent == 2
    job.open.set()
    # The retried request ran once: the replay window joined the repeats to it.
    wait_until(lambda: proc.counters.ok >= 2, WAIT_S)
    assert job.runs[repr("held-too")] == 1


def test_retries_get_one_result_and_run_the_job_once(
        connect: Callable[..., Driven], gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, job = gate
    client = connect(proc.endpoints.requests, proc.endpoints.responses)
    client.wait_ready()
    future = client.submit("slow", timeout_s=0.1, retries=50)
    wait_until(lambda: client.resent >= 3, WAIT_S)
    job.open.set()
    assert future.result(WAIT_S) == "slow"
    assert job.runs[repr("slow")] == 1
    assert client.call("after") == "after"  # late repeats are read and ignored by now
    assert client.pending == 0


def test_bad_options_are_refused_alike(connect: Callable[..., Driven],
                                       gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, job = gate
    job.open.set()
    client = connect(proc.endpoints.requests, proc.endpoints.responses)
    with pytest.raises(ValueError, match="timeout_s"):
        client.call(1, timeout_s=0)
    with pytest.raises(ValueError, match="retries"):
        client.call(1, retries=-1)


def test_not_ready_without_processors(connect: Callable[..., Driven], ipc_dir: Path) -> None:
    client = connect(f"ipc://{ipc_dir}/nobody-req", f"ipc://{ipc_dir}/nobody-pub",
                     ready_timeout_s=0.3)
    with pytest.raises(NotReady) as info:
        client.call(1)
    assert (info.value.seen, info.value.expected) == (0, 1)


def test_a_call_with_retries_outlives_a_send_nobody_takes(
        connect: Callable[..., Driven]) -> None:
    # The only processor goes away after readiness: a call without retries gets
    # SendTimeout, one with retries gets CallTimeout counting every attempt (the first
    # send included), not SendTimeout.
    proc = ZmqProcessor(lambda r, _: r, name="leaving").start()
    client = connect(proc.endpoints.requests, proc.endpoints.responses)
    assert client.call(1) == 1
    proc.stop()
    # Until the client's socket notices the peer left, a send may still be queued to the
    # dead connection: without retries that is lost (CallTimeout), or refused (SendTimeout).
    with pytest.raises((SendTimeout, CallTimeout)):
        client.call(2, timeout_s=0.3)
    with pytest.raises(CallTimeout) as info:
        client.call(3, timeout_s=0.3, retries=2)
    assert not isinstance(info.value, ProcessorsGone)
    assert info.value.attempts == 3
    with pytest.raises(SendTimeout):  # the connection is known to be gone by now
        client.call(4, timeout_s=0.3)


def test_liveness_fails_waiting_calls_when_every_processor_is_gone(
        connect: Callable[..., Driven], gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, job = gate
    client = connect(proc.endpoints.requests, proc.endpoints.responses, liveness=3,
                     timeout_s=WAIT_S)
    client.wait_ready()
    wait_until(lambda: client.monitor.heartbeats > 0, WAIT_S)
    future = client.submit("held")
    wait_until(lambda: job.runs[repr("held")] == 1, WAIT_S)
    job.open.set()
    threading.Thread(target=proc.stop, name="test-stopper").start()  # says "stopped"
    # Answered before the stop, or failed early: never the whole 30 s timeout.
    error = future.exception(WAIT_S)
    assert error is None or isinstance(error, ProcessorsGone)


def test_close_fails_pending_calls_and_refuses_new_ones(
        connect: Callable[..., Driven], gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, _ = gate
    client = connect(proc.endpoints.requests, proc.endpoints.responses, retries=3)
    futures = [client.submit(f"held-{n}") for n in range(5)]
    wait_until(lambda: client.pending == 5, WAIT_S)
    client.close()
    for future in futures:
        assert isinstance(future.exception(WAIT_S), ClosedError)
    assert client.pending == 0
    client.close()  # idempotent
    with pytest.raises(ClosedError):
        client.call(1)


def test_a_restarted_processor_is_seen_and_nothing_after_is_lost(
        connect: Callable[..., Driven], ipc_dir: Path) -> None:
    requests, responses = f"ipc://{ipc_dir}/r-req", f"ipc://{ipc_dir}/r-pub"
    first = ZmqProcessor(lambda r, _: r, name="r", requests=requests, responses=responses,
                         heartbeat_interval_s=0.05).start()
    client = connect(requests, responses)
    assert client.call("before") == "before"
    first.stop()
    second = ZmqProcessor(lambda r, _: r, name="r", requests=requests, responses=responses,
                          heartbeat_interval_s=0.05).start()
    try:
        # The new run's heartbeats reach the client: it pings the run until it answers.
        wait_until(lambda: client.returned >= 1, WAIT_S)
        wait_until(lambda: not client._engine.unconfirmed, WAIT_S)
        futures = [client.submit(n, timeout_s=WAIT_S) for n in range(300)]
        assert [f.result(WAIT_S) for f in futures] == list(range(300))
    finally:
        second.stop()


@pytest.mark.timeout(180)
def test_kill_9_of_one_of_two_daemons_loses_and_duplicates_nothing(
        connect: Callable[..., Driven]) -> None:
    a, b = serve("quick", name="a"), serve("quick", name="b")
    calls = 2_000
    try:
        client = connect([a.requests, b.requests], [a.responses, b.responses],
                         timeout_s=2.0, retries=8)
        client.wait_ready(60)
        done: Counter[int] = Counter()
        lock = threading.Lock()

        def note(i: int) -> Callable[[Future[Any]], None]:
            def count(_: Future[Any]) -> None:
                with lock:
                    done[i] += 1
            return count

        futures = []
        for i in range(calls):
            future = client.submit(i)
            future.add_done_callback(note(i))
            futures.append(future)
            if i == calls // 4:
                a.proc.send_signal(signal.SIGKILL)  # by PID, with calls queued in it
        results = [f.result(120) for f in futures]
        assert client.call(-1) == -2  # late duplicates from b are read by now
        assert results == [2 * i for i in range(calls)]
        assert sorted(done.values()) == [1] * calls  # none lost, none twice
        assert client.pending == 0
    finally:
        a.stop()
        assert b.stop() == 0, b.diagnostics()


def test_processors_added_and_removed_while_the_client_runs(
        connect: Callable[..., Driven]) -> None:
    one = ZmqProcessor(lambda r, _: r, name="one", heartbeat_interval_s=0.05).start()
    two = ZmqProcessor(lambda r, _: r, name="two", heartbeat_interval_s=0.05).start()
    try:
        client = connect(one.endpoints.requests, one.endpoints.responses, retries=3,
                         timeout_s=5.0)
        assert client.call(0) == 0
        client.update([one.endpoints.requests, two.endpoints.requests],
                      [one.endpoints.responses, two.endpoints.responses])
        # The newcomer is pinged once its heartbeats are seen, while calls go on.
        wait_until(lambda: client._engine.confirmed >= 2, WAIT_S)
        futures = [client.submit(n) for n in range(200)]
        assert [f.result(WAIT_S) for f in futures] == list(range(200))
        assert two.counters.received > 1
        client.update([two.endpoints.requests], [two.endpoints.responses])
        before = one.counters.received
        futures = [client.submit(n) for n in range(200)]
        assert [f.result(WAIT_S) for f in futures] == list(range(200))
        assert one.counters.received == before  # nothing sent to the removed one
    finally:
        one.stop()
        two.stop()


def test_ping_after_the_processor_left_ends_within_its_timeout(
        connect: Callable[..., Driven]) -> None:
    proc = ZmqProcessor(lambda r, _: r, name="leaving").start()
    client = connect(proc.endpoints.requests, proc.endpoints.responses)
    assert client.ping() >= 0
    proc.stop()
    with pytest.raises((SendTimeout, CallTimeout)):
        client.ping(0.3)
    with pytest.raises((SendTimeout, CallTimeout)):
        client.ping(0.3)
    client.close()  # not held up by a send in progress
    with pytest.raises(ClosedError):
        client.ping(0.3)


def test_max_in_flight_makes_calls_wait_for_room(
        connect: Callable[..., Driven], gate: tuple[ZmqProcessor, Gate]) -> None:
    # Never more calls pending than the bound (the answers of more could overflow the
    # response path's buffers): a call beyond it waits for room, up to its timeout.
    proc, job = gate
    client = connect(proc.endpoints.requests, proc.endpoints.responses, max_in_flight=3)
    held = [client.submit(f"held-{n}") for n in range(3)]
    wait_until(lambda: client.pending == 3, WAIT_S)
    with pytest.raises(SendTimeout):
        client.call("no room", timeout_s=0.3)
    assert job.runs[repr("no room")] == 0  # it was never sent
    job.open.set()
    assert sorted(f.result(WAIT_S) for f in held) == ["held-0", "held-1", "held-2"]
    futures = [client.submit(n) for n in range(300)]  # a window of 3 over 300 calls
    assert [f.result(WAIT_S) for f in futures] == list(range(300))
