"""A processor daemon stalled with SIGSTOP: calls time out and are retried on the other one;
after SIGCONT its late responses reach the client and are ignored, never delivered twice."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import Future
from typing import Any

import pytest
from jobs_reliability import serve

from zjobs import Client, Keepalive, ReceiveTimeout, ZmqReceiver
from zjobs.testing import wait_until

CALLS = 400


@pytest.mark.timeout(180)
def test_sigstop_then_sigcont_retries_elsewhere_and_ignores_late_answers() -> None:
    a, b = serve("sleepy", name="a"), serve("sleepy", name="b")
    stopped = False
    # Fast ZMTP keepalive: a stalled peer's connections are dropped after about a second,
    # so the retries go to the processor that still answers.
    keepalive = Keepalive(interval_ms=200, timeout_ms=1000, ttl_ms=1000)
    try:
        with Client.connect([a.requests, b.requests], [a.responses, b.responses],
                            timeout_s=2.0, retries=15, keepalive=keepalive) as client, \
                ZmqReceiver(a.responses, topics=(), keepalive=keepalive) as watcher:
            client.wait_ready(timeout_s=60)
            watcher.subscribe(client.topic)  # sees what A publishes for this client
            completions: Counter[int] = Counter()
            lock = threading.Lock()

            def count(i: int) -> Any:
                def done(_: Future[Any]) -> None:
                    with lock:
                        completions[i] += 1
                return done

            a.proc.send_signal(signal.SIGSTOP)  # by PID
            stopped = True
            futures = []
            for i in range(CALLS):
                future = client.submit(i)
                future.add_done_callback(count(i))
                futures.append(future)
            results = [f.result(timeout=120) for f in futures]
            assert results == [2 * i for i in range(CALLS)]
            assert client.resent > 0  # half the first attempts went to the stalled one
            unmatched_before = client.unmatched

            a.proc.send_signal(signal.SIGCONT)
            stopped = False
            # A drains what it had taken in while stalled and publishes late answers; the
            # client's SUB reconnects to it meanwhile. Wait until they have come and gone.
            late: list[Any] = []

            def a_is_drained() -> bool:
                try:
                    late.append(watcher.receive(timeout=0.5))
                    return False
                except ReceiveTimeout:
                    return True

            wait_until(a_is_drained, timeout_s=60, interval_s=0)
            wait_until(lambda: client.pending == 0)
            time.sleep(0.5)
            assert sorted(completions.values()) == [1] * CALLS  # none delivered twice
            assert [f.result() for f in futures] == results
            late_ids = {r.id for r in late}
            print(f"\nstall: {client.resent} resent, {len(late_ids)} late answers published "
                  f"by the stalled processor after SIGCONT, "
                  f"{client.unmatched - unmatched_before} of them reached the client and "
                  "were ignored")
            # Both serve again after the stall.
            assert [client.call(n, timeout_s=10) for n in range(10)] == list(range(0, 20, 2))
    finally:
        if stopped:
            a.proc.send_signal(signal.SIGCONT)
        assert a.stop() == 0, a.diagnostics()
        assert b.stop() == 0, b.diagnostics()
