"""What a job is: the ``Run`` and ``GetCache`` interfaces, and the cache-miss sentinel.

A job does not know where it runs. The same object is called directly in a unit test,
by a processor in a thread, or in a daemon; the processor passes it the resources it owns.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

__all__ = ["MISS", "GetCache", "Job", "JobFunction", "PutCache", "Run", "describe_job", "run_job"]


class _Miss(enum.Enum):
    MISS = "MISS"

    def __repr__(self) -> str:
        return "zjobs.MISS"


MISS: Final = _Miss.MISS
"""Returned by ``get_cache`` for a cache miss; distinct from a cached ``None`` response."""

Miss: TypeAlias = _Miss


@runtime_checkable
class Run(Protocol):
    """A job: turns a request into a response, using resources owned by whoever runs it."""

    def run(self, request: Any, resources: Any) -> Any:
        """Compute the response; raising makes the processor answer with JobFailed."""
        ...


@runtime_checkable
class GetCache(Protocol):
    """A job that can answer from a cache instead of running."""

    def get_cache(self, request: Any, resources: Any) -> Any:
        """Return the cached response (which may be ``None``) or :data:`MISS`."""
        ...


@runtime_checkable
class PutCache(Protocol):
    """A job whose cache the processor fills after each successful run."""

    def put_cache(self, request: Any, response: Any, resources: Any) -> None:
        """Remember ``response`` for ``request``."""
        ...


JobFunction: TypeAlias = Callable[[Any, Any], Any]
"""A plain function ``f(request, resources) -> response`` is a job too."""

Job: TypeAlias = Run | JobFunction


def run_job(job: Job) -> Callable[[Any, Any], Any]:
    """The callable that runs ``job``: its ``run`` method, or the function itself.

    Raises:
        TypeError: when ``job`` has no ``run`` method and is not callable.
    """
    method = getattr(job, "run", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(job):
        return job
    raise TypeError(f"{job!r} is not a job: it has no run() method and is not callable")


def describe_job(job: Job) -> str:
    """A short human name for a job, used as the default processor name.

    A function's ``__name__``; for an object, its own ``__name__`` attribute when it has
    one (a wrapper such as :class:`~zjobs.CachedJob` names the job it wraps), else its
    class name.
    """
    own = getattr(job, "__dict__", {}).get("__name__")
    if isinstance(own, str) and own:
        return own
    if callable(getattr(job, "run", None)):
        return type(job).__name__
    return str(getattr(job, "__name__", type(job).__name__))
