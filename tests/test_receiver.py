"""zjobs.transport.receiver: ZmqReceiver against a raw PUB socket, and against processors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from zjobs import (
    ClosedError,
    ConnectError,
    McReceive,
    ReceiveTimeout,
    ZmqProcessor,
    ZmqReceiver,
    ZmqSender,
)
from zjobs.testing import wait_subscribed, wait_until
from zjobs.transport.receiver import wait_ms

WAIT_S = 10.0


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def response(rid: Any = "r", status: str = "ok", value: Any = None, topic: bytes = b"t",
             **extra: Any) -> list[bytes]:
    header = {"v": 1, "id": rid, "status": status, "cached": False, "processor": "raw", **extra}
    return [topic, pack(header), pack(value)]


@pytest.fixture
def pub() -> Iterator[tuple[zmq.Socket[bytes], str]]:
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.linger = 0
    sock.bind("tcp://127.0.0.1:*")
    try:
        yield sock, sock.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
    finally:
        sock.close()


def subscribed(pub: zmq.Socket[bytes], receiver: ZmqReceiver, topic: bytes = b"t") -> None:
    """Publish probes until the receiver gets one: its subscription has reached the PUB."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        pub.send_multipart(response("probe", topic=topic))
        try:
            got = receiver.receive(timeout=0.02)
        except ReceiveTimeout:
            continue
        assert got.id == "probe"
        # Drain the other probes in flight.
        while True:
            try:
                receiver.receive(timeout=0.05)
            except ReceiveTimeout:
                return
    pytest.fail("the subscription never arrived")


def test_receives_a_response(pub: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pub
    with ZmqReceiver(endpoint, topics=["t"]) as receiver:
        subscribed(sock, receiver)
        sock.send_multipart(response(b"id", value={"a": [1]}, meta={"m": [1]},
                                     instance="inst", cached=True))
        got = receiver.receive(timeout=WAIT_S)
    assert (got.id, got.status, got.value, got.topic) == (b"id", "ok", {"a": [1]}, b"t")
    assert (got.cached, got.processor, got.instance, got.meta) == (True, "raw", "inst",
                                                                   {"m": [1]})


def test_skips_what_is_not_a_response(pub: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pub
    with ZmqReceiver(endpoint, topics=[""]) as receiver:
        subscribed(sock, receiver)
        skipped_before = receiver.skipped
        sock.send_multipart(response(topic=b"\x00heartbeat"))  # reserved topic
        sock.send_multipart(response(status="progress"))  # unknown status
        sock.send_multipart([b"t", pack({"v": 1})])  # 2 frames
        sock.send_multipart([b"t", b"\xc1", b"\xc0"])  # header not msgpack
        sock.send_multipart(response(v=2))  # other version
        sock.send_multipart(response(v=True))  # a bool is not 1
        sock.send_multipart(response(status="error"))  # error without error map
        sock.send_multipart([b"t", pack({"v": 1, "id": "x", "status": "ok"}), b"\xc1"])
        sock.send_multipart(response("real", value=5))
        got = receiver.receive(timeout=WAIT_S)
        assert (got.id, got.value) == ("real", 5)
        assert receiver.skipped - skipped_before == 8


def test_error_response(pub: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pub
    with ZmqReceiver(endpoint, topics=["t"]) as receiver:
        subscribed(sock, receiver)
        error = {"type": "JobFailed", "message": "ValueError: x", "exception": "ValueError",
                 "later": 1}
        sock.send_multipart(response(status="error", error=error))
        got = receiver.receive(timeout=WAIT_S)
    assert got.error is not None
    assert (got.error.type, got.error.message) == ("JobFailed", "ValueError: x")
    assert got.error.details["later"] == 1
    assert got.value is None


def test_topic_prefix_filtering_and_unsubscribe(pub: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pub
    with ZmqReceiver(endpoint, topics=[b"a"]) as receiver:
        assert receiver.topics == [b"a"]
        subscribed(sock, receiver, b"a")
        sock.send_multipart(response("b-topic", topic=b"b"))
        sock.send_multipart(response("a-prefixed", topic=b"abc"))
        assert receiver.receive(timeout=WAIT_S).id == "a-prefixed"
        receiver.subscribe("b")
        subscribed(sock, receiver, b"b")
        receiver.unsubscribe(b"a")
        assert receiver.topics == [b"b"]
        # Once the unsubscription is through, "a" messages no longer arrive; "b" ones do.
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            sock.send_multipart(response("a-late", topic=b"a"))
            sock.send_multipart(response("b-mark", topic=b"b"))
            ids = []
            try:
                while True:
                    ids.append(receiver.receive(timeout=0.05).id)
            except ReceiveTimeout:
                pass
            if ids == ["b-mark"]:
                break
        else:
            pytest.fail("unsubscribe never took effect")


def test_receive_timeout(pub: tuple[zmq.Socket[bytes], str]) -> None:
    _, endpoint = pub
    with ZmqReceiver(endpoint) as receiver:
        start = time.monotonic()
        with pytest.raises(ReceiveTimeout) as info:
            receiver.receive(timeout=0.05)
        assert time.monotonic() - start >= 0.05
        assert info.value.timeout_s == 0.05
        with pytest.raises(ReceiveTimeout):
            receiver.receive(timeout=0)


def test_closed_receiver() -> None:
    receiver = ZmqReceiver()
    receiver.close()
    receiver.close()
    assert receiver.closed
    assert "closed" in repr(receiver)
    with pytest.raises(ClosedError):
        receiver.receive(timeout=0)
    with pytest.raises(ClosedError):
        receiver.subscribe("x")
    with pytest.raises(ClosedError):
        receiver.connect("tcp://127.0.0.1:1")


def test_connect_error_names_the_endpoint() -> None:
    with ZmqReceiver() as receiver:
        with pytest.raises(ConnectError) as info:
            receiver.connect("bogus")
        assert info.value.endpoint == "bogus"
    with pytest.raises(ConnectError):
        ZmqReceiver(["bogus"])


def test_is_an_mc_receive() -> None:
    with ZmqReceiver(topics=()) as receiver:
        assert isinstance(receiver, McReceive)
        assert receiver.topics == []


def test_iteration_yields_responses(pub: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pub
    with ZmqReceiver(endpoint, topics=["t"]) as receiver:
        subscribed(sock, receiver)
        for i in range(3):
            sock.send_multipart(response(f"i{i}"))
        it = iter(receiver)
        assert [next(it).id for _ in range(3)] == ["i0", "i1", "i2"]


def test_one_receiver_connected_to_two_processors() -> None:
    with ZmqProcessor(lambda r, res: "one", name="one") as p1, \
         ZmqProcessor(lambda r, res: "two", name="two") as p2, \
         p1.sender() as s1, p2.sender() as s2, \
         ZmqReceiver([p1.endpoints.responses, p2.endpoints.responses]) as receiver:
        wait_subscribed(s1, receiver, topic="x")
        wait_subscribed(s2, receiver, topic="x")
        s1.send(None, reply_to="x", id="from-1")
        s2.send(None, reply_to="x", id="from-2")
        got: dict[Any, Any] = {}
        while len(got) < 2:
            r = receiver.receive(timeout=WAIT_S)
            if r.status == "ok":
                got[r.id] = (r.value, r.processor)
    assert got == {"from-1": ("one", "one"), "from-2": ("two", "two")}


def test_two_receivers_both_get_a_broadcast() -> None:
    with ZmqProcessor(lambda r, res: r * 2) as proc, proc.sender() as sender, \
         proc.receiver(["news"]) as r1, proc.receiver([""]) as r2:
        wait_subscribed(sender, r1, topic="news")
        wait_subscribed(sender, r2, topic="news")
        rid = sender.send(21, reply_to="news")
        for receiver in (r1, r2):
            while (got := receiver.receive(timeout=WAIT_S)).status != "ok":
                pass
            assert (got.id, got.value, got.topic) == (rid, 42, b"news")


def test_a_deadline_that_just_passed_does_not_wait_forever(
        pub: tuple[zmq.Socket[bytes], str]) -> None:
    # A receive loop that skipped a heartbeat comes back with a deadline passed 1-2 ms ago;
    # ceil() of that gave ZMQ_RCVTIMEO -1, "wait forever" (until some message came).
    sock, endpoint = pub
    with ZmqReceiver(endpoint, topics=["t"]) as receiver:
        subscribed(sock, receiver)
        later = threading.Timer(1.0, sock.send_multipart, [response("late")])
        later.start()
        try:
            start = time.monotonic()
            assert receiver.receive_frames(time.monotonic() - 0.0015) is None
            assert time.monotonic() - start < 0.9  # did not wait for the late message
        finally:
            later.join()
        assert receiver.receive(timeout=WAIT_S).id == "late"


def test_wait_ms_is_never_minus_one_for_a_deadline() -> None:
    now = 100.0
    assert wait_ms(None, now) == -1
    assert [wait_ms(now - d, now) for d in (0.0, 0.0004, 0.0015, 0.002, 5.0)] == [0] * 5
    assert wait_ms(now + 0.0001, now) == 1
    assert wait_ms(now + 0.25, now) == 250


def test_a_terminated_context_closes_the_receiver_instead_of_failing_forever() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    receiver = ZmqReceiver("tcp://127.0.0.1:1", context=ctx)
    term = threading.Thread(target=ctx.term)  # blocks until every socket is closed
    term.start()
    try:
        with pytest.raises(ClosedError, match="context was terminated"):
            receiver.receive(timeout=WAIT_S)  # ETERM at once, as soon as term() began
        assert receiver.closed  # its socket closed, so term() could finish
        term.join(WAIT_S)
        assert not term.is_alive()
        with pytest.raises(ClosedError):
            receiver.receive(timeout=0)
    finally:
        receiver.close()
        term.join(WAIT_S)


def test_disconnect_stops_receiving_from_one_processor() -> None:
    with ZmqProcessor(lambda r, res: "one", name="one") as p1, \
         ZmqProcessor(lambda r, res: "two", name="two") as p2, \
         p1.sender() as s1, p2.sender() as s2, \
         ZmqReceiver([p1.endpoints.responses, p2.endpoints.responses],
                     topics=["x"]) as receiver:
        wait_subscribed(s1, receiver, topic="x")
        wait_subscribed(s2, receiver, topic="x")
        receiver.disconnect(p1.endpoints.responses)
        assert receiver.endpoints == [p2.endpoints.responses]
        s1.send(None, reply_to="x", id="from-1")  # published, but no longer to us
        wait_until(lambda: p1.counters.ok == 1)
        s2.send(None, reply_to="x", id="from-2")
        while (got := receiver.receive(timeout=WAIT_S)).status != "ok":
            pass
        assert got.id == "from-2"
        with pytest.raises(ReceiveTimeout):
            while receiver.receive(timeout=0.3).status != "ok":
                pass
        receiver.disconnect(p1.endpoints.responses)  # not connected any more: nothing to do
        assert receiver.endpoints == [p2.endpoints.responses]
    with pytest.raises(ClosedError):
        receiver.disconnect(p2.endpoints.responses)


def test_gaps_count_what_a_full_queue_dropped_without_a_monitor_given() -> None:
    ctx = zmq.Context.instance()
    with ZmqProcessor(lambda r, res: r, requests="inproc://rgaps-req",
                      responses="inproc://rgaps-rep", sndhwm=5, heartbeat_interval_s=None,
                      context=ctx) as proc, \
            ZmqReceiver("inproc://rgaps-rep", rcvhwm=5, context=ctx) as receiver, \
            ZmqSender("inproc://rgaps-req", context=ctx) as sender:
        wait_subscribed(sender, receiver)
        while True:  # drain the handshake's pongs
            try:
                receiver.receive(timeout=0.2)
            except ReceiveTimeout:
                break
        assert receiver.gaps == 0
        for i in range(300):
            sender.send(i, reply_to="x")
        wait_until(lambda: proc.counters.ok == 300)
        got = 0
        while True:
            try:
                got += receiver.receive(timeout=0.5).status == "ok"
            except ReceiveTimeout:
                break
        sender.send("last", reply_to="x")  # a gap shows once a later message arrives
        while receiver.receive(timeout=WAIT_S).value != "last":
            pass
        assert 0 < got < 300
        assert receiver.gaps == 300 - got == receiver.monitor.gaps
        assert f"gaps={receiver.gaps}" in repr(receiver)
