"""Publisher: every message numbered in order, heartbeats from a thread, a last "stopped" beat."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from zjobs.transport.publisher import Publisher
from zjobs.wire.codec import decode, encode
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC, Heartbeat


@pytest.fixture
def pub_sub() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx = zmq.Context.instance()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        pub.linger = sub.linger = 0
        pub.sndhwm = sub.rcvhwm = 0  # unbounded: this test counts on seeing every message
        pub.bind("tcp://127.0.0.1:*")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(pub.LAST_ENDPOINT.decode())
        yield pub, sub
    finally:
        pub.close()
        sub.close()


def receive(sub: zmq.Socket[bytes], timeout_s: float = 10.0) -> list[bytes]:
    assert sub.poll(int(timeout_s * 1000)), "nothing received in time"
    return sub.recv_multipart()


def test_heartbeats_and_messages_share_one_sequence(
        pub_sub: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    pub, sub = pub_sub
    publisher = Publisher(pub, name="p", instance="i1", heartbeat_interval_s=0.01,
                          counters=lambda: {"received": 7})
    publisher.start()
    try:
        first = Heartbeat.from_frames(receive(sub))  # heartbeats until the SUB is joined
        assert first.processor == "p" and first.counters == {"received": 7}
        assert first.interval_ms == 10
        for i in range(2000):
            publisher.publish([b"t", encode({"v": 1, "id": str(i)}), encode(i)])
        seqs, values = [first.seq], []
        while len(values) < 2000:
            frames = receive(sub)
            seqs.append(decode(frames[1])["seq"])
            if frames[0] == b"t":
                values.append(decode(frames[2]))
    finally:
        publisher.close()
    assert values == list(range(2000))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order, none skipped
    last = receive(sub)
    while last[0] != HEARTBEAT_TOPIC or Heartbeat.from_frames(last).state != "stopped":
        last = receive(sub)
    assert Heartbeat.from_frames(last).seq == publisher.seq
    publisher.publish([b"t", encode({"v": 1}), encode(None)])  # after close: discarded
    assert not sub.poll(100)


def test_no_heartbeats_when_disabled(
        pub_sub: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    pub, sub = pub_sub
    publisher = Publisher(pub, name="p", instance="i1", heartbeat_interval_s=None)
    publisher.start()
    deadline = time.monotonic() + 10
    got: list[bytes] = []
    while not got and time.monotonic() < deadline:  # publish until the SUB has joined
        publisher.publish([b"t", encode({"v": 1}), encode(None)])
        if sub.poll(10):
            got = sub.recv_multipart()
    assert got and got[0] == b"t"
    publisher.close()
    while sub.poll(100):
        assert sub.recv_multipart()[0] == b"t"
    assert "no heartbeats" in repr(publisher)


def test_interval_must_be_positive(
        pub_sub: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    with pytest.raises(ValueError):
        Publisher(pub_sub[0], name="p", instance="i", heartbeat_interval_s=0)
