"""How the event loop calls a job: each of its methods as a coroutine function, and the
driver that runs the job-call flow (:meth:`zjobs.core.handler.RequestHandler.flow`) by
awaiting each call.

Async methods are awaited on the loop. Sync methods run either on the loop (for quick
ones, such as :func:`zjobs.cached`'s in-memory cache) or, when the processor has a thread
pool, in that pool. The job protocols themselves (:class:`AsyncRun` ...) and
:func:`is_async_job` live in :mod:`zjobs.core.async_job`, re-exported here.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import Executor
from typing import Any, TypeAlias, TypeVar

from zjobs.core.async_job import (
    AsyncGetCache,
    AsyncPutCache,
    AsyncRun,
    is_async_job,
    is_coroutine_function,
)
from zjobs.core.handler import JobCall
from zjobs.core.job import GetCache, Job, PutCache, run_job

__all__ = ["AsyncGetCache", "AsyncPutCache", "AsyncRun", "JobCalls", "interrupts",
           "is_async_job"]

AsyncCall: TypeAlias = Callable[..., Awaitable[Any]]


def interrupts(exc: BaseException) -> bool:
    """True for an exception that must stop the processor instead of failing the job."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    # The job may raise CancelledError itself (e.g. from a future it awaited): that is a job
    # failure. Only a cancellation of the task running it is ours.
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
    return False


def _awaitable(method: Callable[..., Any], executor: Executor | None) -> AsyncCall:
    if is_coroutine_function(method):
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


_Result = TypeVar("_Result")


class JobCalls:
    """A job's ``run``, ``get_cache`` and ``put_cache`` as coroutine functions, and the
    driver of the job-call flow over them.

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
        self._calls: dict[str, AsyncCall] = {"run": self.run}
        if self.get_cache is not None:
            self._calls["get_cache"] = self.get_cache
        if self.put_cache is not None:
            self._calls["put_cache"] = self.put_cache

    async def drive(self, flow: Generator[JobCall, Any, _Result]) -> _Result:
        """Run ``flow`` to its end, awaiting each call of the job; return what it returns
        (a request's response frames; nothing for a batch item's flow).

        Raises:
            KeyboardInterrupt, asyncio.CancelledError: the job was interrupted, or the task
                running it cancelled; that stops the processor instead of failing the job.
        """
        calls = self._calls
        try:
            call = next(flow)
            while True:
                try:
                    result = await calls[call.step](*call.args)
                except BaseException as exc:
                    if interrupts(exc):
                        flow.close()
                        raise
                    call = flow.throw(exc)
                else:
                    call = flow.send(result)
        except StopIteration as done:
            returned: _Result = done.value
            return returned
