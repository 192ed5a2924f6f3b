"""ZJP/1 on the wire, field by field, from a raw pyzmq peer.

The peer here uses pyzmq and its own msgpack calls only, never zjobs' codec or protocol
modules, so the processor is checked against the spec (docs/PROTOCOL.md), not against
itself. Every malformed request is followed by a normal one that must still be answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from zjobs import ZmqProcessor, cached
from zjobs.testing import wait_until
from zjobs.transport.publisher import Publisher

WAIT_S = 10.0
TOPIC = b"0123456789abcdef0123456789abcdef"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def job(request: Any, resources: Any) -> Any:
    if request == "boom":
        raise ValueError("boom")
    if request == "exit":
        raise SystemExit(2)
    if request == "set":
        return {1, 2}
    if request == "deep":
        value: Any = None
        for _ in range(1025):
            value = [value]
        return value
    return request


class RawPeer:
    """A PUSH and a SUB socket talking to one processor, with hand-made frames."""

    def __init__(self, proc: ZmqProcessor) -> None:
        self.proc = proc
        ctx = zmq.Context.instance()
        self.push = ctx.socket(zmq.PUSH)
        self.sub = ctx.socket(zmq.SUB)
        for sock in (self.push, self.sub):
            sock.linger = 0
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")  # everything: the topic is checked by hand
        self.sub.connect(proc.connect_endpoints.responses)
        self.push.connect(proc.connect_endpoints.requests)
        self.sent = 0

    def close(self) -> None:
        self.push.close()
        self.sub.close()

    def send(self, *frames: bytes) -> None:
        assert self.push.poll(int(WAIT_S * 1000), zmq.POLLOUT)
        self.push.send_multipart(list(frames))
        self.sent += 1

    def recv(self, timeout_s: float = WAIT_S) -> tuple[bytes, dict[str, Any], bytes]:
        frames = self.recv_raw(timeout_s)
        assert len(frames) == 3
        header = unpack(frames[1])
        assert isinstance(header, dict)
        # The sequence-number extension: every message has one. Checked here, then left out
        # so that the tests below compare the base ZJP/1 header.
        assert type(header.pop("seq")) is int
        return frames[0], header, frames[2]

    def recv_raw(self, timeout_s: float = WAIT_S) -> list[bytes]:
        """The next message that is not on a reserved topic (heartbeats are skipped)."""
        while True:
            assert self.sub.poll(int(timeout_s * 1000)), "no response"
            frames = self.sub.recv_multipart()
            if not frames[0].startswith(b"\x00"):
                return frames

    def handshake(self) -> None:
        """Ping until a pong comes back (the slow-joiner rule), then drain late pongs."""
        deadline = time.monotonic() + WAIT_S
        n = 0
        while time.monotonic() < deadline:
            n += 1
            self.send(pack({"v": 1, "id": f"hs{n}", "reply_to": TOPIC, "ping": True}), b"\xc0")
            if self.sub.poll(20):
                break
        else:
            pytest.fail("no pong from the processor")
        # Drop the pongs of the handshake: one processor answers in order on one PUB, so
        # every earlier pong arrives before the pong of a last marker ping.
        self.send(pack({"v": 1, "id": "marker", "reply_to": TOPIC, "ping": True}), b"\xc0")
        while True:
            assert self.sub.poll(int(WAIT_S * 1000)), "no pong for the marker"
            frames = self.sub.recv_multipart()
            if len(frames) == 3 and unpack(frames[1]).get("id") == "marker":
                break
        self.baseline = self.proc.counters

    def normal(self, value: Any = "still here") -> None:
        """A normal request must be answered, and be the next message on the wire."""
        self.send(pack({"v": 1, "id": "normal", "reply_to": TOPIC}), pack(value))
        topic, header, body = self.recv()
        assert topic == TOPIC
        assert header["id"] == "normal"
        assert header["status"] == "ok", header
        assert unpack(body) == value

    def error(self, *frames: bytes) -> tuple[bytes, dict[str, Any], bytes]:
        self.send(*frames)
        topic, header, body = self.recv()
        assert header["status"] == "error"
        assert header["cached"] is False
        assert set(header["error"]) >= {"type", "message"}
        assert isinstance(header["error"]["message"], str)
        assert body == b"\xc0"
        return topic, header, body

    def dropped(self, *frames: bytes) -> None:
        """Nothing answers ``frames``: the next message is the normal request's answer."""
        before = self.proc.counters.dropped
        self.send(*frames)
        self.normal()
        assert self.proc.counters.dropped == before + 1


@pytest.fixture
def proc() -> Iterator[ZmqProcessor]:
    with ZmqProcessor(job, name="wire") as processor:
        yield processor


@pytest.fixture
def peer(proc: ZmqProcessor) -> Iterator[RawPeer]:
    raw = RawPeer(proc)
    try:
        raw.handshake()
        yield raw
    finally:
        raw.close()


def req(value: Any = 1, **fields: Any) -> tuple[bytes, bytes]:
    header = {"v": 1, "id": "r1", "reply_to": TOPIC, **fields}
    return pack({k: v for k, v in header.items() if v is not ...}), pack(value)


# -- well-formed traffic ----------------------------------------------------------------

def test_ping_pong(peer: RawPeer) -> None:
    peer.send(pack({"v": 1, "id": "p1", "reply_to": TOPIC, "ping": True}), b"\xc0")
    topic, header, body = peer.recv()
    assert topic == TOPIC
    assert set(header) == {"v", "id", "status", "cached", "processor", "instance", "ext",
                           "batch_max"}
    assert (header["ext"], header["batch_max"]) == (["batch"], 4096)  # the batch extension
    assert type(header["v"]) is int and header["v"] == 1
    assert header["id"] == "p1"
    assert header["status"] == "pong"
    assert header["cached"] is False
    assert header["processor"] == "wire"
    assert isinstance(header["instance"], str) and len(header["instance"]) == 16
    assert header["instance"] == peer.proc.instance
    assert body == b"\xc0"
    peer.normal()


def test_ok_response_field_by_field(peer: RawPeer) -> None:
    value = {"n": 7, "s": "é", "b": b"\x00\xff", "l": [1.5, None, True], 3: -(2**63)}
    peer.send(pack({"v": 1, "id": "r1", "reply_to": TOPIC}), pack(value))
    topic, header, body = peer.recv()
    assert topic == TOPIC
    assert header == {"v": 1, "id": "r1", "status": "ok", "cached": False, "processor": "wire",
                      "instance": peer.proc.instance}
    assert unpack(body) == value


def test_worked_example_bytes_from_the_spec() -> None:
    request_header = bytes.fromhex("83a17601a26964a27231a87265706c795f746fa27431")
    with ZmqProcessor(lambda r, res: r * r, name="sq") as proc:
        raw = RawPeer(proc)
        try:
            raw.handshake()
            raw.send(request_header, b"\x07")
            topic, header, body = raw.recv()
        finally:
            raw.close()
    assert topic == b"t1"
    assert header == {"v": 1, "id": "r1", "status": "ok", "cached": False, "processor": "sq",
                      "instance": proc.instance}
    assert body == b"\x31"


def test_header_raw_types(peer: RawPeer) -> None:
    # Check types at the byte level: "cached" is a msgpack bool, "v" a positive fixint 1.
    peer.send(*req(5))
    frames = peer.recv_raw()
    raw = frames[1]
    assert b"\xa6cached\xc2" in raw
    assert b"\xa1v\x01" in raw
    assert b"\xa2id\xa2r1" in raw
    assert b"\xa6status\xa2ok" in raw


def test_bin_and_str_ids_are_echoed_with_their_type(peer: RawPeer) -> None:
    peer.send(*req(1, id=b"r1"))
    header = peer.recv()[1]
    assert header["id"] == b"r1" and type(header["id"]) is bytes
    peer.send(*req(1, id="r1"))
    header = peer.recv()[1]
    assert header["id"] == "r1" and type(header["id"]) is str
    peer.send(*req(1, id="é" * 127))  # 254 bytes
    assert peer.recv()[1]["id"] == "é" * 127
    peer.send(*req(1, id=b"\xff" * 255))
    assert peer.recv()[1]["id"] == b"\xff" * 255


def test_reply_to_bin_and_absent(peer: RawPeer) -> None:
    peer.send(*req(1, reply_to=b"\x01\xffbin"))
    assert peer.recv()[0] == b"\x01\xffbin"
    peer.send(pack({"v": 1, "id": "r1"}), pack(1))
    assert peer.recv()[0] == b""
    peer.normal()


def test_meta_is_echoed_in_ok_pong_and_errors(peer: RawPeer) -> None:
    meta = {"trace": [1, "x", {"deep": b"\x00"}], 5: None, "f": 1.5}
    peer.send(*req(1, meta=meta))
    assert peer.recv()[1]["meta"] == meta
    peer.send(*req(None, meta=meta, ping=True))
    header = peer.recv()[1]
    assert (header["status"], header["meta"]) == ("pong", meta)
    assert peer.error(*req("boom", meta=meta))[1]["meta"] == meta
    assert peer.error(*req(1, meta=meta, v=2))[1]["meta"] == meta
    assert peer.error(req(meta=meta)[0], b"\xc1")[1]["meta"] == meta
    assert peer.error(*req(1, meta=meta, deadline_ms=1))[1]["meta"] == meta
    assert peer.error(*req(1, meta=meta, id=""))[1]["meta"] == meta
    peer.send(*req(1, meta={}))
    assert peer.recv()[1]["meta"] == {}
    peer.normal()


def test_unknown_and_non_string_header_keys_are_ignored(peer: RawPeer) -> None:
    header = {"v": 1, "id": "r1", "reply_to": TOPIC, "x-future": {"a": [1]}, 7: "int key",
              b"v": 99, "ping2": True}
    peer.send(pack(header), pack(3))
    _, head, body = peer.recv()
    assert head["status"] == "ok"
    assert unpack(body) == 3
    peer.normal()


def test_nil_optional_fields_are_treated_as_absent(peer: RawPeer) -> None:
    header = {"v": 1, "id": "r1", "reply_to": None, "ping": None, "deadline_ms": None,
              "meta": None}
    peer.send(pack(header), pack("x"))
    topic, head, body = peer.recv()
    assert topic == b""
    assert head["status"] == "ok"
    assert "meta" not in head
    assert unpack(body) == "x"
    peer.normal()


def test_wider_int_encodings_are_accepted(peer: RawPeer) -> None:
    # "v" as uint8 and deadline_ms as uint64, as another msgpack library may write them.
    far = int(time.time() * 1000) + 3_600_000
    header = (b"\x84\xa1v\xcc\x01\xa2id\xa2r1\xa8reply_to\xc4" + bytes([len(TOPIC)]) + TOPIC
              + b"\xabdeadline_ms\xcf" + far.to_bytes(8, "big"))
    peer.send(header, b"\x05")
    head = peer.recv()[1]
    assert head["status"] == "ok"


def test_request_body_map_keys_of_any_type(peer: RawPeer) -> None:
    body = pack({1: "int", (1, 2): "array", None: "nil", b"k": "bin"})
    peer.send(pack({"v": 1, "id": "r1", "reply_to": TOPIC}), body)
    _, head, out = peer.recv()
    assert head["status"] == "ok", head
    echoed = msgpack.unpackb(out, raw=False, strict_map_key=False, use_list=False)
    assert echoed == {1: "int", (1, 2): "array", None: "nil", b"k": "bin"}


# -- errors the job causes ------------------------------------------------------------------

def test_job_failed(peer: RawPeer) -> None:
    topic, header, _ = peer.error(*req("boom"))
    assert topic == TOPIC
    assert header["id"] == "r1"
    assert header["error"] == {"type": "JobFailed", "message": "ValueError: boom",
                               "exception": "ValueError"}
    assert "meta" not in header
    assert header["processor"] == "wire"
    peer.normal()


def test_system_exit_is_job_failed_and_serving_goes_on(peer: RawPeer) -> None:
    header = peer.error(*req("exit"))[1]
    assert header["error"]["type"] == "JobFailed"
    assert header["error"]["message"] == "SystemExit: 2"
    assert header["error"]["exception"] == "SystemExit"
    peer.normal()


def test_unencodable_value_is_job_failed(peer: RawPeer) -> None:
    header = peer.error(*req("set"))[1]
    assert header["error"]["type"] == "JobFailed"
    assert header["error"]["exception"] == "EncodeError"
    assert header["error"]["message"].startswith("EncodeError: cannot encode ")
    peer.normal()


def test_deadline_exceeded(peer: RawPeer) -> None:
    header = peer.error(*req(1, deadline_ms=1))[1]
    assert header["error"]["type"] == "DeadlineExceeded"
    assert header["id"] == "r1"
    far = int(time.time() * 1000) + 3_600_000
    peer.send(*req(2, deadline_ms=far))
    assert unpack(peer.recv()[2]) == 2
    peer.normal()


def test_deadline_does_not_apply_to_a_ping(peer: RawPeer) -> None:
    peer.send(*req(None, ping=True, deadline_ms=1))
    assert peer.recv()[1]["status"] == "pong"
    peer.normal()


def test_ping_body_is_not_decoded(peer: RawPeer) -> None:
    peer.send(req(ping=True)[0], b"\xc1\xc1 not msgpack")
    assert peer.recv()[1]["status"] == "pong"
    peer.normal()


# -- malformed requests answered with an error ------------------------------------------------

@pytest.mark.parametrize("version", [..., 2, 0, True, 1.0, "1"])
def test_unsupported_version(peer: RawPeer, version: Any) -> None:
    topic, header, _ = peer.error(*req(1, v=version, id=b"vid"))
    assert topic == TOPIC
    assert header["error"]["type"] == "UnsupportedVersion"
    assert header["id"] == b"vid"
    peer.normal()


def test_unsupported_version_with_a_bad_id_has_nil_id(peer: RawPeer) -> None:
    header = peer.error(*req(1, v=2, id=5))[1]
    assert header["error"]["type"] == "UnsupportedVersion"
    assert "id" in header and header["id"] is None
    peer.normal()


@pytest.mark.parametrize("rid", [..., None, "", b"", "x" * 256, b"x" * 256, 5, [1], {"a": 1}])
def test_missing_or_invalid_id_is_bad_request_with_nil_id(peer: RawPeer, rid: Any) -> None:
    topic, header, _ = peer.error(*req(1, id=rid))
    assert topic == TOPIC
    assert header["error"]["type"] == "BadRequest"
    assert "id" in header and header["id"] is None
    peer.normal()


@pytest.mark.parametrize("count", [1, 3, 5])
def test_wrong_frame_count_with_usable_reply_to(peer: RawPeer, count: int) -> None:
    frames = [req(meta={"m": 1})[0]] + [pack(1)] * (count - 1)
    topic, header, _ = peer.error(*frames)
    assert topic == TOPIC
    assert header["error"]["type"] == "BadRequest"
    assert header["id"] == "r1"
    assert header["meta"] == {"m": 1}
    peer.normal()


@pytest.mark.parametrize(("fields", "field"), [
    ({"ping": 1}, "ping"),
    ({"ping": "yes"}, "ping"),
    ({"deadline_ms": 1.5}, "deadline_ms"),
    ({"deadline_ms": True}, "deadline_ms"),
    ({"deadline_ms": "soon"}, "deadline_ms"),
])
def test_optional_field_of_the_wrong_type(
    peer: RawPeer, fields: dict[str, Any], field: str
) -> None:
    header = peer.error(*req(1, **fields))[1]
    assert header["error"]["type"] == "BadRequest"
    assert field in header["error"]["message"]
    assert header["id"] == "r1"
    peer.normal()


@pytest.mark.parametrize("meta", [[1, 2], "m", 5, True])
def test_invalid_meta_is_bad_request_without_meta(peer: RawPeer, meta: Any) -> None:
    header = peer.error(*req(1, meta=meta))[1]
    assert header["error"]["type"] == "BadRequest"
    assert "meta" not in header
    peer.normal()


@pytest.mark.parametrize("body", [b"\xc1", b"\x01\x02", b"\xa1\xff", b"", b"\x92\x01"])
def test_body_not_a_single_msgpack_value(peer: RawPeer, body: bytes) -> None:
    header = peer.error(req()[0], body)[1]
    assert header["error"]["type"] == "BadRequest"
    assert header["id"] == "r1"
    peer.normal()


def test_first_failure_decides(peer: RawPeer) -> None:
    # Bad version, bad id, bad ping and bad body at once: the version is checked first.
    assert peer.error(req(v=3, id=5, ping=1)[0], b"\xc1")[1]["error"]["type"] == \
        "UnsupportedVersion"
    # Bad id and bad ping: the id comes first.
    assert peer.error(req(id=5, ping=1)[0], b"\xc1")[1]["error"]["message"].startswith("id")
    # Bad deadline and bad body: the optional fields come before the body.
    assert "deadline_ms" in peer.error(req(deadline_ms=0.5)[0], b"\xc1")[1]["error"]["message"]
    # Wrong frame count comes before everything else.
    assert peer.error(req(v=3)[0])[1]["error"]["type"] == "BadRequest"
    peer.normal()


# -- malformed requests dropped (no usable reply_to) -----------------------------------------

@pytest.mark.parametrize("frames", [
    (pack([1, 2]), pack(1)),  # header is an array
    (pack(7), pack(1)),  # header is an int
    (b"\xc1", pack(1)),  # header not msgpack
    (pack({"v": 1, "id": "r1"}) + b"\x00", pack(1)),  # header with trailing bytes
    (b"\x81\xa1v\xa1\xff", pack(1)),  # invalid UTF-8 in the header
    (b"", pack(1)),  # empty header frame
])
def test_header_not_a_map_is_dropped(peer: RawPeer, frames: tuple[bytes, ...]) -> None:
    peer.dropped(*frames)


@pytest.mark.parametrize("reply_to", ["\x00heartbeat", b"\x00", b"\x00x", 5, 1.5, [b"t"], True])
def test_unusable_reply_to_is_dropped(peer: RawPeer, reply_to: Any) -> None:
    peer.dropped(*req(1, reply_to=reply_to))


@pytest.mark.parametrize("frames", [
    (pack([1]),),  # one frame, not a map
    (b"\xc1", b"", b""),  # three frames, not msgpack
    (req(reply_to=b"\x00r")[0], pack(1), pack(1)),  # three frames, reserved topic
    (req(reply_to=3)[0],),  # one frame, reply_to not a str or bin
])
def test_wrong_frame_count_without_usable_reply_to_is_dropped(
    peer: RawPeer, frames: tuple[bytes, ...]
) -> None:
    peer.dropped(*frames)


def test_counters_add_up_after_a_storm(peer: RawPeer) -> None:
    peer.send(*req("boom"))
    peer.send(*req(1, deadline_ms=1))
    peer.send(b"\xc1", b"")
    peer.send(req()[0], b"\xc1")
    peer.send(*req(None, ping=True))
    peer.send(*req(4))
    for _ in range(5):
        peer.recv()
    peer.normal()
    wait_until(lambda: peer.proc.counters.received - peer.baseline.received == 7)
    c, b = peer.proc.counters, peer.baseline
    assert (c.ok - b.ok, c.failed - b.failed, c.expired - b.expired) == (2, 1, 1)
    assert (c.bad_requests - b.bad_requests, c.dropped - b.dropped, c.pongs - b.pongs) == (2, 1, 1)
    assert c.received == c.ok + c.failed + c.expired + c.bad_requests + c.pongs


# -- the cache on the wire ----------------------------------------------------------------------

def test_cached_flag_on_hits_including_cached_none() -> None:
    calls: list[Any] = []

    def lookup(request: Any, resources: Any) -> Any:
        calls.append(request)
        return None if request == "none" else request

    with ZmqProcessor(cached(lookup), name="c") as proc:
        raw = RawPeer(proc)
        try:
            raw.handshake()
            for value in ("a", "a", "none", "none"):
                raw.send(*req(value))
            results = [raw.recv() for _ in range(4)]
        finally:
            raw.close()
    assert [h["cached"] for _, h, _ in results] == [False, True, False, True]
    assert [h["status"] for _, h, _ in results] == ["ok"] * 4
    assert [body for _, _, body in results] == [pack("a"), pack("a"), b"\xc0", b"\xc0"]
    assert calls == ["a", "none"]
    assert proc.counters.cache_hits == 2


# -- points a peer written from the spec alone had to guess ------------------------------------

def test_a_map_used_as_a_body_map_key_is_accepted_and_echoed(peer: RawPeer) -> None:
    # {{"a": 1}: "x", [1, {"b": 2}]: "y"}: a map key and an array key holding a map.
    body = (b"\x82" + pack({"a": 1}) + pack("x") + b"\x92\x01" + pack({"b": 2}) + pack("y"))
    peer.send(pack({"v": 1, "id": "r1", "reply_to": TOPIC}), body)
    _, head, out = peer.recv()
    assert head["status"] == "ok", head
    assert out == body  # same keys in the same order: the same bytes
    peer.normal()


def test_a_header_key_that_is_a_map_is_ignored(peer: RawPeer) -> None:
    header = pack({"v": 1, "id": "r1", "reply_to": TOPIC})
    header = b"\x84" + header[1:] + pack({"k": 1}) + pack("ignored")
    peer.send(header, pack(3))
    _, head, body = peer.recv()
    assert (head["status"], unpack(body)) == ("ok", 3)
    peer.normal()


def test_meta_keys_of_any_type_are_echoed(peer: RawPeer) -> None:
    meta = b"\x84" + pack(1) + pack("int") + pack({"m": 1}) + pack("map") + b"\x91\x02" + \
        pack("array") + pack(b"k") + pack("bin")
    header = pack({"v": 1, "id": "r1", "reply_to": TOPIC})
    header = b"\x84" + header[1:] + pack("meta") + meta
    for body in (pack(1), pack("boom")):
        peer.send(header, body)
        raw = peer.recv_raw()
        start = raw[1].index(pack("meta")) + len(pack("meta"))
        assert raw[1][start:start + len(meta)] == meta  # re-encoded, to the same bytes
    peer.send(b"\x85" + header[1:] + pack("ping") + pack(True), b"\xc0")
    raw = peer.recv_raw()
    assert meta in raw[1]
    peer.normal()


# What zjobs sends for the worked example: 7 keys in its own order, "seq" last (the run's
# first heartbeat was message 1 and the pong of the client's handshake message 2).
ZJOBS_RESPONSE_HEADER = bytes.fromhex(
    "87a17601a970726f636573736f72a27371a8696e7374616e6365b030313233343536373839616263646566"
    "a6737461747573a26f6ba6636163686564c2a26964a27231a373657103"
)


def test_what_zjobs_sends_for_the_worked_example() -> None:
    request_header = bytes.fromhex("83a17601a26964a27231a87265706c795f746fa27431")
    with ZmqProcessor(lambda r, res: r * r, name="sq") as proc:
        raw = RawPeer(proc)
        try:
            raw.handshake()
            raw.send(request_header, b"\x07")
            frames = raw.recv_raw()
        finally:
            raw.close()
    expected = ZJOBS_RESPONSE_HEADER.replace(b"0123456789abcdef", proc.instance.encode())
    without_seq = expected[:-len(b"\xa3seq\x03")]
    assert frames[1].startswith(without_seq + b"\xa3seq")
    assert type(unpack(frames[1])["seq"]) is int
    assert frames[2] == b"\x31"


def test_a_request_that_cannot_be_answered_is_dropped_before_any_other_check(
        peer: RawPeer) -> None:
    # Wrong frame count, bad version and bad id at once, but reply_to unusable: dropped,
    # never a BadRequest (there is nowhere to publish it).
    peer.dropped(req(v=3, id=5, reply_to=b"\x00x")[0])
    peer.dropped(req(v=3, reply_to=7)[0], pack(1), pack(1))
    assert peer.error(req(v=3)[0])[1]["error"]["type"] == "BadRequest"  # answerable: step 1
    peer.normal()


def test_dedup_key_is_the_topic_bytes_and_the_typed_id(peer: RawPeer) -> None:
    runs = peer.proc.counters.ok - peer.proc.counters.replays
    peer.send(*req(5, dedup=True))
    assert peer.recv()[1].get("replay") is None
    peer.send(*req(5, dedup=True, reply_to=TOPIC.decode()))  # the same topic, as a str
    assert peer.recv()[1]["replay"] is True
    peer.send(*req(5, dedup=True, id=b"r1"))  # a bin id is another request
    assert peer.recv()[1].get("replay") is None
    assert peer.proc.counters.ok - peer.proc.counters.replays == runs + 2
    peer.normal()


def test_dedup_remembers_ok_and_job_failed_not_other_outcomes(peer: RawPeer) -> None:
    far = int(time.time() * 1000) + 3_600_000
    for _ in range(2):  # JobFailed is remembered: the repeat is a replay
        header = peer.error(*req("boom", id="f1", dedup=True))[1]
    assert header["replay"] is True
    peer.error(*req(1, id="e1", dedup=True, deadline_ms=1))  # expired: not remembered
    peer.send(*req(1, id="e1", dedup=True, deadline_ms=far))
    assert "replay" not in peer.recv()[1]
    peer.error(req(id="b1", dedup=True)[0], b"\xc1")  # BadRequest: not remembered
    peer.send(*req(1, id="b1", dedup=True))
    assert "replay" not in peer.recv()[1]
    peer.send(*req(None, id="p1", dedup=True, ping=True))  # a ping: not remembered
    assert peer.recv()[1]["status"] == "pong"
    peer.send(*req(1, id="p1", dedup=True))
    assert "replay" not in peer.recv()[1]
    peer.normal()


def test_dedup_comes_after_the_body_and_before_the_deadline(peer: RawPeer) -> None:
    far = int(time.time() * 1000) + 3_600_000
    peer.send(*req(2, id="d1", dedup=True, deadline_ms=far))
    assert "replay" not in peer.recv()[1]
    peer.send(*req(2, id="d1", dedup=True, deadline_ms=1))  # past: replayed, not expired
    _, header, body = peer.recv()
    assert (header["status"], header["replay"], unpack(body)) == ("ok", True, 2)
    header = peer.error(req(id="d1", dedup=True)[0], b"\xc1")[1]  # the body is checked first
    assert header["error"]["type"] == "BadRequest"
    peer.normal()


def test_a_repeat_arriving_while_the_original_runs_gets_one_response() -> None:
    from zjobs.aio import AsyncZmqProcessor

    release = threading.Event()
    runs: list[Any] = []

    def slow(request: Any, resources: Any) -> Any:
        runs.append(request)
        release.wait(WAIT_S)
        return request

    with AsyncZmqProcessor(slow, threads=True, concurrency=4, name="slow") as proc:
        raw = RawPeer(proc)  # type: ignore[arg-type]
        try:
            raw.handshake()
            for _ in range(3):
                raw.send(*req("job", dedup=True))
            wait_until(lambda: proc.counters.received - raw.baseline.received == 3)
            release.set()
            _, header, body = raw.recv()
            assert (header["id"], unpack(body), "replay" in header) == ("r1", "job", False)
            raw.normal()  # the next message: the repeats got no response of their own
        finally:
            release.set()
            raw.close()
    assert runs == ["job", "still here"]  # the job ran once for the three
    assert (proc.counters.ok - raw.baseline.ok, proc.counters.replays) == (4, 2)


def test_heartbeat_counters_are_the_documented_outcomes() -> None:
    beats: list[dict[str, int]] = []
    with ZmqProcessor(cached(job), name="hb", heartbeat_interval_s=0.05) as proc:
        raw = RawPeer(proc)
        try:
            raw.handshake()
            for value in ("a", "a", "boom"):
                raw.send(*req(value))
            raw.send(*req(1, deadline_ms=1))
            raw.send(*req(1, ping=True))
            raw.send(req()[0], b"\xc1")
            raw.send(b"\xc1", b"")
            for _ in range(6):
                raw.recv()
            target = proc.counters.received
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                assert raw.sub.poll(int(WAIT_S * 1000))
                frames = raw.sub.recv_multipart()
                if frames[0] == b"\x00heartbeat":
                    beats.append(unpack(frames[2]))
                    if beats[-1]["received"] == target:
                        break
        finally:
            raw.close()
    c = beats[-1]
    assert set(c) == {"received", "ok", "failed", "expired", "bad_requests", "dropped",
                      "cache_hits", "pongs", "replays", "batches"}
    assert c["batches"] == 0
    assert c["received"] == c["ok"] + c["failed"] + c["expired"] + c["bad_requests"] + c["pongs"]
    b = raw.baseline
    assert (c["ok"] - b.ok, c["cache_hits"], c["failed"], c["expired"]) == (2, 1, 1, 1)
    assert (c["bad_requests"] - b.bad_requests, c["dropped"] - b.dropped) == (2, 1)


def test_the_first_heartbeat_leaves_when_serving_starts_and_interval_ms_is_a_duration(
) -> None:
    ctx = zmq.Context.instance()
    pub, sub = ctx.socket(zmq.XPUB), ctx.socket(zmq.SUB)
    try:
        pub.linger = sub.linger = 0
        pub.bind("tcp://127.0.0.1:*")
        sub.setsockopt(zmq.SUBSCRIBE, b"\x00heartbeat")
        sub.connect(pub.LAST_ENDPOINT.decode())
        assert pub.poll(int(WAIT_S * 1000)) and pub.recv() == b"\x01\x00heartbeat"
        publisher = Publisher(pub, name="p", instance="i", heartbeat_interval_s=60.0)
        publisher.start()
        try:
            assert sub.poll(int(WAIT_S * 1000)), "no heartbeat at start (the next is 60 s away)"
            frames = sub.recv_multipart()
        finally:
            publisher.close()
    finally:
        pub.close()
        sub.close()
    header = unpack(frames[1])
    assert (header["seq"], header["state"], header["interval_ms"]) == (1, "running", 60_000)


@pytest.mark.parametrize(("depth", "status"), [(1024, "ok"), (1025, "error")])
def test_values_nest_up_to_1024_levels(peer: RawPeer, depth: int, status: str) -> None:
    peer.send(req()[0], b"\x91" * depth + b"\xc0")
    _, header, body = peer.recv()
    assert header["status"] == status
    if status == "ok":
        assert body == b"\x91" * depth + b"\xc0"
    else:
        assert header["error"]["type"] == "BadRequest"
    peer.normal()


def test_a_job_value_nested_too_deep_is_encode_error(peer: RawPeer) -> None:
    header = peer.error(*req("deep"))[1]
    assert (header["error"]["type"], header["error"]["exception"]) == ("JobFailed",
                                                                       "EncodeError")
    peer.normal()


class _NoInstancePeer:
    """A processor written by hand that answers pings without an "instance" key."""

    def __init__(self, name: str) -> None:
        ctx = zmq.Context.instance()
        self.name = name
        self.pull, self.pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
        for sock in (self.pull, self.pub):
            sock.linger = 0
            sock.bind("tcp://127.0.0.1:*")
        self.requests = self.pull.LAST_ENDPOINT.decode()
        self.responses = self.pub.LAST_ENDPOINT.decode()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name=f"raw-{name}")
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if not self.pull.poll(20):
                continue
            header = unpack(self.pull.recv_multipart()[0])
            self.pub.send_multipart([header["reply_to"].encode(), pack(
                {"v": 1, "id": header["id"], "status": "pong", "cached": False,
                 "processor": self.name}), b"\xc0"])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.pull.close()
        self.pub.close()


@pytest.mark.parametrize(("names", "ready"), [(("a", "b"), True), (("same", "same"), False)])
def test_readiness_without_instance_counts_processor_names(names: tuple[str, str],
                                                           ready: bool) -> None:
    from zjobs import Client, NotReady

    peers = [_NoInstancePeer(name) for name in names]
    try:
        with Client.connect([p.requests for p in peers], [p.responses for p in peers],
                            ready_timeout_s=1.0 if not ready else WAIT_S) as client:
            if ready:
                client.wait_ready()
            else:
                with pytest.raises(NotReady):
                    client.wait_ready()
    finally:
        for p in peers:
            p.close()
