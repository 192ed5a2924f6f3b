"""LoadMeter (durations into fixed buckets, in flight) and the load heartbeats carry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zjobs import ProcessorMonitor, ZmqProcessor, ZmqReceiver
from zjobs.aio import AsyncZmqProcessor
from zjobs.core.load import BUCKET_BOUNDS_S, PROMETHEUS_BOUNDS_S, LoadMeter, LoadSnapshot
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC, Heartbeat


class FakeClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def meter_with(durations_us: list[int]) -> LoadMeter:
    clock = FakeClock()
    meter = LoadMeter(clock)
    for us in durations_us:
        started = meter.start()
        clock.ns += us * 1000
        meter.finish(started)
    return meter


def test_in_flight_counts_started_jobs_not_yet_finished() -> None:
    clock = FakeClock()
    meter = LoadMeter(clock)
    first, second = meter.start(), meter.start()
    assert meter.snapshot().in_flight == 2
    meter.finish(first)
    meter.finish(second)
    snap = meter.snapshot()
    assert (snap.in_flight, snap.jobs) == (0, 2)


def test_quantiles_fall_in_the_right_bucket() -> None:
    snap = meter_with([100] * 98 + [5000, 20_000]).snapshot()
    p50, p99 = snap.quantile(0.5), snap.quantile(0.99)
    assert p50 is not None and 75e-6 < p50 <= 100e-6
    assert p99 is not None and 4e-3 < p99 <= 5e-3
    assert snap.quantile(1.0) == pytest.approx(20e-3)
    assert snap.busy_s == pytest.approx(98 * 100e-6 + 25e-3)
    assert LoadSnapshot().quantile(0.5) is None


def test_a_duration_beyond_the_last_bucket_reads_as_at_least_it() -> None:
    assert meter_with([200_000_000]).snapshot().quantile(0.5) == BUCKET_BOUNDS_S[-1]


def test_since_is_the_window_between_two_snapshots() -> None:
    clock = FakeClock()
    meter = LoadMeter(clock)
    for _ in range(3):
        started = meter.start()
        clock.ns += 1_000_000
        meter.finish(started)
    before = meter.snapshot()
    started = meter.start()
    clock.ns += 50_000_000
    meter.finish(started)
    meter.start()  # still running
    window = meter.snapshot().since(before)
    assert (window.jobs, window.in_flight) == (1, 1)
    p50 = window.quantile(0.5)
    assert p50 is not None and 40e-3 < p50 <= 50e-3  # interpolated in the 40-50 ms bucket
    load = window.heartbeat_load(2.0)
    assert (load.jobs, load.window_ms, load.in_flight, load.busy_us) == (1, 2000, 1, 50_000)
    assert load.p50_us is not None and load.p99_us is not None
    assert 40_000 < load.p50_us <= load.p99_us <= 50_000


@given(st.lists(st.integers(min_value=0, max_value=100_000_000), max_size=50))
def test_the_prometheus_histogram_counts_exactly(durations_us: list[int]) -> None:
    cumulative = meter_with(durations_us).snapshot().cumulative()
    assert len(cumulative) == len(PROMETHEUS_BOUNDS_S) + 1
    for bound, count in zip(PROMETHEUS_BOUNDS_S, cumulative, strict=False):
        assert count == sum(1 for us in durations_us if us * 1000 <= round(bound * 1e9))
    assert cumulative[-1] == len(durations_us)


def sleepy(request: Any, resources: Any) -> Any:
    time.sleep(request)
    return request


async def asleep(request: Any, resources: Any) -> Any:
    await asyncio.sleep(request)
    return request


def heard(receiver: ZmqReceiver, instance: str, monitor: ProcessorMonitor,
          done: Callable[[Heartbeat], bool]) -> None:
    """Feed ``monitor`` every heartbeat of ``instance`` until ``done(beat)`` is true for one."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frames = receiver.receive_frames(time.monotonic() + 0.05)
        beat = None if frames is None else monitor.heartbeat(frames)
        if beat is not None and beat.instance == instance and done(beat):
            return
    pytest.fail(f"no heartbeat as expected: {monitor.peer(instance)}")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_heartbeats_carry_host_pid_and_the_load_of_the_interval(kind: str) -> None:
    proc: ZmqProcessor | AsyncZmqProcessor = (
        ZmqProcessor(sleepy, heartbeat_interval_s=0.05) if kind == "sync"
        else AsyncZmqProcessor(asleep, heartbeat_interval_s=0.05))
    monitor = ProcessorMonitor()
    windows: list[tuple[int, int | None]] = []

    def collect(beat: Heartbeat) -> bool:
        if beat.load is not None and beat.load.jobs:
            windows.append((beat.load.jobs, beat.load.p50_us))
        return sum(jobs for jobs, _ in windows) >= 4

    with proc, proc.receiver(topics=[HEARTBEAT_TOPIC]) as receiver, proc.client() as client:
        heard(receiver, proc.instance, monitor, lambda beat: True)  # subscribed from here on
        for _ in range(4):
            assert client.call(0.01) == 0.01
        heard(receiver, proc.instance, monitor, collect)
        peer = monitor.peer(proc.instance)
        assert peer is not None and peer.host and peer.pid > 0
        assert all(p50 is not None and 10_000 <= p50 < 100_000 for _, p50 in windows)
        assert proc.load.jobs == 4  # pongs of the readiness handshake are not jobs
        # Nothing runs now: a later window is empty.
        heard(receiver, proc.instance, monitor, lambda b: b.load is not None and b.load.jobs == 0)
        assert peer.load is not None and peer.load.in_flight == 0
