"""Async jobs: how to tell one apart, and how the event loop calls a job's methods.

An async job is a job whose ``run`` is an ``async def`` (or an ``async def`` function
``f(request, resources)``); its ``get_cache`` and ``put_cache`` may be ``async def`` too.
Sync methods run either on the loop (for quick ones, such as :func:`zjobs.cached`'s
in-memory cache) or, when the processor has a thread pool, in that pool.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeAlias, runtime_checkable

from zjobs.core.cache import CachedJob
from zjobs.core.job import GetCache, Job, PutCache, run_job

__all__ = ["AsyncGetCache", "AsyncPutCache", "AsyncRun", "JobCalls", "is_async_job"]


@runtime_checkable
class AsyncRun(Protocol):
    """An async job: awaits I/O while turning a request into a response."""

    async def run(self, request: Any, resources: Any) -> Any:
        """Compute the response; raising makes the processor answer with JobFailed."""
        ...


@runtime_checkable
class AsyncGetCache(Protocol):
    """An async job that can answer from a cache it awaits."""

    async def get_cache(self, request: Any, resources: Any) -> Any:
        """Return the cached response (which may be ``None``) or :data:`zjobs.MISS`."""
        ...


@runtime_checkable
class AsyncPutCache(Protocol):
    """An async job whose cache the processor fills after each successful run."""

    async def put_cache(self, request: Any, response: Any, resources: Any) -> None:
        """Remember ``response`` for ``request``."""
        ...


def _is_coroutine_function(method: object) -> bool:
    # A callable object with ``async def __call__`` counts: inspect only looks at functions.
    return (inspect.iscoroutinefunction(method)
            or inspect.iscoroutinefunction(type(method).__call__))


def is_async_job(job: Job) -> bool:
    """True when ``job`` must be awaited: its ``run`` (or the function itself) is ``async def``.

    A :class:`~zjobs.CachedJob` is async when the job it wraps is. The ``zjobs serve``
    command uses this to choose :class:`~zjobs.aio.AsyncZmqProcessor`.

    Raises:
        TypeError: ``job`` is not a job.
    """
    if _is_coroutine_function(run_job(job)):
        return True
    return isinstance(job, CachedJob) and is_async_job(job.job)


AsyncCall: TypeAlias = Callable[..., Awaitable[Any]]


def _awaitable(method: Callable[..., Any], executor: Executor | None) -> AsyncCall:
    if _is_coroutine_function(method):
        return method

    # A sync method may still return an awaitable (a CachedJob wrapping an async job does).
    if executor is None:
        async def on_loop(*args: Any) -> Any:
            result = method(*args)
            return await result if inspect.isawaitable(result) else result

        return on_loop

    async def in_pool(*args: Any) -> Any:
        result = await asyncio.get_running_loop().run_in_executor(executor, method, *args)
        return await result if inspect.isawaitable(result) else result

    return in_pool


class JobCalls:
    """A job's ``run``, ``get_cache`` and ``put_cache`` as coroutine functions.

    Async methods are awaited on the loop; sync ones run in ``executor`` when given,
    else on the loop.

    Attributes:
        run: ``await run(request, resources)``.
        get_cache: ``await get_cache(request, resources)``, or None when the job has none.
        put_cache: ``await put_cache(request, response, resources)``, or None.
    """

    def __init__(self, job: Job, executor: Executor | None = None) -> None:
        self.run = _awaitable(run_job(job), executor)
        self.get_cache = (_awaitable(job.get_cache, executor)
                          if isinstance(job, GetCache) else None)
        self.put_cache = (_awaitable(job.put_cache, executor)
                          if isinstance(job, PutCache) else None)
