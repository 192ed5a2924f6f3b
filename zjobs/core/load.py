"""A processor's load: requests in flight and how long its jobs take.

A :class:`LoadMeter` is ticked by the job-call flow around every job run (two clock reads
and a bisect into fixed buckets) and read by whoever reports the load: the publisher puts
the last interval in each heartbeat (:meth:`LoadSnapshot.since`), a metrics endpoint
exposes the cumulative histogram. Transport-free, no locks: one thread writes (the
processor's serving thread or its event loop), readers take snapshots.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from zjobs.wire.heartbeat import Load

__all__ = ["BUCKET_BOUNDS_S", "PROMETHEUS_BOUNDS_S", "LoadMeter", "LoadSnapshot"]

_MANTISSAS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5)
_BOUNDS_NS: Final[tuple[int, ...]] = tuple(round(m * 10.0 ** (exp + 9))
                                           for exp in range(-6, 2) for m in _MANTISSAS)

BUCKET_BOUNDS_S: Final[tuple[float, ...]] = tuple(ns / 1e9 for ns in _BOUNDS_NS)
"""Upper bounds (inclusive) of the duration buckets, 1 µs to 75 s, about 26% apart; one
more bucket holds what is longer. Percentiles read from them are within a bucket's width."""

_PROMETHEUS_NS: Final[tuple[int, ...]] = (*(round(m * 10.0 ** (exp + 9))
                                             for exp in range(-5, 1) for m in (1.0, 2.5, 5.0)),
                                           10**10)
# Where each Prometheus bound ends in the fine buckets (one past its bucket).
_PROMETHEUS_STOPS: Final = tuple(_BOUNDS_NS.index(ns) + 1 for ns in _PROMETHEUS_NS)

PROMETHEUS_BOUNDS_S: Final[tuple[float, ...]] = tuple(ns / 1e9 for ns in _PROMETHEUS_NS)
"""The bounds exposed as a Prometheus histogram (10 µs to 10 s, 1-2.5-5 steps): a subset of
:data:`BUCKET_BOUNDS_S`, so each cumulative count is exact."""


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """A processor's load at one moment: cumulative job counts and durations since it
    started, and the requests in flight then."""

    in_flight: int = 0
    jobs: int = 0
    busy_s: float = 0.0
    """Job durations summed."""
    buckets: tuple[int, ...] = (0,) * (len(_BOUNDS_NS) + 1)
    """Jobs per duration bucket (:data:`BUCKET_BOUNDS_S`, then the overflow)."""

    def since(self, earlier: LoadSnapshot) -> LoadSnapshot:
        """The jobs finished between ``earlier`` and this snapshot (in flight: now)."""
        return LoadSnapshot(self.in_flight, self.jobs - earlier.jobs,
                            self.busy_s - earlier.busy_s,
                            tuple(a - b for a, b in zip(self.buckets, earlier.buckets,
                                                        strict=True)))

    def quantile(self, q: float) -> float | None:
        """The duration below which a share ``q`` of the jobs fell (seconds, interpolated
        within its bucket); None without jobs."""
        total = sum(self.buckets)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for index, count in enumerate(self.buckets):
            if count and seen + count >= rank:
                if index == len(_BOUNDS_NS):
                    return BUCKET_BOUNDS_S[-1]  # beyond the last bound: say at least that
                low = BUCKET_BOUNDS_S[index - 1] if index else 0.0
                return low + (BUCKET_BOUNDS_S[index] - low) * (rank - seen) / count
            seen += count
        return BUCKET_BOUNDS_S[-1]

    def cumulative(self) -> list[int]:
        """Jobs at or under each of :data:`PROMETHEUS_BOUNDS_S`, then all of them: a
        Prometheus histogram's buckets."""
        out: list[int] = []
        seen = start = 0
        for stop in _PROMETHEUS_STOPS:
            seen += sum(self.buckets[start:stop])
            start = stop
            out.append(seen)
        out.append(seen + sum(self.buckets[start:]))
        return out

    def heartbeat_load(self, window_s: float) -> Load:
        """This snapshot, taken as the window of one heartbeat interval, as sent on the wire."""
        p50, p99 = self.quantile(0.5), self.quantile(0.99)
        return Load(self.in_flight, round(window_s * 1000), self.jobs,
                    round(self.busy_s * 1e6),
                    None if p50 is None else round(p50 * 1e6),
                    None if p99 is None else round(p99 * 1e6))


class LoadMeter:
    """Counts job runs and their durations, for heartbeats and metrics.

    Call :meth:`start` when a job run begins and :meth:`finish` with what it returned when
    it ends, from one thread (the processor's); :meth:`snapshot` from any thread.

    Args:
        clock_ns: a monotonic clock in nanoseconds.
    """

    __slots__ = ("_buckets", "_busy_ns", "_clock_ns", "_finished", "_started")

    def __init__(self, clock_ns: Callable[[], int] = time.perf_counter_ns) -> None:
        self._clock_ns = clock_ns
        self._started = 0
        self._finished = 0
        self._busy_ns = 0
        self._buckets = [0] * (len(_BOUNDS_NS) + 1)

    def __repr__(self) -> str:
        return f"<LoadMeter jobs={self._finished} in_flight={self._started - self._finished}>"

    def start(self) -> int:
        """A job run begins; returns its start time, for :meth:`finish`."""
        self._started += 1
        return self._clock_ns()

    def finish(self, started_ns: int) -> None:
        """The job run that began at ``started_ns`` has ended (answered or failed)."""
        took = self._clock_ns() - started_ns
        self._buckets[bisect.bisect_left(_BOUNDS_NS, took)] += 1
        self._busy_ns += took
        self._finished += 1

    def snapshot(self) -> LoadSnapshot:
        """The load now (the fields are read one after another, without stopping the writer:
        a job finishing meanwhile may show in one field and not yet in another)."""
        buckets = tuple(self._buckets)
        return LoadSnapshot(max(0, self._started - self._finished), sum(buckets),
                            self._busy_ns / 1e9, buckets)
