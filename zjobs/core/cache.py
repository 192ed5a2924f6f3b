"""A ready in-memory response cache, and the one-line way for a job to use it.

Keys are the canonical msgpack bytes of the request, so ``{"a": 1, "b": 2}`` and
``{"b": 2, "a": 1}`` share an entry. Misses are :data:`zjobs.MISS`, never ``None``,
because ``None`` is a response like any other.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, overload

from zjobs.core.job import MISS, Job, describe_job, run_job
from zjobs.errors import EncodeError
from zjobs.wire.codec import canonical

__all__ = ["CachedJob", "MemoryCache", "cached"]


class MemoryCache:
    """A bounded LRU map from requests to responses, with an optional time to live.

    Thread-safe: one cache may serve a job shared by several processors in threads.

    Args:
        maxsize: how many responses to keep; the least recently used goes first.
        ttl_s: how long a response stays valid, in seconds; None keeps it until evicted.
        clock: the monotonic clock, replaceable in tests.
    """

    def __init__(
        self,
        maxsize: int = 1024,
        ttl_s: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl_s}")
        self.maxsize = maxsize
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        ttl = f", ttl_s={self.ttl_s}" if self.ttl_s is not None else ""
        return (f"MemoryCache({len(self)}/{self.maxsize}{ttl}, "
                f"hits={self.hits}, misses={self.misses})")

    def get(self, request: Any) -> Any:
        """The cached response for ``request``, or :data:`MISS`."""
        try:
            key = canonical(request)
        except EncodeError:
            return MISS
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or (self.ttl_s is not None and entry[0] < self._clock()):
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return MISS
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, request: Any, response: Any) -> None:
        """Remember ``response`` for ``request``, evicting the least recently used if full."""
        key = canonical(request)
        expires = self._clock() + self.ttl_s if self.ttl_s is not None else math.inf
        with self._lock:
            self._entries[key] = (expires, response)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


class CachedJob:
    """A job wrapped with a :class:`MemoryCache`: implements ``run``, ``get_cache``, ``put_cache``.

    The processor asks ``get_cache`` first, answers a hit without running, and calls
    ``put_cache`` after each successful run. Called directly, ``job(request, resources)``
    does the same.
    """

    def __init__(self, job: Job, cache: MemoryCache) -> None:
        self.job = job
        self.cache = cache
        self._run = run_job(job)
        self.__name__ = describe_job(job)

    def __repr__(self) -> str:
        return f"CachedJob({self.job!r}, {self.cache!r})"

    def run(self, request: Any, resources: Any) -> Any:
        """Run the wrapped job (the cache is consulted by the processor, not here)."""
        return self._run(request, resources)

    def __call__(self, request: Any, resources: Any) -> Any:
        """Call the job directly (in a unit test, say) as a processor would: answer from
        the cache, else run the wrapped job and remember its response."""
        hit = self.cache.get(request)
        if hit is not MISS:
            return hit
        response = self._run(request, resources)
        try:
            self.cache.put(request, response)
        except EncodeError:
            pass  # a request the cache cannot key: the response is still returned
        return response

    def get_cache(self, request: Any, resources: Any) -> Any:
        """The cached response, or :data:`MISS`."""
        return self.cache.get(request)

    def put_cache(self, request: Any, response: Any, resources: Any) -> None:
        """Store a fresh response."""
        self.cache.put(request, response)


@overload
def cached(job: Job, *, maxsize: int = ..., ttl_s: float | None = ...) -> CachedJob: ...


@overload
def cached(
    job: None = None, *, maxsize: int = ..., ttl_s: float | None = ...
) -> Callable[[Job], CachedJob]: ...


def cached(
    job: Job | None = None, *, maxsize: int = 1024, ttl_s: float | None = None
) -> CachedJob | Callable[[Job], CachedJob]:
    """Give a job an in-memory LRU cache, in one line.

    Use it as ``square = cached(square, maxsize=100)`` or as a decorator, with or without
    arguments (``@cached`` / ``@cached(ttl_s=60)``) on a function or on a class (the class
    is then instantiated with no arguments)::

        @cached(maxsize=10_000, ttl_s=300)
        def lookup(request, resources):
            return resources.query(request)
    """

    def wrap(target: Job) -> CachedJob:
        if isinstance(target, type):
            target = target()
        return CachedJob(target, MemoryCache(maxsize, ttl_s))

    return wrap if job is None else wrap(job)
