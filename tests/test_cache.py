"""zjobs.core.cache: MemoryCache (LRU, TTL, canonical keys) and the cached() wrapper."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from zjobs import MISS, CachedJob, GetCache, MemoryCache, PutCache, Run, cached
from zjobs.processor.sync import ZmqProcessor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_miss_is_not_none() -> None:
    cache = MemoryCache()
    assert cache.get("a") is MISS
    cache.put("a", None)
    assert cache.get("a") is None
    assert repr(MISS) == "zjobs.MISS"
    assert (cache.hits, cache.misses) == (1, 1)


def test_lru_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(maxsize=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now more recent than b
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.get("b") is MISS
    assert cache.get("a") == 1
    assert cache.get("c") == 3


def test_put_refreshes_an_existing_entry() -> None:
    cache = MemoryCache(maxsize=2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)
    cache.put("c", 3)
    assert cache.get("a") == 10
    assert cache.get("b") is MISS


def test_ttl_with_an_injected_clock() -> None:
    clock = Clock()
    cache = MemoryCache(ttl_s=5, clock=clock)
    cache.put("a", "x")
    clock.now += 5
    assert cache.get("a") == "x"  # valid up to and including its expiry time
    clock.now += 0.001
    assert cache.get("a") is MISS
    assert len(cache) == 0  # the expired entry is gone
    cache.put("a", "y")
    clock.now += 4
    assert cache.get("a") == "y"


def test_ttl_counts_from_the_last_put_not_the_last_get() -> None:
    clock = Clock()
    cache = MemoryCache(ttl_s=1, clock=clock)
    cache.put(1, 1)
    clock.now += 0.9
    assert cache.get(1) == 1
    clock.now += 0.2
    assert cache.get(1) is MISS


def test_ttl_works_with_a_clock_starting_at_zero_or_below() -> None:
    clock = Clock()
    clock.now = -3.0
    cache = MemoryCache(ttl_s=3, clock=clock)
    cache.put("a", 1)  # expires at 0.0
    clock.now = 0.5
    assert cache.get("a") is MISS


def test_without_ttl_entries_stay() -> None:
    clock = Clock()
    cache = MemoryCache(clock=clock)
    cache.put("a", 1)
    clock.now += 10**9
    assert cache.get("a") == 1


def test_canonical_keys_maps_in_any_order_share_an_entry() -> None:
    cache = MemoryCache()
    cache.put({"a": 1, "b": [1, {"x": 1, "y": 2}]}, "v")
    assert cache.get({"b": [1, {"y": 2, "x": 1}], "a": 1}) == "v"
    assert cache.get({"a": 1, "b": [1, {"x": 1, "y": 3}]}) is MISS
    assert len(cache) == 1


def test_keys_keep_msgpack_types_apart() -> None:
    cache = MemoryCache()
    cache.put(1, "int")
    cache.put("1", "str")
    cache.put(b"1", "bin")
    cache.put(1.0, "float")
    cache.put(True, "bool")
    assert [cache.get(k) for k in (1, "1", b"1", 1.0, True)] == [
        "int", "str", "bin", "float", "bool"]
    assert cache.get((1, 2)) is MISS
    cache.put([1, 2], "list")
    assert cache.get((1, 2)) == "list"  # a tuple and a list are the same msgpack array


def test_unencodable_request_is_a_miss() -> None:
    cache = MemoryCache()
    assert cache.get({1, 2}) is MISS


def test_clear_and_repr() -> None:
    cache = MemoryCache(maxsize=3, ttl_s=2)
    cache.put("a", 1)
    assert "1/3" in repr(cache) and "ttl_s=2" in repr(cache)
    cache.clear()
    assert len(cache) == 0
    assert cache.get("a") is MISS


@pytest.mark.parametrize(("maxsize", "ttl_s"), [(0, None), (-1, None), (1, 0), (1, -1.0)])
def test_invalid_settings(maxsize: int, ttl_s: float | None) -> None:
    with pytest.raises(ValueError):
        MemoryCache(maxsize, ttl_s)


def test_threads_never_exceed_maxsize() -> None:
    cache = MemoryCache(maxsize=50)
    errors: list[BaseException] = []

    def work(base: int) -> None:
        try:
            for i in range(2000):
                cache.put({"n": base * 10_000 + i}, i)
                cache.get({"n": base * 10_000 + i - 1})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 50


# -- cached() ----------------------------------------------------------------------------

def square(request: Any, resources: Any) -> Any:
    return request * request


def test_cached_function_is_a_job_with_a_cache() -> None:
    job = cached(square, maxsize=10, ttl_s=60)
    assert isinstance(job, CachedJob)
    assert isinstance(job, Run) and isinstance(job, GetCache) and isinstance(job, PutCache)
    assert (job.cache.maxsize, job.cache.ttl_s) == (10, 60)
    assert job.get_cache(3, None) is MISS
    assert job.run(3, None) == 9
    job.put_cache(3, 9, None)
    assert job.get_cache(3, None) == 9
    assert job.__name__ == "square"
    assert "square" in repr(job)


def test_cached_as_decorator_with_and_without_arguments() -> None:
    @cached
    def plain(request: Any, resources: Any) -> Any:
        return request

    @cached(maxsize=3)
    def sized(request: Any, resources: Any) -> Any:
        return request

    assert isinstance(plain, CachedJob) and plain.cache.maxsize == 1024
    assert isinstance(sized, CachedJob) and sized.cache.maxsize == 3
    assert sized.run("x", None) == "x"


def test_cached_class_is_instantiated() -> None:
    @cached(ttl_s=5)
    class Upper:
        def run(self, request: Any, resources: Any) -> Any:
            return request.upper()

    assert isinstance(Upper, CachedJob)
    assert Upper.run("a", None) == "A"
    assert Upper.cache.ttl_s == 5


def test_processor_names_a_cached_job_after_the_wrapped_job() -> None:
    with ZmqProcessor(cached(square)) as proc:
        assert proc.name == "square"


def test_cache_hits_and_misses_through_a_processor() -> None:
    calls: list[Any] = []

    def job(request: Any, resources: Any) -> Any:
        calls.append(request)
        if request == "fail":
            raise ValueError("no")
        return None if request == "none" else {"got": request}

    wrapped = cached(job)
    with ZmqProcessor(wrapped) as proc, proc.client() as client:
        first = client.call_response({"a": 1, "b": 2})
        second = client.call_response({"b": 2, "a": 1})
        assert (first.cached, second.cached) == (False, True)
        assert first.value == second.value == {"got": {"a": 1, "b": 2}}
        none_first = client.call_response("none")
        none_again = client.call_response("none")
        assert (none_first.value, none_first.cached) == (None, False)
        assert (none_again.value, none_again.cached, none_again.ok) == (None, True, True)
        for _ in range(2):
            failed = client.call_response("fail")
            assert failed.error is not None and failed.error.type == "JobFailed"
            assert failed.cached is False
        assert calls == [{"a": 1, "b": 2}, "none", "fail", "fail"]
        counters = proc.counters
    assert counters.cache_hits == 2
    assert counters.ok == 4
    assert counters.failed == 2
    assert len(wrapped.cache) == 2


def test_a_cached_job_is_called_directly_like_any_job() -> None:
    # README: a job is called directly in a unit test; with its cache, as a processor would.
    calls: list[int] = []

    @cached(maxsize=10)
    def lookup(request: int, resources: object) -> int:
        calls.append(request)
        return request * 2

    assert lookup(3, None) == 6
    assert lookup(3, None) == 6
    assert lookup(4, None) == 8
    assert calls == [3, 4]
    assert lookup.cache.hits == 1
