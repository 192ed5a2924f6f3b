"""AsyncResources and async job detection (no sockets)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from zjobs import MISS, cached
from zjobs.aio import AsyncResources, is_async_job
from zjobs.processor.async_job import JobCalls


class Value:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class AsyncCloseValue:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.closed += 1


async def test_no_factory() -> None:
    resources = AsyncResources(None)
    assert await resources.open() is None
    await resources.close()


async def test_plain_factory_value_closed_once() -> None:
    resources = AsyncResources(Value)
    value = await resources.open()
    await resources.close()
    await resources.close()
    assert value.closed == 1 and resources.value is None


async def test_coroutine_factory_value_with_async_close() -> None:
    async def factory() -> AsyncCloseValue:
        await asyncio.sleep(0)
        return AsyncCloseValue()

    resources = AsyncResources(factory)
    value = await resources.open()
    assert isinstance(value, AsyncCloseValue)
    await resources.close()
    assert value.closed == 1


async def test_sync_and_async_generators_clean_up() -> None:
    events: list[str] = []

    def sync_factory() -> Iterator[str]:
        events.append("sync open")
        yield "s"
        events.append("sync close")

    async def async_factory() -> AsyncIterator[str]:
        events.append("async open")
        yield "a"
        events.append("async close")

    for factory, value in ((sync_factory, "s"), (async_factory, "a")):
        resources = AsyncResources(factory)
        assert await resources.open() == value
        await resources.close()
    assert events == ["sync open", "sync close", "async open", "async close"]


async def test_async_generator_yielding_twice_is_closed_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    closed: list[bool] = []

    async def factory() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    resources = AsyncResources(factory)
    await resources.open()
    with caplog.at_level(logging.WARNING, logger="zjobs.core.async_resources"):
        await resources.close()
    assert closed == [True] and "yielded more than once" in caplog.text


async def async_fn(request: Any, resources: Any) -> Any:
    return request


def sync_fn(request: Any, resources: Any) -> Any:
    return request


class AsyncRunJob:
    async def run(self, request: Any, resources: Any) -> Any:
        return request


class AsyncCallable:
    async def __call__(self, request: Any, resources: Any) -> Any:
        return request


def test_is_async_job() -> None:
    assert is_async_job(async_fn)
    assert is_async_job(AsyncRunJob())
    assert is_async_job(AsyncCallable())
    assert is_async_job(cached(async_fn))
    assert not is_async_job(sync_fn)
    assert not is_async_job(cached(sync_fn))
    with pytest.raises(TypeError):
        is_async_job(42)  # type: ignore[arg-type]


async def test_job_calls_await_async_and_pool_sync_methods() -> None:
    calls = JobCalls(AsyncRunJob())
    assert await calls.run(3, None) == 3
    assert calls.get_cache is None and calls.put_cache is None

    wrapped = JobCalls(cached(async_fn))  # sync run returning a coroutine: awaited
    assert await wrapped.run(4, None) == 4
    assert wrapped.get_cache is not None and await wrapped.get_cache(4, None) is MISS

    def where(request: Any, resources: Any) -> str:
        return threading.current_thread().name

    with ThreadPoolExecutor(1, thread_name_prefix="zjobs-test-pool") as pool:
        assert (await JobCalls(where, pool).run(1, None)).startswith("zjobs-test-pool")
    assert await JobCalls(where).run(1, None) == threading.current_thread().name
