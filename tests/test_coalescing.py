"""Coalescing: calls made while others are in flight travel as one batch, each with its
own outcome (zjobs.core.coalescing, driven by both clients).

The engine alone with a fake clock (when calls are held, what a batch's answer does to
each call, retries, refusal, closing), then both clients against real processors: the
job runs once per call, each failed item fails only its own call, slow jobs and
processors without batches are never coalesced, and a batch refused whole is sent again
one call per message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import msgpack
import pytest
import zmq
from drivers import WAIT_S, Driven
from test_engine import Clock, make, ok

from zjobs import CallTimeout, ClosedError, EncodeError, RemoteError, ZmqProcessor
from zjobs.core.coalescing import BATCH_RUN_S, PACE_WINDOW_S, Group
from zjobs.core.engine import CallEngine, completions
from zjobs.wire.batch import BATCH, Batch, BatchResult
from zjobs.wire.protocol import ERROR, ErrorInfo, Response

# -- the engine alone --------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


def batch_pong(rid: Any, instance: str = "i1") -> Response:
    return Response(rid, "pong", processor="p", instance=instance, extensions=(BATCH,),
                    batch_max=100)


FAST_S = BATCH_RUN_S / 40  # an answer every 50 us: 40 calls to a batch's worth of time


def fast(clock: Clock, **options: Any) -> CallEngine:
    """An engine ready with one batch-taking processor whose answers came fast for longer
    than a pace window, with one call still in flight."""
    options.setdefault("coalesce", 4)
    engine = make(clock, **options)
    engine.receive(batch_pong(engine.readiness_ping()))
    assert engine.ready
    calls = [engine.start(n, Future()) for n in range(300)]
    for call in calls[:-1]:
        clock.now += FAST_S
        completions([c for c in (engine.receive(ok(call.id, 0)),) if c])
    assert (len(calls) - 2) * FAST_S > PACE_WINDOW_S
    return engine


def encoded(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def hold(engine: CallEngine, value: Any, future: Future[Any], timeout_s: float | None = None,
         retries: int | None = None) -> int:
    """Hold a call as a driver does: after the engine said it holds one now."""
    assert engine.holds(timeout_s, retries)
    return engine.hold(encoded(value), future, timeout_s, retries)


def never(group: Group) -> None:
    raise AssertionError("not refused")


def test_nothing_is_held_without_fast_answers_or_without_calls_in_flight(
        clock: Clock) -> None:
    engine = make(clock, coalesce=4)
    engine.receive(batch_pong(engine.readiness_ping()))
    assert not engine.holds(None, None)  # nothing in flight: a call goes at once
    calls = [engine.start(n, Future()) for n in range(3)]
    assert not engine.holds(None, None)  # in flight, but no answer measured yet
    for call in calls[:2]:
        clock.now += 0.5  # half a second per answer: slow jobs
        engine.receive(ok(call.id, 0))
    assert not engine.holds(None, None)
    assert fast(clock).holds(None, None)
    assert not fast(clock, coalesce=0).holds(None, None)


def test_held_calls_go_as_one_batch_and_each_gets_its_own_outcome(clock: Clock) -> None:
    engine = fast(clock)
    futures = [Future[Any]() for _ in range(4)]
    assert engine.holds(None, None)
    counts = [hold(engine, n, f) for n, f in enumerate(futures)]
    assert counts == [1, 2, 3, 0]  # 0: full, send it now
    assert engine.calls_pending == 1 + 4 and engine.held == 4
    call = engine.take_held(never)
    assert call is not None and call.size == 4 and isinstance(call.request, Batch)
    assert msgpack.unpackb(call.request.body) == [0, 1, 2, 3]
    assert engine.held == 0 and engine.calls_pending == 1 + 4 and len(engine.pending) == 2
    failed = RemoteError("JobFailed", "no", processor="p")
    done = engine.receive(ok(call.id, BatchResult([0, None, 4, 9], {1: failed})))
    assert done is not None
    completions([done])
    assert [f.exception() is failed for f in futures] == [False, True, False, False]
    assert [f.result() for i, f in enumerate(futures) if i != 1] == [0, 4, 9]
    assert engine.calls_pending == 1 and engine.coalesced == 1


def test_a_batch_answered_with_the_wrong_count_fails_every_call(clock: Clock) -> None:
    engine = fast(clock)
    futures = [Future[Any]() for _ in range(2)]
    for n, future in enumerate(futures):
        hold(engine, n, future)
    call = engine.take_held(never)
    assert call is not None
    done = engine.receive(ok(call.id, BatchResult([1])))
    assert done is not None
    completions([done])
    assert all("2 calls" in str(f.exception()) for f in futures)


def test_calls_with_other_options_are_not_held_with_them(clock: Clock) -> None:
    engine = fast(clock)
    hold(engine, 1, Future())
    assert engine.holds(None, None)
    assert not engine.holds(5.0, None) and not engine.holds(None, 3)


def test_a_batch_is_retried_whole_with_its_id_and_times_out_for_each_call(
        clock: Clock) -> None:
    engine = fast(clock, timeout_s=1.0)
    futures = [Future[Any]() for _ in range(3)]
    for n, future in enumerate(futures):
        hold(engine, n, future, None, 1)
    call = engine.take_held(never)
    assert call is not None and call.dedup
    clock.now += 1.5
    again, failed = engine.expire()
    assert call in again and not [f for f in failed if f[0] is call.handle]
    completions(failed)
    clock.now += 1.5
    again, failed = engine.expire()
    completions(failed)
    errors = [f.exception() for f in futures]
    assert all(isinstance(e, CallTimeout) and e.attempts == 2 for e in errors)
    assert engine.calls_pending == 0


def test_a_refused_batch_comes_back_as_one_call_each_and_stops_coalescing(
        clock: Clock) -> None:
    engine = fast(clock)
    futures = [Future[Any]() for _ in range(3)]
    for n, future in enumerate(futures):
        hold(engine, [n, "x"], future)
    singles: list[Any] = []  # the driver asks the engine at once, as both clients do
    call = engine.take_held(lambda group: singles.extend(engine.refused(group)))
    assert call is not None
    error = Response(call.id, ERROR, error=ErrorInfo("BadRequest", "3 frames"), processor="p")
    done = engine.receive(error)
    assert done is not None
    completions([done])
    assert len(singles) == 3 and not any(f.done() for f in futures)
    assert [c.request for c in singles] == [[0, "x"], [1, "x"], [2, "x"]]
    assert [c.handle for c in singles] == futures
    assert not engine.holds(None, None)  # coalescing is off for good
    for single, n in zip(singles, range(3), strict=True):
        completions([c for c in (engine.receive(ok(single.id, n)),) if c])
    assert [f.result() for f in futures] == [0, 1, 2]


def test_closing_fails_the_held_calls_too(clock: Clock) -> None:
    engine = fast(clock)
    futures = [Future[Any]() for _ in range(2)]
    for n, future in enumerate(futures):
        hold(engine, n, future)
    completions(engine.close())
    assert all(isinstance(f.exception(), ClosedError) for f in futures)
    assert engine.calls_pending == 0
    assert not engine.holds(None, None)
    with pytest.raises(ClosedError):
        engine.hold(encoded(3), Future(), None, None)


# -- both clients against real processors ---------------------------------------------


class Counting:
    """A fast job that counts its runs per value and fails for negative ones."""

    def __init__(self) -> None:
        self.runs: dict[Any, int] = {}
        self.lock = threading.Lock()

    def __call__(self, request: Any, resources: Any) -> Any:
        with self.lock:
            self.runs[request] = self.runs.get(request, 0) + 1
        if isinstance(request, int) and request < 0:
            raise ValueError(f"negative: {request}")
        return request


@pytest.fixture
def counting() -> Iterator[tuple[ZmqProcessor, Counting]]:
    job = Counting()
    with ZmqProcessor(job, name="counting") as proc:
        yield proc, job


def burst(client: Driven, values: list[Any], *, rounds: int = 20) -> list[Future[Any]]:
    """Submit ``values`` at once, after warm-up bursts: until one was coalesced (the
    client has measured fast answers), or ``rounds`` of them."""
    client.call("warm")
    for round_ in range(rounds):
        before = client.coalesced
        warm = [client.submit(f"warm-{round_}-{n}") for n in range(300)]
        for future in warm:
            future.result(WAIT_S)
        if client.coalesced > before:
            break
    return [client.submit(v) for v in values]


def test_a_burst_is_coalesced_and_runs_the_job_once_per_call(
        connect: Callable[..., Driven], counting: tuple[ZmqProcessor, Counting]) -> None:
    proc, job = counting
    client = connect(proc.endpoints.requests, proc.endpoints.responses, timeout_s=WAIT_S)
    values = list(range(3000))
    futures = burst(client, values)
    assert [f.result(WAIT_S) for f in futures] == values
    assert client.coalesced > 0 and proc.counters.batches > 0
    assert all(job.runs[v] == 1 for v in values)
    assert client.pending == 0


def test_a_failed_call_in_a_batch_fails_only_itself(
        connect: Callable[..., Driven], counting: tuple[ZmqProcessor, Counting]) -> None:
    proc, _ = counting
    client = connect(proc.endpoints.requests, proc.endpoints.responses, timeout_s=WAIT_S)
    values = [n if n % 7 else -n - 1 for n in range(700)]
    futures = burst(client, values)
    for value, future in zip(values, futures, strict=True):
        if value < 0:
            with pytest.raises(RemoteError) as info:
                future.result(WAIT_S)
            assert info.value.type == "JobFailed" and f"negative: {value}" in info.value.message
        else:
            assert future.result(WAIT_S) == value
    assert proc.counters.batches > 0


def test_an_unencodable_call_in_a_burst_raises_at_once_and_the_rest_go(
        counting: tuple[ZmqProcessor, Counting]) -> None:
    proc, _ = counting
    with proc.client(timeout_s=WAIT_S) as client:
        client.call("warm")
        futures = [client.submit(n) for n in range(300)]
        with pytest.raises(EncodeError):
            client.submit(object())
        futures += [client.submit(n) for n in range(300, 600)]
        assert [f.result(WAIT_S) for f in futures] == list(range(600))


def test_processors_without_batches_get_every_call_alone(
        connect: Callable[..., Driven]) -> None:
    job = Counting()
    with ZmqProcessor(job, name="singles", batch_max=0) as proc:
        client = connect(proc.endpoints.requests, proc.endpoints.responses, timeout_s=WAIT_S)
        futures = burst(client, list(range(1000)))
        assert [f.result(WAIT_S) for f in futures] == list(range(1000))
        assert proc.counters.batches == 0 and client.coalesced == 0


def test_slow_jobs_are_never_coalesced(connect: Callable[..., Driven]) -> None:
    # A batch is answered when its last call is done, by one processor: for jobs slower
    # than a message costs, two processors must share the calls one by one.
    gate = threading.Event()

    def slow(request: Any, resources: Any) -> Any:
        gate.wait(0.002)
        return request

    with ZmqProcessor(slow, name="a") as first, ZmqProcessor(slow, name="b") as second:
        client = connect([first.endpoints.requests, second.endpoints.requests],
                         [first.endpoints.responses, second.endpoints.responses],
                         timeout_s=WAIT_S)
        futures = burst(client, list(range(200)), rounds=1)
        assert [f.result(WAIT_S) for f in futures] == list(range(200))
        assert first.counters.batches == second.counters.batches == 0
        assert first.counters.ok > 150 and second.counters.ok > 150


class Refuser:
    """A processor written by hand that advertises batches in its pongs but refuses every
    batch request with BadRequest (as one without the extension would), and answers plain
    requests with their value."""

    def __init__(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.pull, self.pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
        self.pull.linger = self.pub.linger = 0
        self.pull.bind("tcp://127.0.0.1:*")
        self.pub.bind("tcp://127.0.0.1:*")
        self.requests = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.responses = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.refused = 0
        self.answered: list[Any] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="refuser")
        self.thread.start()

    def _serve(self) -> None:
        pack = msgpack.packb
        while not self.stop.is_set():
            if not self.pull.poll(20):
                continue
            frames = self.pull.recv_multipart()
            header = msgpack.unpackb(frames[0])
            reply: dict[str, Any] = {"v": 1, "id": header["id"], "processor": "refuser",
                                     "instance": "r1"}
            body = b"\xc0"
            if header.get("ping"):
                reply.update(status="pong", ext=["batch"], batch_max=1000)
            elif len(frames) == 3:
                self.refused += 1
                reply.update(status="error", error={"type": "BadRequest",
                                                    "message": "3 frames"})
            else:
                self.answered.append(msgpack.unpackb(frames[1]))
                reply["status"] = "ok"
                body = frames[1]
            self.pub.send_multipart([header["reply_to"].encode(), pack(reply), body])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT_S)
        self.pull.close()
        self.pub.close()


def test_a_batch_refused_whole_is_sent_again_one_call_each(
        connect: Callable[..., Driven]) -> None:
    refuser = Refuser()
    try:
        client = connect(refuser.requests, refuser.responses, timeout_s=WAIT_S)
        futures = burst(client, list(range(2000)))
        assert [f.result(WAIT_S) for f in futures] == list(range(2000))
        assert refuser.refused >= 1  # at least one batch went, and came back refused
        ran = [v for v in refuser.answered if isinstance(v, int)]
        assert sorted(ran) == list(range(2000))  # every call ran once, alone
        coalesced = client.coalesced
        again = [client.submit(n) for n in range(500)]
        assert [f.result(WAIT_S) for f in again] == list(range(500))
        assert client.coalesced == coalesced  # no more batches from this client
    finally:
        refuser.close()
