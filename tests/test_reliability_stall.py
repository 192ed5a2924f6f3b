"""A processor daemon stalled with SIGSTOP: calls time out and are retried on the other one;
after SIGCONT its late responses reach the client and are ignored, never delivered twice.
A receiver stalled with its queue full, longer than any keepalive timeout, then resumed:
its process lives, its memory stays within the high-water mark's bound, and what it missed
is counted."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import Future
from typing import Any

import pytest
import zmq
from jobs_reliability import load_benchmark, serve
from zmq.utils.monitor import recv_monitor_message

from zjobs import Client, Keepalive, ReceiveTimeout, ZmqReceiver
from zjobs.testing import wait_until
from zjobs.transport.keepalive import apply_keepalive
from zjobs.transport.sockets import DEFAULT_RCVHWM

CALLS = 400


@pytest.mark.timeout(180)
def test_sigstop_then_sigcont_retries_elsewhere_and_ignores_late_answers() -> None:
    a, b = serve("sleepy", name="a"), serve("sleepy", name="b")
    stopped = False
    # ZMTP heartbeats on the client's sender (opt-in: they also cut a merely busy peer): a
    # stalled peer's connection is dropped after about a second, so the retries go to the
    # processor that still answers.
    keepalive = Keepalive(zmtp_interval_ms=200, zmtp_timeout_ms=1000)
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
            # The client reads lazily: make it read past A's late answers. Once A answers a
            # call, everything A published to this client before has been read (in order).
            deadline = time.monotonic() + 60
            while client.call_response(-1, timeout_s=5).processor != "a":
                assert time.monotonic() < deadline, "A never answered after SIGCONT"
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


@pytest.mark.timeout(60)
def test_keepalive_drops_the_connection_to_a_stalled_peer_and_reconnects() -> None:
    daemon = serve("double", name="stalled")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.linger = 0
    apply_keepalive(push, Keepalive(zmtp_interval_ms=100, zmtp_timeout_ms=500))
    events = push.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    stopped = False

    def next_event() -> int:
        assert events.poll(20_000), "no socket event in time"
        return int(recv_monitor_message(events)["event"])

    try:
        push.connect(daemon.requests)
        assert next_event() == zmq.EVENT_HANDSHAKE_SUCCEEDED
        daemon.proc.send_signal(signal.SIGSTOP)
        stopped = True
        start = time.monotonic()
        assert next_event() == zmq.EVENT_DISCONNECTED  # TCP still up: only ZMTP noticed
        print(f"\nstalled peer dropped after {time.monotonic() - start:.2f}s")
        daemon.proc.send_signal(signal.SIGCONT)
        stopped = False
        assert next_event() == zmq.EVENT_HANDSHAKE_SUCCEEDED  # and reconnected by itself
    finally:
        if stopped:
            daemon.proc.send_signal(signal.SIGCONT)
        events.close()
        push.disable_monitor()
        push.close()
        assert daemon.stop() == 0, daemon.diagnostics()


# What a full queue of small responses may cost: libzmq decodes without copying, so a queued
# message keeps alive the whole read buffer (up to 8 KiB of data plus its bookkeeping) it
# was decoded from, and how many messages share one buffer depends on how the kernel split
# the stream. Seen here: 1.2 to 4.4 KiB per queued message (12 to 44 MiB at RCVHWM 10,000);
# the bound allows 8 KiB, still well under the 180 MiB of the 100,000-message default.
RCVHWM_BOUND_KIB = DEFAULT_RCVHWM * 8 + 8 * 1024


@pytest.mark.timeout(180)
def test_a_receiver_stalled_past_the_keepalive_timeouts_lives_and_counts_what_it_missed() -> None:
    # benchmarks/stall.py for 8 s (30 s runs there): a child ZmqReceiver with default options
    # takes one message, stops reading while 300,000 are published, stays stalled 8 s
    # more, then reads. Before, its ZMTP heartbeat timed the full connection out, and on
    # resuming libzmq aborted the child (SIGABRT, "Assertion failed: _input_stopped"); its
    # 100,000-message queue had grown it by 180 MiB.
    result = load_benchmark("stall").run_stall(stall_s=8.0, messages=300_000)
    print("\n" + result.summary())
    assert result.exit_code == 0  # alive, and ended normally
    assert result.gaps > 0  # the publisher dropped for it: the stall was real
    assert result.accounted  # every message received or counted missed
    assert result.rss_stalled_kib - result.rss_before_kib < RCVHWM_BOUND_KIB
