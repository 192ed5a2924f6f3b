"""A processor daemon killed with SIGKILL while 5,000 calls are in flight through one Client
with retries: every call completes exactly once, with the right value. And a client with
``liveness`` fails its waiting calls early when its only processor is killed."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import Future
from typing import Any

import pytest
from jobs_reliability import serve

from zjobs import Client, ProcessorsGone

CALLS = 5_000


@pytest.mark.timeout(180)
def test_kill_9_of_one_of_two_processors_loses_no_call() -> None:
    # A 1 ms job: requests queue up in both processors, so the kill loses some in flight.
    a, b = serve("quick", name="a"), serve("quick", name="b")
    try:
        with Client.connect([a.requests, b.requests], [a.responses, b.responses],
                            timeout_s=5.0, retries=8) as client:
            client.wait_ready(timeout_s=60)
            completions: Counter[int] = Counter()
            lock = threading.Lock()
            done_count = [0]

            def count(i: int) -> Any:
                def done(_: Future[Any]) -> None:
                    with lock:
                        completions[i] += 1
                        done_count[0] += 1
                return done

            futures: list[Future[Any]] = []
            for i in range(CALLS):
                future = client.submit(i)
                future.add_done_callback(count(i))
                futures.append(future)
            # Kill A while responses flow and thousands of calls are still in flight.
            deadline = time.monotonic() + 60
            while done_count[0] < 1000 and time.monotonic() < deadline:
                time.sleep(0.001)
            in_flight = CALLS - done_count[0]
            a.proc.send_signal(signal.SIGKILL)  # by PID
            results = [f.result(timeout=120) for f in futures]
            # B answers in order: any late duplicate it published is read before this.
            assert client.call(-1) == -2
            assert a.proc.wait(10) == -signal.SIGKILL
            assert results == [2 * i for i in range(CALLS)]
            assert sorted(completions.values()) == [1] * CALLS
            assert client.pending == 0
            print(f"\nkill -9 with {in_flight} calls in flight: {client.resent} requests resent, "
                  f"{client.replays} answered from a replay window, "
                  f"{client.unmatched} late duplicates ignored")
    finally:
        a.stop()
        assert b.stop() == 0, b.diagnostics()


@pytest.mark.timeout(120)
def test_waiting_calls_fail_early_when_the_only_processor_is_killed() -> None:
    # No "stopped" heartbeat after kill -9: silence for 3 intervals (1 s each) is enough.
    daemon = serve("sleepy", name="doomed")
    try:
        with Client.connect(daemon.requests, daemon.responses, timeout_s=60,
                            liveness=3) as client:
            client.wait_ready(timeout_s=60)
            assert client.call(1) == 2
            deadline = time.monotonic() + 30
            while client.monitor is not None and client.monitor.heartbeats == 0:
                assert time.monotonic() < deadline, "no heartbeat from the daemon"
                time.sleep(0.05)
            futures = [client.submit(i) for i in range(500)]  # 2.5 s of work
            assert futures[0].result(timeout=30) == 0  # the daemon is working through them
            daemon.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            failed = 0
            for future in futures:
                try:
                    future.result(timeout=60)
                except ProcessorsGone:
                    failed += 1
            waited = time.monotonic() - killed
        print(f"\nkill -9 of the only processor: {failed} waiting calls failed with "
              f"ProcessorsGone after {waited:.1f}s (call timeout 60 s)")
        assert failed > 0
        assert waited < 30
    finally:
        daemon.stop()
