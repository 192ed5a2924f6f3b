"""AsyncClient: gathered calls, cancellation, timeouts, closing, readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from zjobs import CallTimeout, ClosedError, NotReady, RemoteError, ZmqProcessor
from zjobs.aio import AsyncClient, AsyncZmqProcessor


async def echo(request: Any, resources: Any) -> Any:
    await asyncio.sleep(0)
    return request


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


class Gate:
    """An async job that holds every request until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0

    async def run(self, request: Any, resources: Any) -> Any:
        self.started += 1
        await self.gate.wait()
        return request


@pytest.fixture
async def processor() -> AsyncIterator[AsyncZmqProcessor]:
    async with AsyncZmqProcessor(echo, concurrency=100) as proc:
        yield proc


@pytest.mark.timeout(60)
async def test_ten_thousand_gathered_calls_none_lost(processor: AsyncZmqProcessor) -> None:
    async with processor.async_client() as client:
        requests = [{"n": i, "pad": "x" * (i % 7)} for i in range(10_000)]
        results = await asyncio.gather(*(client.call(r) for r in requests))
        assert results == requests  # each answer matched to its own call
        assert client.pending == 0 and client.unmatched == 0
    counters = processor.counters
    assert counters.ok == 10_000 and counters.failed == 0


async def test_submit_returns_asyncio_futures(processor: AsyncZmqProcessor) -> None:
    async with processor.async_client() as client:
        futures = [await client.submit(i, meta={"i": i}) for i in range(50)]
        assert all(isinstance(f, asyncio.Future) for f in futures)
        assert client.pending <= 50
        assert await asyncio.gather(*futures) == list(range(50))
        assert client.pending == 0


async def test_cancelled_call_is_forgotten_and_its_late_response_ignored() -> None:
    job = Gate()
    async with AsyncZmqProcessor(job) as processor, processor.async_client() as client:
        call = asyncio.create_task(client.call("late"))
        await eventually(lambda: job.started == 1)
        assert client.pending == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert client.pending == 0  # no entry left behind
        job.gate.set()  # the processor now answers the cancelled call
        await eventually(lambda: client.unmatched == 1)
        assert client.pending == 0
        assert await client.call("next") == "next"  # the late response went to no one
        assert processor.counters.ok == 2


async def test_cancelled_future_from_submit_is_forgotten() -> None:
    job = Gate()
    async with AsyncZmqProcessor(job) as processor, processor.async_client() as client:
        future = await client.submit(1)
        future.cancel()
        await asyncio.sleep(0)
        assert client.pending == 0
        job.gate.set()
        await eventually(lambda: client.unmatched == 1)


async def test_call_timeout() -> None:
    job = Gate()
    async with AsyncZmqProcessor(job) as processor, processor.async_client() as client:
        with pytest.raises(CallTimeout) as info:
            await client.call("slow", timeout_s=0.2)
        assert info.value.timeout_s == 0.2
        assert client.pending == 0
        job.gate.set()
        await eventually(lambda: client.unmatched == 1)


async def test_close_fails_pending_calls() -> None:
    job = Gate()
    async with AsyncZmqProcessor(job) as processor:
        client = processor.async_client()
        futures = [await client.submit(i) for i in range(3)]
        await client.aclose()
        for future in futures:
            with pytest.raises(ClosedError):
                await future
        assert client.pending == 0 and client.closed
        await client.aclose()  # idempotent
        with pytest.raises(ClosedError):
            await client.call(1)
        job.gate.set()


async def test_error_responses(processor: AsyncZmqProcessor) -> None:
    async with processor.async_client() as client:
        with pytest.raises(RemoteError) as info:
            await client.call(1, deadline_ms=1)
        assert info.value.type == "DeadlineExceeded"
        response = await client.call_response(2, deadline_ms=1)
        assert response.error is not None and response.error.type == "DeadlineExceeded"


async def test_readiness_waits_for_every_processor() -> None:
    async with AsyncZmqProcessor(echo, name="a") as a, AsyncZmqProcessor(echo, name="b") as b:
        requests = [a.connect_endpoints.requests, b.connect_endpoints.requests]
        responses = [a.connect_endpoints.responses, b.connect_endpoints.responses]
        async with AsyncClient.connect(requests, responses) as client:
            assert client.expect_processors == 2
            await client.wait_ready()
            answers = [await client.call_response(i) for i in range(20)]
        assert {r.processor for r in answers} == {"a", "b"}  # load balanced over both


async def test_not_ready_without_processor(ipc_dir: Path) -> None:
    nobody = f"ipc://{ipc_dir}/nobody"
    async with AsyncClient.connect(nobody, nobody, ready_timeout_s=0.3) as client:
        with pytest.raises(NotReady) as info:
            await client.call(1)
        assert info.value.expected == 1 and info.value.seen == 0


def test_async_client_talks_to_a_sync_processor() -> None:
    def square(request: Any, resources: Any) -> Any:
        return request * request

    async def main(processor: ZmqProcessor) -> list[Any]:
        ep = processor.connect_endpoints
        async with AsyncClient.connect(ep.requests, ep.responses) as client:
            return list(await asyncio.gather(*(client.call(i) for i in range(100))))

    with ZmqProcessor(square) as processor:
        assert asyncio.run(main(processor)) == [i * i for i in range(100)]


async def test_ping_and_repr(processor: AsyncZmqProcessor) -> None:
    async with processor.async_client() as client:
        assert "AsyncClient new" in repr(client)
        assert await client.ping(timeout_s=10) >= 0  # after the readiness handshake
        assert "AsyncClient ready" in repr(client)
    assert "AsyncClient closed" in repr(client)


async def test_a_reader_that_dies_fails_the_calls_instead_of_leaving_them(
        processor: AsyncZmqProcessor) -> None:
    # Whatever kills the reader task (here: a bug while dispatching an answer) reaches the
    # waiting call and the next ones at once, not after their 60 s timeout.
    async with processor.async_client(timeout_s=60) as client:
        assert await client.call(1) == 1
        bug = RuntimeError("dispatch bug")

        def receive(response: object) -> None:
            raise bug

        client._engine.receive = receive  # type: ignore[method-assign,assignment]
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(client.call(2), 30)
        with pytest.raises(ClosedError):
            await client.call(3)
