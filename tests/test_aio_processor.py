"""AsyncZmqProcessor: async jobs on an event loop, concurrency limit, backpressure, stopping."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from zjobs import MISS, CallTimeout, CrashedError, RemoteError, StartError, cached
from zjobs.aio import AsyncClient, AsyncZmqProcessor, AsyncZmqReceiver, AsyncZmqSender
from zjobs.aio.testing import wait_subscribed
from zjobs.errors import ClosedError
from zjobs.testing import wait_until
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC, Heartbeat


async def double(request: Any, resources: Any) -> Any:
    await asyncio.sleep(0)
    return request * 2


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Await until ``predicate()`` is true (the event loop keeps running meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


class Gated:
    """An async job that waits until the test opens its gate, measuring its concurrency."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.current = 0
        self.peak = 0
        self.started = 0

    async def run(self, request: Any, resources: Any) -> Any:
        self.started += 1
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            await self.gate.wait()
            return request
        finally:
            self.current -= 1


Serve = Callable[..., Awaitable[tuple[AsyncZmqProcessor, AsyncClient]]]


@pytest.fixture
async def serving() -> AsyncIterator[Serve]:
    """Serve processors in the test's loop; stop them (and close their clients) at the end."""
    started: list[tuple[AsyncZmqProcessor, asyncio.Task[None], AsyncClient]] = []

    async def start(job: Any, **options: Any) -> tuple[AsyncZmqProcessor, AsyncClient]:
        processor = AsyncZmqProcessor(job, **options)
        task = asyncio.create_task(processor.serve())
        client = processor.async_client(timeout_s=30.0)
        started.append((processor, task, client))
        await client.wait_ready()
        return processor, client

    yield start
    for processor, task, client in reversed(started):
        await client.aclose()
        processor.request_stop()
        done, _ = await asyncio.wait((task,), timeout=5)
        if not done:  # a job the test left blocked: stop at once
            task.cancel()
            await asyncio.wait((task,))


async def test_async_job_answers(serving: Serve) -> None:
    processor, client = await serving(double)
    assert await client.call(21) == 42
    assert await client.call("ab") == "abab"
    response = await client.call_response(5, meta={"trace": "t1"})
    assert response.ok and response.value == 10 and not response.cached
    assert response.processor == "double" and response.meta == {"trace": "t1"}
    assert response.instance == processor.instance
    assert processor.counters.ok == 3


async def test_async_job_raising_answers_job_failed(serving: Serve) -> None:
    async def fragile(request: Any, resources: Any) -> Any:
        await asyncio.sleep(0)
        if request < 0:
            raise ValueError(f"negative: {request}")
        return request

    processor, client = await serving(fragile)
    with pytest.raises(RemoteError) as info:
        await client.call(-1)
    assert info.value.type == "JobFailed"
    assert info.value.exception == "ValueError"
    assert "negative: -1" in info.value.message
    assert await client.call(3) == 3  # the processor keeps serving
    assert processor.counters.failed == 1 and processor.counters.ok == 1


async def test_job_raising_cancelled_error_is_a_job_failure(serving: Serve) -> None:
    async def cancels(request: Any, resources: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.cancel()
        return await future  # raises CancelledError, but nobody cancelled the processor

    processor, client = await serving(cancels)
    with pytest.raises(RemoteError) as info:
        await client.call(1)
    assert info.value.exception == "CancelledError"
    await client.ping()
    assert processor.state == "running"


async def test_unencodable_value_and_bad_request(serving: Serve) -> None:
    async def returns_set(request: Any, resources: Any) -> Any:
        return {1, 2}

    processor, client = await serving(returns_set)
    with pytest.raises(RemoteError) as info:
        await client.call(1)
    assert info.value.type == "JobFailed" and info.value.exception == "EncodeError"
    await client.sender.send_frames([b"\x93not a map", b"\xc0"])  # dropped: no reply_to
    await eventually(lambda: processor.counters.dropped == 1)


class AsyncCache:
    """An async job with an async cache; counts runs."""

    def __init__(self) -> None:
        self.store: dict[Any, Any] = {"nothing": None}
        self.runs: list[Any] = []

    async def run(self, request: Any, resources: Any) -> Any:
        self.runs.append(request)
        return f"computed {request}"

    async def get_cache(self, request: Any, resources: Any) -> Any:
        await asyncio.sleep(0)
        return self.store.get(request, MISS)

    async def put_cache(self, request: Any, response: Any, resources: Any) -> None:
        await asyncio.sleep(0)
        self.store[request] = response


async def test_async_cache_miss_hit_and_cached_none(serving: Serve) -> None:
    job = AsyncCache()
    processor, client = await serving(job)
    first = await client.call_response("x")
    assert first.value == "computed x" and not first.cached
    second = await client.call_response("x")
    assert second.value == "computed x" and second.cached
    none = await client.call_response("nothing")
    assert none.ok and none.value is None and none.cached
    assert job.runs == ["x"]
    counters = processor.counters
    assert counters.ok == 3 and counters.cache_hits == 2


async def test_cached_wraps_an_async_job(serving: Serve) -> None:
    runs: list[Any] = []

    async def slow_square(request: Any, resources: Any) -> Any:
        runs.append(request)
        await asyncio.sleep(0)
        return request * request

    processor, client = await serving(cached(slow_square))
    assert await client.call(4) == 16
    assert (await client.call_response(4)).cached
    assert runs == [4] and processor.name == "slow_square"


async def test_concurrency_never_exceeds_the_limit(serving: Serve) -> None:
    current = peak = 0

    async def busy(request: Any, resources: Any) -> Any:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.002)
        current -= 1
        return request

    processor, client = await serving(busy, concurrency=7)
    results = await asyncio.gather(*(client.call(i) for i in range(300)))
    assert results == list(range(300))
    assert peak == 7  # reached, never exceeded
    assert processor.counters.ok == 300


async def test_responses_are_published_as_jobs_finish(serving: Serve) -> None:
    gates = {i: asyncio.Event() for i in range(5)}

    async def waits(request: Any, resources: Any) -> Any:
        await gates[request].wait()
        return request

    processor, client = await serving(waits, concurrency=5)
    futures = [await client.submit(i) for i in range(5)]
    await eventually(lambda: processor.in_flight == 5)
    for i in (3, 0, 4, 2, 1):  # finish in this order: each answer arrives before the next
        gates[i].set()
        assert await futures[i] == i
        assert sum(f.done() for f in futures) == [3, 0, 4, 2, 1].index(i) + 1


async def test_backpressure_stops_reading_past_the_limit(serving: Serve) -> None:
    job = Gated()
    processor, client = await serving(job, concurrency=3)

    def taken() -> int:  # requests read off the socket, not counting readiness pings
        return processor.counters.received - processor.counters.pongs

    futures = [await client.submit(i) for i in range(20)]
    await eventually(lambda: job.started == 3)
    # Give a processor that ignored the limit every chance to take more.
    await asyncio.sleep(0.3)
    assert job.started == 3 and processor.in_flight == 3 and taken() == 3
    job.gate.set()
    assert await asyncio.gather(*futures) == list(range(20))
    assert job.peak == 3 and taken() == 20


class Recorder:
    """Resources that record their lifecycle."""

    def __init__(self) -> None:
        self.events: list[str] = []


async def test_async_generator_resources_open_once_and_close_on_stop() -> None:
    recorder = Recorder()

    async def factory() -> AsyncIterator[Recorder]:
        recorder.events.append("open")
        await asyncio.sleep(0)
        yield recorder
        await asyncio.sleep(0)
        recorder.events.append("close")

    async def job(request: Any, resources: Recorder) -> Any:
        resources.events.append(f"run {request}")
        if request == "boom":
            raise RuntimeError("boom")
        return request

    async with AsyncZmqProcessor(job, resources=factory) as processor, \
            processor.async_client() as client:
        assert recorder.events == ["open"]
        assert await client.call(1) == 1
        with pytest.raises(RemoteError):
            await client.call("boom")
        assert await client.call(2) == 2
    assert recorder.events == ["open", "run 1", "run boom", "run 2", "close"]
    assert processor.state == "stopped"


class AsyncClosable:
    def __init__(self) -> None:
        self.closed = 0

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        self.closed += 1


async def test_coroutine_factory_resources_closed_with_aclose() -> None:
    opened: list[AsyncClosable] = []

    async def factory() -> AsyncClosable:
        await asyncio.sleep(0)
        opened.append(AsyncClosable())
        return opened[-1]

    async def job(request: Any, resources: AsyncClosable) -> Any:
        raise KeyError(request)

    async with AsyncZmqProcessor(job, resources=factory) as processor, \
            processor.async_client() as client:
        with pytest.raises(RemoteError):
            await client.call(1)
        assert opened[0].closed == 0
    assert len(opened) == 1 and opened[0].closed == 1


async def test_failing_async_factory_raises_start_error() -> None:
    async def factory() -> Any:
        raise OSError("database down")

    processor = AsyncZmqProcessor(double, resources=factory)
    with pytest.raises(StartError, match="database down"):
        async with processor:
            pass
    assert processor.state == "stopped"


async def test_serve_inside_an_existing_loop_stops_gracefully() -> None:
    job = Gated()
    processor = AsyncZmqProcessor(job)
    task = asyncio.create_task(processor.serve())
    async with processor.async_client() as client:
        call = asyncio.create_task(client.call("in flight"))
        await eventually(lambda: job.started == 1)
        processor.request_stop()
        await asyncio.sleep(0.05)
        assert not task.done()  # waits for the job in flight
        job.gate.set()
        assert await call == "in flight"  # answered during the drain
        await asyncio.wait_for(task, 10)
    assert processor.state == "stopped"
    with pytest.raises(ClosedError):
        await processor.serve()


async def test_cancelling_serve_stops_at_once() -> None:
    job = Gated()
    processor = AsyncZmqProcessor(job)
    task = asyncio.create_task(processor.serve())
    async with processor.async_client(timeout_s=0.5) as client:
        call = asyncio.create_task(client.call(1))
        await eventually(lambda: job.started == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert processor.state == "stopped" and job.current == 0
        with pytest.raises(CallTimeout):  # cancelled unanswered
            await call


def test_start_and_stop_from_sync_code() -> None:
    async def slow(request: Any, resources: Any) -> Any:
        await asyncio.sleep(0.2)
        return request

    processor = AsyncZmqProcessor(slow, concurrency=10).start()
    try:
        with processor.client() as client:
            futures = [client.submit(i) for i in range(10)]
            wait_until(lambda: processor.in_flight == 10)
            processor.stop()  # graceful: the ten in flight finish and publish first
            assert [f.result(timeout=10) for f in futures] == list(range(10))
    finally:
        processor.stop()
    assert processor.state == "stopped"


def test_sync_job_runs_in_a_thread_pool_within_the_limit() -> None:
    lock = threading.Lock()
    current = peak = 0
    threads: set[str] = set()

    def blocking(request: Any, resources: Any) -> Any:
        nonlocal current, peak
        with lock:
            current += 1
            peak = max(peak, current)
            threads.add(threading.current_thread().name)
        time.sleep(0.02)
        with lock:
            current -= 1
        return request + 1

    with AsyncZmqProcessor(blocking, concurrency=4, threads=True) as processor, \
            processor.client() as client:
        futures = [client.submit(i) for i in range(40)]
        assert [f.result(timeout=30) for f in futures] == [i + 1 for i in range(40)]
    assert 1 < peak <= 4
    assert all(name.startswith("zjobs-pool-blocking") for name in threads)


def test_sync_job_needs_threads_and_concurrency_is_positive() -> None:
    def sync_job(request: Any, resources: Any) -> Any:
        return request

    with pytest.raises(TypeError, match="threads=True"):
        AsyncZmqProcessor(sync_job)
    with pytest.raises(ValueError, match="concurrency"):
        AsyncZmqProcessor(double, concurrency=0)
    with pytest.raises(TypeError):
        AsyncZmqProcessor(42)  # type: ignore[arg-type]


async def test_pings_bad_requests_and_repr(serving: Serve) -> None:
    processor, client = await serving(double)
    assert await client.ping() >= 0
    assert "AsyncZmqProcessor 'double' running" in repr(processor)
    assert processor.endpoints.requests in repr(processor)
    async with AsyncZmqReceiver(processor.connect_endpoints.responses) as receiver:
        await wait_subscribed(client.sender, receiver)
        await client.sender.send_frames([b"\x82\xa1v\x02\xa2id\xa1x", b"\xc0"])  # v=2
        response = await receiver.receive(timeout=10)
        assert response.error is not None and response.error.type == "UnsupportedVersion"


async def test_repeated_request_is_answered_from_the_replay_window() -> None:
    runs: list[Any] = []

    async def counted(request: Any, resources: Any) -> Any:
        runs.append(request)
        await asyncio.sleep(0)
        return request

    async with AsyncZmqProcessor(counted) as processor:
        ep = processor.connect_endpoints
        async with AsyncZmqSender(ep.requests) as sender, \
                AsyncZmqReceiver(ep.responses, topics=("t",)) as receiver:
            await wait_subscribed(sender, receiver, topic="t")
            await sender.send("once", id="retry-1", reply_to="t", dedup=True)
            first = await receiver.receive(timeout=10)
            await sender.send("once", id="retry-1", reply_to="t", dedup=True)
            repeat = await receiver.receive(timeout=10)
    assert first.value == repeat.value == "once"
    assert not first.replay and repeat.replay
    assert first.seq is not None and repeat.seq is not None and repeat.seq > first.seq
    assert runs == ["once"] and processor.counters.replays == 1


async def test_heartbeats_are_published() -> None:
    async with AsyncZmqProcessor(double, heartbeat_interval_s=0.05) as processor:
        async with AsyncZmqReceiver(processor.connect_endpoints.responses,
                                    topics=(HEARTBEAT_TOPIC,)) as receiver:
            # Receivers skip the reserved topic: read the raw frames.
            frames = await receiver.receive_frames(asyncio.get_running_loop().time() + 10)
    assert frames is not None and frames[0] == HEARTBEAT_TOPIC
    beat = Heartbeat.from_frames(frames)
    assert beat.instance == processor.instance and beat.state == "running"


async def interrupting(request: Any, resources: Any) -> Any:
    if request == "stop":
        raise KeyboardInterrupt("from the job")  # not a job failure: it ends serving
    return request


def test_a_crash_of_the_background_loop_is_raised_from_the_next_stop() -> None:
    processor = AsyncZmqProcessor(interrupting, concurrency=4).start()
    with processor.client(timeout_s=30.0) as client:
        assert client.call("fine") == "fine"
        client.submit("stop")
        assert processor.wait(30.0)
    assert processor.state == "stopped"
    with pytest.raises(CrashedError) as info:
        processor.stop()
    assert isinstance(info.value.cause, KeyboardInterrupt)
    assert processor.counters.ok == 1
    processor.stop()
