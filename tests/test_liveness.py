"""Processor heartbeats and sequence numbers end to end: monitors, gaps, ProcessorsGone."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import zmq

from zjobs import (
    Client,
    ProcessorMonitor,
    ProcessorsGone,
    ReceiveTimeout,
    ZmqProcessor,
    ZmqReceiver,
    ZmqSender,
)
from zjobs.testing import wait_subscribed, wait_until
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC


def square(request: Any, resources: Any) -> Any:
    return request * request


def test_a_monitoring_receiver_hears_heartbeats_with_counters() -> None:
    with ZmqProcessor(square, name="sq", heartbeat_interval_s=0.05) as proc:
        monitor = ProcessorMonitor()
        with proc.receiver(topics=[HEARTBEAT_TOPIC], monitor=monitor) as receiver, \
                proc.client() as client:
            assert client.call(3) == 9
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with pytest.raises(ReceiveTimeout):  # heartbeats are not responses
                    receiver.receive(timeout=0.05)
                peer = monitor.peer(proc.instance)
                if peer is not None and peer.counters.get("ok") == 1:
                    break
            peer = monitor.peer(proc.instance)
            assert peer is not None
            assert (peer.processor, peer.interval_s, peer.state) == ("sq", 0.05, "running")
            assert peer.counters["ok"] == 1 and peer.counters["received"] >= 2
            assert [p.instance for p in monitor.alive()] == [proc.instance]
            assert receiver.skipped == monitor.heartbeats > 0


def test_heartbeats_continue_while_a_long_job_runs() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(request: Any, resources: Any) -> Any:
        started.set()
        release.wait(10)
        return request

    with ZmqProcessor(slow, heartbeat_interval_s=0.05) as proc:
        monitor = ProcessorMonitor(liveness=2)
        with proc.receiver(topics=[HEARTBEAT_TOPIC], monitor=monitor) as receiver, \
                proc.client() as client:
            future = client.submit(1)
            assert started.wait(10)
            before = monitor.heartbeats
            deadline = time.monotonic() + 10
            while monitor.heartbeats < before + 5 and time.monotonic() < deadline:
                with pytest.raises(ReceiveTimeout):
                    receiver.receive(timeout=0.05)
            assert monitor.heartbeats >= before + 5  # alive while busy, not mistaken for dead
            assert not monitor.all_gone()
            release.set()
            assert future.result() == 1


def test_a_receiver_of_everything_counts_dropped_messages_as_gaps() -> None:
    # inproc with tiny high-water marks: the publisher drops what the stalled receiver
    # cannot hold, and the sequence numbers show exactly how much was lost.
    ctx = zmq.Context.instance()
    with ZmqProcessor(square, requests="inproc://gaps-req", responses="inproc://gaps-rep",
                      sndhwm=5, heartbeat_interval_s=None, context=ctx) as proc:
        monitor = ProcessorMonitor()
        with ZmqReceiver("inproc://gaps-rep", topics=[""], rcvhwm=5, context=ctx,
                         monitor=monitor) as receiver, \
                ZmqSender("inproc://gaps-req", context=ctx) as sender:
            wait_subscribed(sender, receiver)
            while True:  # drain the handshake's pongs
                try:
                    receiver.receive(timeout=0.2)
                except ReceiveTimeout:
                    break
            first_seq = proc.counters.received + 1  # every message so far was a pong
            for i in range(500):
                sender.send(i, reply_to="x")
            wait_until(lambda: proc.counters.ok == 500)
            got = []
            while True:
                try:
                    got.append(receiver.receive(timeout=0.5))
                except ReceiveTimeout:
                    break
            # A loss shows once a later message arrives: send one more, now that it fits.
            sender.send("last", reply_to="x")
            last = receiver.receive(timeout=10)
    assert 0 < len(got) < 500
    assert [r.seq for r in got] == list(range(first_seq, first_seq + len(got)))
    assert last.seq == first_seq + 500
    assert monitor.gaps == 500 - len(got)  # every dropped response accounted for


def test_processors_gone_fails_waiting_calls_early() -> None:
    started = threading.Event()

    def slow(request: Any, resources: Any) -> Any:
        started.set()
        time.sleep(0.3)
        return request

    proc = ZmqProcessor(slow, heartbeat_interval_s=0.05).start()
    try:
        with proc.client(liveness=3, timeout_s=60) as client:
            first, second = client.submit(1), client.submit(2)
            assert started.wait(10)
            wait_until(lambda: client.monitor is not None and client.monitor.heartbeats > 0)
            start = time.monotonic()
            proc.stop()  # finishes the first job; the second is never taken up
            assert first.result(10) == 1
            with pytest.raises(ProcessorsGone) as info:
                second.result(10)
            assert time.monotonic() - start < 10  # not the 60 s call timeout
            assert info.value.attempts == 1
            assert isinstance(info.value, TimeoutError)
    finally:
        proc.stop()


def test_liveness_needs_a_receiver_that_takes_a_monitor() -> None:
    from zjobs import MemoryProcessor

    with MemoryProcessor(square) as proc:
        with pytest.raises(TypeError):
            Client(proc.sender(), proc.receiver(topics=()), liveness=3)
