"""Async jobs: the protocols an ``async def`` job implements, and how to tell one apart.

An async job is a job whose ``run`` is an ``async def`` (or an ``async def`` function
``f(request, resources)``); its ``get_cache`` and ``put_cache`` may be ``async def`` too.
Telling one apart needs no event loop, so it lives here with the other job protocols:
``zjobs serve`` and the daemon choose the processor kind with it without importing asyncio.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

from zjobs.core.cache import CachedJob
from zjobs.core.job import Job, run_job

__all__ = ["AsyncGetCache", "AsyncPutCache", "AsyncRun", "is_async_job", "is_coroutine_function"]


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


def is_coroutine_function(method: object) -> bool:
    """True when calling ``method`` returns a coroutine: an ``async def`` function, or a
    callable object with ``async def __call__`` (which :mod:`inspect` alone misses)."""
    return (inspect.iscoroutinefunction(method)
            or inspect.iscoroutinefunction(type(method).__call__))


def is_async_job(job: Job) -> bool:
    """True when ``job`` must be awaited: its ``run`` (or the function itself) is ``async def``.

    A :class:`~zjobs.CachedJob` is async when the job it wraps is. The ``zjobs serve``
    command uses this to choose :class:`~zjobs.aio.AsyncZmqProcessor`.

    Raises:
        TypeError: ``job`` is not a job.
    """
    if is_coroutine_function(run_job(job)):
        return True
    return isinstance(job, CachedJob) and is_async_job(job.job)
