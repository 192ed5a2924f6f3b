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


@pytest.fixture
def xpub() -> Iterator[zmq.Socket[bytes]]:
    sock = zmq.Context.instance().socket(zmq.XPUB)
    try:
        sock.linger = 0
        sock.bind("tcp://127.0.0.1:*")
        yield sock
    finally:
        sock.close()


def subscriber(xpub: zmq.Socket[bytes], topic: bytes) -> zmq.Socket[bytes]:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(xpub.LAST_ENDPOINT.decode())
    return sub


def test_a_response_waits_for_its_late_subscriber(xpub: zmq.Socket[bytes]) -> None:
    # The answer is published before the client's subscription arrives (a reconnect
    # racing a request): it is held and delivered once the subscription comes.
    publisher = Publisher(xpub, name="p", instance="i1", heartbeat_interval_s=None)
    publisher.publish([b"late-topic", encode({"v": 1}), encode("answer")])
    assert publisher.held == 1
    sub = subscriber(xpub, b"late-topic")
    try:
        deadline = time.monotonic() + 10
        while not sub.poll(10):
            publisher.flush()  # the heartbeat thread's job when heartbeats are on
            assert time.monotonic() < deadline, "the held answer never came"
        topic, _, body = sub.recv_multipart()
        assert (topic, decode(body)) == (b"late-topic", "answer")
        assert publisher.unheard == 0
        publisher.publish([b"late-topic", encode({"v": 1}), encode("next")])
        assert publisher.held == 1  # a topic with a subscriber is not held again
        assert decode(receive(sub)[2]) == "next"
    finally:
        publisher.close()
        sub.close()


def test_held_messages_are_published_after_hold_s_and_counted_unheard(
        xpub: zmq.Socket[bytes]) -> None:
    publisher = Publisher(xpub, name="p", instance="i1", heartbeat_interval_s=None,
                          hold_s=0.05)
    publisher.publish([b"nobody", encode({"v": 1}), encode(1)])
    publisher.publish([HEARTBEAT_TOPIC, encode({"v": 1}), encode({})])  # never held
    assert (publisher.held, publisher.seq) == (1, 1)
    time.sleep(0.06)  # the hold time itself is what is tested here
    publisher.flush()
    assert (publisher.unheard, publisher.seq) == (1, 2)


def test_without_hold_an_unsubscribed_topic_is_dropped_as_by_pub(
        xpub: zmq.Socket[bytes]) -> None:
    publisher = Publisher(xpub, name="p", instance="i1", heartbeat_interval_s=None, hold_s=0)
    publisher.publish([b"gone", encode({"v": 1}), encode(1)])
    sub = subscriber(xpub, b"gone")
    try:
        assert publisher.held == 0 and publisher.seq == 1
        assert not sub.poll(100)
    finally:
        publisher.close()
        sub.close()
