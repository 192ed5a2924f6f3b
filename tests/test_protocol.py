"""zjobs.wire.protocol: golden bytes, round trips, and parse_request's validation order."""

from __future__ import annotations

import re
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zjobs.errors import EncodeError, ProtocolError, RemoteError
from zjobs.wire.codec import FrozenMap
from zjobs.wire.protocol import (
    BAD_REQUEST,
    ERROR,
    JOB_FAILED,
    OK,
    PONG,
    UNSUPPORTED_VERSION,
    ErrorInfo,
    InvalidRequest,
    Request,
    Response,
    ResponseEncoder,
    parse_request,
    parse_response,
    topic_bytes,
    valid_id,
)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def invalid(frames: list[bytes]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_request(frames)
    return info.value


# -- golden bytes: the worked example of docs/PROTOCOL.md ----------------------------------

REQUEST_HEADER = bytes.fromhex(
    "83a17601a26964a27231a87265706c795f746fa27431"
)
RESPONSE_HEADER = bytes.fromhex(
    "86a17601a26964a27231a6737461747573a26f6ba6636163686564c2a970726f63"
    "6573736f72a27371a8696e7374616e6365b030313233343536373839616263646566"
)


def test_golden_request_frames() -> None:
    assert Request("r1", 7, reply_to="t1").to_frames() == [REQUEST_HEADER, b"\x07"]


def test_golden_response_frames() -> None:
    response = Response(id="r1", status=OK, value=49, processor="sq",
                        instance="0123456789abcdef", topic=b"t1")
    assert response.to_frames() == [b"t1", RESPONSE_HEADER, b"\x31"]
    assert len(RESPONSE_HEADER) == 67


def test_golden_bytes_match_the_worked_example_in_the_spec() -> None:
    from pathlib import Path

    spec = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text()
    section = spec[spec.index("## Worked example"):]

    def dump(title: str) -> bytes:
        block = section[section.index(title):].split("\n\n")[0]
        rows = [line[6:] for line in block.splitlines() if re.match(r"[0-9a-f]{4}  ", line)]
        return bytes.fromhex("".join(rows))

    assert dump("frame 1 (header, 22 bytes)") == REQUEST_HEADER
    assert dump("frame 2 (header, 67 bytes)") == RESPONSE_HEADER


def test_encoder_header_decodes_to_the_worked_example() -> None:
    encoder = ResponseEncoder("sq", "0123456789abcdef")
    frames = encoder.ok(b"t1", "r1", encoder.encode_value(49))
    assert frames[0] == b"t1"
    assert frames[2] == b"\x31"
    assert unpack(frames[1]) == unpack(RESPONSE_HEADER)
    assert frames[1][0] == 0x86  # a map of 6 entries, nothing extra


# -- Request ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "request_",
    [
        Request("r1", 7),
        Request(b"\x00\xffbin-id", {"a": [1, 2], 3: None}, reply_to=b"topic"),
        Request("x" * 255, None, reply_to="t", deadline_ms=1_700_000_000_000,
                meta={"trace": [1, "a"], 5: b"b"}),
        Request("p", None, reply_to="t", ping=True, meta={}),
        Request("neg", -(2**63), deadline_ms=-5),
    ],
)
def test_request_round_trip(request_: Request) -> None:
    assert parse_request(request_.to_frames()) == request_
    assert Request.from_frames(request_.to_frames()) == request_


def test_request_header_has_only_the_fields_set() -> None:
    assert Request("a").header() == {"v": 1, "id": "a"}
    full = Request("a", 1, reply_to="t", ping=True, deadline_ms=5, meta={"k": 1}).header()
    assert full == {"v": 1, "id": "a", "reply_to": "t", "ping": True, "deadline_ms": 5,
                    "meta": {"k": 1}}


def test_request_unencodable_value_raises_encode_error() -> None:
    with pytest.raises(EncodeError):
        Request("a", {1, 2}).to_frames()


def test_request_id_type_survives() -> None:
    assert type(parse_request(Request(b"id").to_frames()).id) is bytes
    assert type(parse_request(Request("id").to_frames()).id) is str


# -- Response --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "response",
    [
        Response("r1", OK, value={"x": [1, 2]}, cached=True, processor="p", topic=b"t",
                 instance="abc"),
        Response(b"bin", OK, value=None, processor="p"),
        Response("r2", ERROR, error=ErrorInfo(JOB_FAILED, "ValueError: boom",
                                              {"exception": "ValueError", "extra": [1]}),
                 processor="p", meta={"m": [1, {"n": 2}]}, topic=b"\x01t"),
        Response(None, ERROR, error=ErrorInfo(BAD_REQUEST, "id is missing"), processor="p"),
        Response("p1", PONG, processor="p", meta={}, instance="i"),
    ],
)
def test_response_round_trip(response: Response) -> None:
    frames = response.to_frames()
    back = Response.from_frames(frames)
    if response.error is not None:
        assert back.error is not None
        assert back.error.to_map() == response.error.to_map()
        back = Response(back.id, back.status, back.value, response.error, back.cached,
                        back.processor, back.meta, back.topic, back.instance)
    assert back == response


def test_response_error_body_is_nil_and_value_ignored() -> None:
    frames = Response("r", ERROR, value=5, error=ErrorInfo(JOB_FAILED, "x")).to_frames()
    assert frames[2] == b"\xc0"
    assert Response("r", PONG, value=5).to_frames()[2] == b"\xc0"


def test_response_header_omits_instance_error_and_meta_when_absent() -> None:
    header = unpack(Response("r", OK, value=1, processor="p").to_frames()[1])
    assert header == {"v": 1, "id": "r", "status": "ok", "cached": False, "processor": "p"}


def test_response_unknown_status_is_decoded_as_is() -> None:
    frames = [b"", pack({"v": 1, "id": "r", "status": "later", "cached": False}), b"\xc0"]
    response = Response.from_frames(frames)
    assert response.status == "later"
    assert not response.ok


def test_response_tolerates_unknown_keys_and_missing_optional_ones() -> None:
    header = {"v": 1, "id": "r", "status": "ok", "future": {"x": 1}}
    response = Response.from_frames([b"t", pack(header), pack([1])])
    assert response.value == [1]
    assert response.cached is False
    assert response.processor == ""
    assert response.instance is None
    assert response.meta is None


@pytest.mark.parametrize(
    "frames",
    [
        [pack({"v": 1, "id": "r", "status": "ok"}), b"\x01"],  # 2 frames
        [b"", pack({"v": 1, "id": "r", "status": "ok"}), b"\x01", b""],  # 4 frames
        [b"", pack([1, 2]), b"\x01"],  # header not a map
        [b"", b"\xc1", b"\x01"],  # header not msgpack
        [b"", pack({"v": 2, "id": "r", "status": "ok"}), b"\x01"],  # other version
        [b"", pack({"id": "r", "status": "ok"}), b"\x01"],  # no version
        [b"", pack({"v": True, "id": "r", "status": "ok"}), b"\x01"],  # a bool is not 1
        [b"", pack({"v": 1.0, "id": "r", "status": "ok"}), b"\x01"],  # a float is not 1
        [b"", pack({"v": 1, "id": "r", "status": 1}), b"\x01"],  # status not a str
        [b"", pack({"v": 1, "id": "r", "status": "error"}), b"\xc0"],  # no error map
        [b"", pack({"v": 1, "id": "r", "status": "ok"}), b"\xc1"],  # body not msgpack
    ],
)
def test_response_from_frames_rejects_non_responses(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        Response.from_frames(frames)


# -- parse_response: what receivers skip ----------------------------------------------------


def test_parse_response_returns_responses_of_known_statuses() -> None:
    for status in (OK, PONG):
        frames = Response("r", status, value=None, processor="p", seq=4).to_frames()
        assert parse_response(frames) == Response.from_frames(frames)
    error = ErrorInfo("JobFailed", "boom")
    assert parse_response(Response("r", ERROR, error=error).to_frames()) is not None


@pytest.mark.parametrize(
    "frames",
    [
        [b"\x00heartbeat", pack({"v": 1, "id": "r", "status": "ok"}), b"\x01"],  # reserved
        [b"\x00", pack({"v": 1, "id": "r", "status": "ok"}), b"\x01"],
        [b"", b"\xc1", b"\x01"],  # malformed
        [],
        [b"", pack({"v": 1, "id": "r", "status": "later", "cached": False}), b"\xc0"],  # unknown
    ],
)
def test_parse_response_skips_reserved_malformed_and_unknown_status(frames: list[bytes]) -> None:
    assert parse_response(frames) is None


def test_parse_response_reports_every_decoded_sequence_number() -> None:
    seen: list[tuple[str | None, int | None]] = []
    unknown = {"v": 1, "id": "r", "status": "later", "instance": "i1", "seq": 7}
    assert parse_response([b"", pack(unknown), b"\xc0"], lambda *s: seen.append(s)) is None
    ok = Response("r", OK, value=1, instance="i1", seq=8).to_frames()
    assert parse_response(ok, lambda *s: seen.append(s)) is not None
    parse_response([b"\x00heartbeat", b"", b""], lambda *s: seen.append(s))  # not a response
    assert seen == [("i1", 7), ("i1", 8)]


def test_unwrap_returns_value_or_raises_remote_error_with_context() -> None:
    assert Response("r", OK, value=[1]).unwrap() == [1]
    error = ErrorInfo(JOB_FAILED, "ValueError: boom", {"exception": "ValueError", "x": 1})
    response = Response(b"r", ERROR, error=error, processor="sq")
    with pytest.raises(RemoteError) as info:
        response.unwrap()
    exc = info.value
    assert (exc.type, exc.message, exc.id, exc.processor) == (
        JOB_FAILED, "ValueError: boom", b"r", "sq")
    assert exc.exception == "ValueError"
    assert exc.details["x"] == 1
    assert str(exc) == "JobFailed: ValueError: boom"


def test_error_info_type_and_message_win_over_details() -> None:
    info = ErrorInfo("T", "m", {"type": "other", "message": "other", "k": 1})
    assert info.to_map() == {"type": "T", "message": "m", "k": 1}


# -- helpers ---------------------------------------------------------------------------------

def test_valid_id_bounds() -> None:
    assert valid_id("a") and valid_id(b"a")
    assert valid_id("x" * 255) and valid_id(b"x" * 255)
    assert valid_id("\U0001f600" * 63)  # 252 bytes
    assert not valid_id("\U0001f600" * 64)  # 256 bytes in 64 characters
    assert valid_id("é" * 127) and not valid_id("é" * 128)  # 254 and 256 bytes
    for bad in ("", b"", "x" * 256, b"x" * 256, None, 1, True, ["a"], bytearray(b"a")):
        assert not valid_id(bad)


def test_topic_bytes() -> None:
    assert topic_bytes(None) == b""
    assert topic_bytes("é") == "é".encode()
    assert topic_bytes(b"\x01") == b"\x01"


# -- parse_request: every rule and the order of the checks -----------------------------------

def header(**fields: Any) -> bytes:
    return pack({"v": 1, "id": "r1", "reply_to": "t", **fields})


def test_accepts_a_minimal_request() -> None:
    assert parse_request([pack({"v": 1, "id": "a"}), pack(None)]) == Request("a", None)


def test_version_in_a_wider_int_encoding_is_accepted() -> None:
    raw = b"\x82\xa1v\xcc\x01\xa2id\xa1a"  # "v": uint8 1
    assert parse_request([raw, b"\x05"]).value == 5
    raw = b"\x82\xa1v\xd3" + (1).to_bytes(8, "big") + b"\xa2id\xa1a"  # int64 1
    assert parse_request([raw, b"\x05"]).value == 5


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81\xa1v", pack({"v": 1}) + b"\x00",
                                  b"\x81\xa1v\xa1\xff"])
def test_header_not_decodable_is_dropped(data: bytes) -> None:
    exc = invalid([data, pack(1)])
    assert exc.error_type == BAD_REQUEST
    assert (exc.topic, exc.id, exc.meta) == (None, None, None)


@pytest.mark.parametrize("value", [[1, 2], 1, "v", None, b"\x81"])
def test_header_not_a_map_is_dropped(value: Any) -> None:
    exc = invalid([pack(value), pack(1)])
    assert exc.error_type == BAD_REQUEST
    assert exc.topic is None


@pytest.mark.parametrize("count", [1, 3, 4])
def test_wrong_frame_count_with_usable_reply_to_is_a_bad_request(count: int) -> None:
    frames = [header(meta={"m": 1})] + [pack(1)] * (count - 1)
    exc = invalid(frames)
    assert exc.error_type == BAD_REQUEST
    assert (exc.topic, exc.id, exc.meta) == (b"t", "r1", {"m": 1})
    assert str(count) in exc.message


def test_wrong_frame_count_comes_before_the_version() -> None:
    exc = invalid([pack({"v": 9, "id": "r1"})])
    assert exc.error_type == BAD_REQUEST
    assert exc.topic == b""


@pytest.mark.parametrize("frames", [
    [pack([1])],  # header not a map
    [b"\xc1", b"", b""],  # header not msgpack
    [header(reply_to="\x00hb")],  # reserved topic
    [header(reply_to=5), pack(1), pack(1)],  # reply_to of another type
])
def test_wrong_frame_count_without_usable_reply_to_is_dropped(frames: list[bytes]) -> None:
    assert invalid(frames).topic is None


def test_no_frames_at_all_is_dropped() -> None:
    exc = invalid([])
    assert exc.error_type == BAD_REQUEST
    assert exc.topic is None


@pytest.mark.parametrize("version", [None, 0, 2, True, 1.0, "1", b"\x01", [1]])
def test_unsupported_version(version: Any) -> None:
    fields = {"id": "r1", "reply_to": "t", "meta": {"a": 1}}
    if version is not None:
        fields["v"] = version
    exc = invalid([pack(fields), pack(1)])
    assert exc.error_type == UNSUPPORTED_VERSION
    assert (exc.topic, exc.id, exc.meta) == (b"t", "r1", {"a": 1})


def test_unsupported_version_comes_before_the_id() -> None:
    exc = invalid([pack({"v": 2, "id": 5, "reply_to": "t"}), pack(1)])
    assert exc.error_type == UNSUPPORTED_VERSION
    assert exc.id is None


@pytest.mark.parametrize("rid", [None, "", b"", "x" * 256, b"x" * 256, 5, True, ["a"], {"a": 1},
                                 1.5])
def test_invalid_or_missing_id(rid: Any) -> None:
    fields: dict[str, Any] = {"v": 1, "reply_to": "t"}
    if rid is not None:
        fields["id"] = rid
    exc = invalid([pack(fields), pack(1)])
    assert exc.error_type == BAD_REQUEST
    assert exc.id is None
    assert exc.topic == b"t"
    assert "id" in exc.message


def test_id_comes_before_the_optional_fields() -> None:
    exc = invalid([pack({"v": 1, "id": 5, "ping": "yes", "deadline_ms": 1.5}), pack(1)])
    assert exc.message.startswith("id")


@pytest.mark.parametrize(("fields", "word"), [
    ({"ping": 1}, "ping"),
    ({"ping": "true"}, "ping"),
    ({"deadline_ms": 1.5}, "deadline_ms"),
    ({"deadline_ms": True}, "deadline_ms"),
    ({"deadline_ms": "5"}, "deadline_ms"),
    ({"meta": [1]}, "meta"),
    ({"meta": "m"}, "meta"),
])
def test_optional_field_of_the_wrong_type(fields: dict[str, Any], word: str) -> None:
    exc = invalid([header(**fields), pack(1)])
    assert exc.error_type == BAD_REQUEST
    assert word in exc.message
    assert (exc.topic, exc.id) == (b"t", "r1")
    assert exc.meta is None  # an invalid meta is not echoed


def test_valid_meta_is_kept_when_another_field_is_wrong() -> None:
    exc = invalid([header(ping=1, meta={"k": [1]}), pack(1)])
    assert exc.meta == {"k": [1]}


@pytest.mark.parametrize("reply_to", [5, 1.5, True, ["t"], {"t": 1}, "\x00t", b"\x00", b"\x00t"])
def test_unusable_reply_to_is_dropped(reply_to: Any) -> None:
    exc = invalid([header(reply_to=reply_to), pack(1)])
    assert exc.error_type == BAD_REQUEST
    assert exc.topic is None
    assert exc.id == "r1"


def test_nil_optional_fields_are_absent() -> None:
    frames = [header(reply_to=None, ping=None, deadline_ms=None, meta=None), pack(3)]
    assert parse_request(frames) == Request("r1", 3)


def test_unknown_and_non_string_keys_are_ignored() -> None:
    raw = pack({"v": 1, "id": "r1", "x-new": {"a": 1}, 7: "seven", b"v": 2, (1, 2): 3})
    assert parse_request([raw, pack(4)]) == Request("r1", 4)


def test_reply_to_str_and_bin_make_the_topic() -> None:
    assert invalid([header(reply_to="é"), b"\xc1"]).topic == "é".encode()
    assert invalid([header(reply_to=b"\x01b"), b"\xc1"]).topic == b"\x01b"
    assert invalid([pack({"v": 1, "id": "r1"}), b"\xc1"]).topic == b""


def test_ping_body_is_not_decoded_and_deadline_kept() -> None:
    request = parse_request([header(ping=True, deadline_ms=1, meta={"m": 1}), b"\xc1garbage"])
    assert request == Request("r1", None, "t", True, 1, {"m": 1})


def test_ping_false_is_a_normal_request() -> None:
    assert parse_request([header(ping=False), pack(2)]) == Request("r1", 2, "t")
    assert invalid([header(ping=False), b"\xc1"]).error_type == BAD_REQUEST


@pytest.mark.parametrize("body", [b"", b"\xc1", b"\x01\x02", b"\xa1\xff", b"\x92\x01"])
def test_body_not_one_valid_value(body: bytes) -> None:
    exc = invalid([header(meta={"m": 1}), body])
    assert exc.error_type == BAD_REQUEST
    assert (exc.topic, exc.id, exc.meta) == (b"t", "r1", {"m": 1})
    assert exc.message.startswith("body")


def test_optional_field_errors_come_before_the_body() -> None:
    exc = invalid([header(deadline_ms="x"), b"\xc1"])
    assert "deadline_ms" in exc.message


def test_body_map_keys_of_any_type() -> None:
    body = pack({1: "a", (1, 2): "b", None: "c", b"k": "d"})
    assert parse_request([header(), body]).value == {1: "a", (1, 2): "b", None: "c", b"k": "d"}
    # A map key that is a map: {{1: 2}: 3} (it was refused as "unhashable type: 'dict'").
    assert parse_request([header(), b"\x81\x81\x01\x02\x03"]).value == {FrozenMap({1: 2}): 3}


def test_meta_lists_stay_lists() -> None:
    request = parse_request([header(meta={"trace": [1, [2]]}), pack(1)])
    assert request.meta == {"trace": [1, [2]]}
    assert type(request.meta["trace"]) is list



_MISSING = object()
_NEAR_PLAIN = {
    "v": st.sampled_from([1, True, 1.0, 2, 0, None, _MISSING]),
    "id": st.sampled_from(["r1", "", "x" * 63, "x" * 64, "é" * 127, "é" * 128, b"\x01", b"",
                           b"x" * 255, b"x" * 256, 5, None, _MISSING]),
    "reply_to": st.sampled_from(["t", "", "é", "\x00hb", b"t", b"", b"\x00x", 3, None,
                                 _MISSING]),
    "dedup": st.sampled_from([True, False, 1, "yes", None, _MISSING]),
}


@given(st.fixed_dictionaries(_NEAR_PLAIN),
       st.sampled_from([pack(3), pack(None), pack({"a": [1]}), b"", b"\xc1", b"\x01\x02"]))
def test_a_plain_header_parses_as_under_every_rule(fields: dict[str, Any], body: bytes) -> None:
    # parse_request takes the usual header (v, id, reply_to, dedup) in a few steps; the same
    # header with an unknown key added (ignored by ZJP/1) goes through every rule in order.
    # Both must give the same request, or the same error with the same answer fields.
    given_fields = {key: value for key, value in fields.items() if value is not _MISSING}

    def outcome(header_map: dict[str, Any]) -> Any:
        try:
            return parse_request([pack(header_map), body])
        except InvalidRequest as exc:
            return (exc.error_type, exc.message, exc.topic, exc.id, exc.meta)

    assert outcome(given_fields) == outcome({**given_fields, "x-unknown": 0})



_NEAR_PLAIN_RESPONSE = {
    "v": st.sampled_from([1, True, 1.0, 2, _MISSING]),
    "id": st.sampled_from(["r1", b"\x01", 5, None, _MISSING]),
    "status": st.sampled_from(["ok", b"ok", "error", "pong", "batch", "new", _MISSING]),
    "cached": st.sampled_from([True, False, 1, None, _MISSING]),
    "processor": st.sampled_from(["p", b"p", 3, _MISSING]),
    "instance": st.sampled_from(["0" * 16, b"i", None, _MISSING]),
    "seq": st.sampled_from([1, 2**40, True, "7", None, _MISSING]),
}


@given(st.fixed_dictionaries(_NEAR_PLAIN_RESPONSE), st.sampled_from([pack(3), pack([1]), b"\xc1"]))
def test_a_plain_response_decodes_as_under_every_rule(fields: dict[str, Any], body: bytes) -> None:
    # Response.from_frames takes the usual ok answer of a zjobs processor in a few steps;
    # with an unknown key added it reads every key as it may come from any peer.
    given_fields = {key: value for key, value in fields.items() if value is not _MISSING}

    def outcome(header_map: dict[str, Any]) -> Any:
        try:
            return Response.from_frames([b"t", pack(header_map), body])
        except ProtocolError as exc:
            return str(exc)

    assert outcome(given_fields) == outcome({**given_fields, "x-unknown": 0})


# -- ResponseEncoder ---------------------------------------------------------------------------

def test_encoder_frames() -> None:
    encoder = ResponseEncoder("proc", "inst")
    topic, head, body = encoder.pong(b"t", b"id", {"m": [1]})
    assert (topic, body) == (b"t", b"\xc0")
    assert unpack(head) == {"v": 1, "id": b"id", "status": "pong", "cached": False,
                            "processor": "proc", "instance": "inst", "meta": {"m": [1]}}
    topic, head, body = encoder.error(b"", None, {"type": BAD_REQUEST, "message": "m", "x": 1})
    assert unpack(head) == {"v": 1, "id": None, "status": "error", "cached": False,
                            "processor": "proc", "instance": "inst",
                            "error": {"type": BAD_REQUEST, "message": "m", "x": 1}}
    assert body == b"\xc0"
    head = encoder.ok(b"", "r", pack(1), cached=True, meta={})[1]
    assert unpack(head)["cached"] is True
    assert unpack(head)["meta"] == {}


def test_encoder_survives_a_failed_encode() -> None:
    encoder = ResponseEncoder("p", "i")
    with pytest.raises(EncodeError) as info:
        encoder.encode_value({"a": {1, 2}})
    assert isinstance(info.value.__cause__, TypeError)
    assert encoder.encode_value([1, "x"]) == pack([1, "x"])
    assert unpack(encoder.pong(b"", "r")[1])["id"] == "r"


def test_what_zjobs_sends_in_the_worked_example_is_in_the_spec() -> None:
    from pathlib import Path

    from zjobs.wire.heartbeat import with_seq

    spec = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text()
    section = spec[spec.index("### What zjobs sends"):]
    block = section[section.index("frame 2 (header, 72 bytes)"):].split("\n\n")[0]
    rows = [line[6:] for line in block.splitlines() if re.match(r"[0-9a-f]{4}  ", line)]
    encoder = ResponseEncoder("sq", "0123456789abcdef")
    sent = with_seq(encoder.ok(b"t1", "r1", encoder.encode_value(49)), 3)
    assert bytes.fromhex("".join(rows)) == sent[1]
    assert unpack(sent[1]) == {**unpack(RESPONSE_HEADER), "seq": 3}
