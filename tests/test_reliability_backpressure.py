"""Bounded queues: a sender with no processor raises in bounded time with flat memory; a
stalled subscriber never makes a processor grow past its PUB high-water mark; a backlog in
front of a busy processor, from one client or ten, loses nothing."""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from jobs_interop import Peer, zjobs_command
from jobs_reliability import load_benchmark, rss_kib, serve_hwm

from zjobs import Client, SendTimeout, ZJobsError, ZmqSender
from zjobs.testing import wait_until

PAYLOAD = bytes(64 * 1024)


def dead_endpoint(ipc_dir: Path) -> str:
    """An endpoint nobody listens on: an ipc path never bound (a just-closed tcp port could
    be handed out again, or still accept, on a busy machine)."""
    return f"ipc://{ipc_dir}/nobody"


@pytest.mark.timeout(60)
def test_immediate_sender_with_no_processor_raises_at_once_and_stays_flat(ipc_dir: Path) -> None:
    with ZmqSender(dead_endpoint(ipc_dir), immediate=True, send_timeout_s=0.2) as sender:
        start = time.monotonic()
        with pytest.raises(SendTimeout) as info:
            sender.send(PAYLOAD)
        assert 0.15 <= time.monotonic() - start < 5
        assert info.value.timeout_s == 0.2 and info.value.endpoints == sender.endpoints
        before = rss_kib()
        for _ in range(2000):  # 128 MiB offered
            with pytest.raises(SendTimeout):
                sender.send(PAYLOAD, timeout_s=0)
        growth = rss_kib() - before
    print(f"\nno processor, IMMEDIATE: 2000 x 64 KiB refused, RSS growth {growth} KiB")
    assert growth < 8 * 1024


@pytest.mark.timeout(60)
def test_plain_sender_with_no_processor_queues_up_to_its_hwm_then_raises(ipc_dir: Path) -> None:
    # Without IMMEDIATE libzmq queues for the absent peer, but only sndhwm messages.
    with ZmqSender(dead_endpoint(ipc_dir), sndhwm=100, send_timeout_s=0.2, linger_ms=0) as sender:
        before = rss_kib()
        accepted = 0
        for _ in range(2000):  # 128 MiB offered
            try:
                sender.send(PAYLOAD, timeout_s=0)
                accepted += 1
            except SendTimeout:
                pass
        growth = rss_kib() - before
        start = time.monotonic()
        with pytest.raises(SendTimeout):
            sender.send(PAYLOAD)  # full: blocks for send_timeout_s, then raises
        assert 0.15 <= time.monotonic() - start < 5
    print(f"\nno processor, queueing sender (sndhwm 100): {accepted} of 2000 x 64 KiB queued, "
          f"RSS growth {growth} KiB")
    assert 0 < accepted <= 200
    assert growth < 200 * 64 + 16 * 1024


@pytest.mark.timeout(120)
def test_a_stalled_subscriber_does_not_grow_the_processor() -> None:
    proc = serve_hwm("blob", 1000)
    code = ("import sys, zmq\n"
            "s = zmq.Context().socket(zmq.SUB)\n"
            "s.setsockopt(zmq.SUBSCRIBE, b'')\n"
            "s.connect(sys.argv[1])\n"
            "s.recv_multipart()\n"  # a heartbeat: the subscription is in place
            "print('subscribed', flush=True)\n"
            "import time; time.sleep(3600)\n")
    stalled = Peer([sys.executable, "-c", code, proc.responses], wait_listening=False)
    try:
        wait_until(lambda: stalled.lines == ["subscribed"], timeout_s=60)
        stalled.proc.send_signal(signal.SIGSTOP)  # by PID: it never reads again
        with Client.connect(proc.requests, proc.responses, timeout_s=60) as client:
            client.wait_ready(timeout_s=60)
            assert len(client.call(10_000)) == 10_000
            before = rss_kib(proc.pid)
            answered = 0
            for _ in range(40):  # 40 x 500 responses of 10 KB: 200 MB the stalled one misses
                # Half of sndhwm calls in flight: the healthy client can never be a whole
                # high-water mark behind, so the publisher drops nothing for it (with exactly
                # sndhwm in flight, a heartbeat in the same queue made one response drop
                # under load).
                futures = [client.submit(10_000) for _ in range(500)]
                answered += sum(len(f.result()) == 10_000 for f in futures)
            after = rss_kib(proc.pid)
        print(f"\nstalled subscriber, PUB sndhwm 1000, 200 MB published: processor RSS "
              f"{before} -> {after} KiB; the healthy client got {answered} of 20000")
        assert answered == 20_000
        assert after - before < 48 * 1024  # about sndhwm x 10 KB, not 200 MB
    finally:
        stalled.proc.send_signal(signal.SIGCONT)
        stalled.stop(signal.SIGKILL)
        assert proc.stop() == 0, proc.diagnostics()


# -- a backlog in front of a busy processor ---------------------------------------------------
# The processor's PULL socket stops reading a connection while that connection's queue is
# full, for as long as the job takes to work through it. Before, ZMTP heartbeats went
# unanswered meanwhile and libzmq dropped the connection with every request queued on it:
# 1,300 at once to a 20 ms job lost 301; 10 clients x 1,100 to a 1 ms job lost 1,020.

BACKLOG = 1300


@pytest.mark.timeout(300)
def test_a_backlog_behind_a_slow_job_loses_nothing() -> None:
    # 1,300 x 20 ms: the last request waits 26 s in the client's and the processor's queues.
    daemon = Peer([*zjobs_command(), "serve", "zjobs.demo:sleep", "--requests",
                   "tcp://127.0.0.1:*", "--responses", "tcp://127.0.0.1:*", "--name", "slow",
                   "--log-level", "warning"])
    try:
        with Client.connect(daemon.requests, daemon.responses, timeout_s=120,
                            retries=0) as client:
            client.wait_ready(timeout_s=60)
            values = [0.02 + n * 1e-9 for n in range(BACKLOG)]  # each answer is its own
            futures = [client.submit(value) for value in values]
            answered, errors = 0, Counter[str]()
            for value, future in zip(values, futures, strict=True):
                try:
                    answered += future.result(timeout=180) == value
                except ZJobsError as exc:
                    errors[type(exc).__name__] += 1
        print(f"\nbacklog: {BACKLOG} calls at once to a 20 ms job: {answered} answered, "
              f"errors {dict(errors)}")
        assert (answered, dict(errors)) == (BACKLOG, {})
    finally:
        assert daemon.stop() == 0, daemon.diagnostics()


@pytest.mark.timeout(300)
def test_ten_clients_overloading_one_processor_lose_nothing() -> None:
    # benchmarks/overload.py at 10 clients x 1,100 calls (the full 10 x 2,000 runs there):
    # each client's connection waits about 6 s at the processor's high-water mark.
    result = load_benchmark("overload").run_overload(clients=10, calls=1100, job_ms=1.0,
                                                   timeout_s=60.0)
    print("\n" + result.summary())
    assert (result.answered, result.lost, result.errors) == (result.total, 0, {})
    assert result.duplicated == 0
