"""The batch extension on the wire: golden bytes from docs/PROTOCOL.md, encoding and parsing
(zjobs.wire.batch and the batch parts of zjobs.wire.protocol), without sockets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from zjobs.errors import EncodeError, ProtocolError, RemoteError
from zjobs.wire.batch import BATCH, BATCH_TAG, Batch, BatchResult, array_header
from zjobs.wire.protocol import (
    BAD_REQUEST,
    BatchRequest,
    InvalidRequest,
    Request,
    RequestEncoder,
    Response,
    ResponseEncoder,
    is_batch,
    parse_batch,
    parse_request,
    parse_response,
)

SPEC = Path(__file__).parent.parent / "docs" / "PROTOCOL.md"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def spec_dump(title: str) -> bytes:
    """The hex dump under ``title`` in the spec's "A batch, byte by byte" section."""
    text = SPEC.read_text()
    section = text[text.index("### A batch, byte by byte"):]
    block = section[section.index(title):].split("\n\n")[0]
    rows = [line[6:] for line in block.splitlines() if re.match(r"[0-9a-f]{4}  ", line)]
    return bytes.fromhex("".join(rows))


ITEMS = [7, 8, {"fail": "no"}]
ERROR_MAP = {"type": "JobFailed", "message": "Error: no", "exception": "Error"}
INSTANCE = "0123456789abcdef"


# -- golden bytes: the spec's example ---------------------------------------------------------

def test_spec_batch_request_is_what_zjobs_encodes() -> None:
    frames = [spec_dump("batch frame 1"), spec_dump("batch frame 2"), spec_dump("batch frame 3")]
    assert frames == [pack({"v": 1, "id": "b1", "reply_to": "t1"}), pack(ITEMS), b"batch"]
    assert Request("b1", Batch.of(ITEMS), reply_to="t1").to_frames() == frames
    assert RequestEncoder().frames("b1", Batch.of(ITEMS), reply_to="t1") == frames
    assert BatchRequest("b1", ITEMS, reply_to="t1").to_frames() == frames
    assert [len(frame) for frame in frames] == [22, 12, 5]


def test_spec_batch_response_is_what_zjobs_encodes() -> None:
    header = spec_dump("batch response frame 2")
    body = spec_dump("batch response frame 3")
    assert spec_dump("batch response frame 1") == b"t1"
    assert header == pack({"v": 1, "id": "b1", "status": "batch", "cached": False,
                           "processor": "sq", "instance": INSTANCE, "errors": [[2, ERROR_MAP]]})
    assert body == pack([49, 64, None])
    result = BatchResult([49, 64, None], {2: RemoteError("JobFailed", "Error: no",
                                                         details=ERROR_MAP)})
    response = Response(id="b1", status=BATCH, value=result, processor="sq", instance=INSTANCE,
                        topic=b"t1")
    assert response.to_frames() == [b"t1", header, body]
    assert len(header) == 130
    # The processors' encoder writes the keys in another order: equal once decoded.
    encoder = ResponseEncoder("sq", INSTANCE)
    frames = encoder.batch(b"t1", "b1", [pack(49), pack(64), pack(None)], [(2, ERROR_MAP)])
    assert frames[0] == b"t1" and frames[2] == body
    assert unpack(frames[1]) == unpack(header)


def test_spec_pong_advertises_the_extension() -> None:
    header = spec_dump("pong header")
    assert header == pack({"v": 1, "id": "p1", "status": "pong", "cached": False,
                           "processor": "sq", "instance": INSTANCE, "ext": ["batch"],
                           "batch_max": 4096})
    response = Response(id="p1", status="pong", processor="sq", instance=INSTANCE,
                        extensions=("batch",), batch_max=4096, topic=b"t1")
    assert response.to_frames()[1] == header
    encoder = ResponseEncoder("sq", INSTANCE, {"ext": ["batch"], "batch_max": 4096})
    assert unpack(encoder.pong(b"t1", "p1")[1]) == unpack(header)
    assert len(header) == 93


def test_spec_response_decodes_to_per_item_results() -> None:
    frames = [b"t1", spec_dump("batch response frame 2"), spec_dump("batch response frame 3")]
    response = parse_response(frames)
    assert response is not None
    assert (response.status, response.id, response.processor) == (BATCH, "b1", "sq")
    result = response.unwrap()
    assert isinstance(result, BatchResult)
    assert result.values == [49, 64, None]
    error = result.errors[2]
    assert (error.type, error.message, error.exception) == ("JobFailed", "Error: no", "Error")
    assert (error.id, error.processor) == ("b1", "sq")
    assert result.outcomes() == [49, 64, error]
    assert not result.ok
    with pytest.raises(RemoteError):
        result.unwrap()


# -- Batch and BatchResult -------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 15, 16, 65535, 65536])
def test_array_header_matches_msgpack(count: int) -> None:
    assert array_header(count) == pack([None] * count)[: len(array_header(count))]
    assert unpack(array_header(count) + b"\xc0" * count) == [None] * count


def test_batch_of_encoded_items_equals_batch_of_values() -> None:
    values = [1, "two", [3.0], {"k": b"v"}] * 5
    assert Batch.of_encoded([pack(v) for v in values]) == Batch.of(values)
    assert Batch.of(tuple(values)) == Batch.of(values)


def test_batch_refuses_no_items_and_unencodable_items() -> None:
    with pytest.raises(ValueError):
        Batch.of([])
    with pytest.raises(EncodeError):
        Batch.of([1, {2, 3}])


def test_batch_request_cannot_be_a_ping() -> None:
    with pytest.raises(ValueError):
        Request("b", Batch.of([1]), ping=True).to_frames()
    with pytest.raises(ValueError):
        RequestEncoder().frames("b", Batch.of([1]), ping=True)


def test_batch_with_meta_deadline_and_dedup_round_trips() -> None:
    batch = BatchRequest(b"\x01bin", [1, None, "x"], reply_to=b"topic", deadline_ms=5,
                         meta={"trace": 1}, dedup=True)
    frames = batch.to_frames()
    assert is_batch(frames)
    assert parse_batch(frames) == batch
    assert BatchRequest.from_frames(frames) == batch
    assert RequestEncoder().frames(b"\x01bin", Batch.of([1, None, "x"]), reply_to=b"topic",
                                   deadline_ms=5, meta={"trace": 1}, dedup=True) == frames


def test_result_without_errors_unwraps_to_its_values() -> None:
    result = BatchResult([1, 2])
    assert result.ok and result.unwrap() == [1, 2] and result.outcomes() == [1, 2]
    assert len(result) == 2


# -- parse_batch: what a processor with the extension refuses ---------------------------------

def refused(frames: list[bytes], max_items: int = 10) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_batch(frames, max_items)
    return info.value


def header(**fields: Any) -> bytes:
    return pack({"v": 1, "id": "b", "reply_to": "t", **fields})


@pytest.mark.parametrize(("frames", "why"), [
    ([header(ping=True), pack([1]), BATCH_TAG], "ping"),
    ([header(), pack(1), BATCH_TAG], "array"),
    ([header(), pack({"a": 1}), BATCH_TAG], "array"),
    ([header(), pack([]), BATCH_TAG], "1 to 10"),
    ([header(), pack(list(range(11))), BATCH_TAG], "1 to 10"),
    ([header(), b"\x93\x01", BATCH_TAG], "body"),
    ([header(deadline_ms="soon"), pack([1]), BATCH_TAG], "deadline_ms"),
])
def test_invalid_batches_are_bad_requests_with_id_and_topic(frames: list[bytes],
                                                            why: str) -> None:
    error = refused(frames)
    assert error.error_type == BAD_REQUEST
    assert why in error.message
    assert (error.topic, error.id) == (b"t", "b")


def test_batch_header_is_checked_as_a_request_header() -> None:
    assert refused([pack({"v": 2, "id": "b", "reply_to": "t"}), pack([1]), BATCH_TAG]
                   ).error_type == "UnsupportedVersion"
    dropped = refused([header(reply_to=b"\x00x"), pack([1]), BATCH_TAG])
    assert dropped.topic is None  # nowhere to answer


def test_parse_batch_needs_the_batch_shape() -> None:
    with pytest.raises(ValueError):
        parse_batch([header(), pack([1])])
    assert not is_batch([header(), pack([1]), b"other"])
    assert not is_batch([header(), pack([1]), BATCH_TAG, b""])


def test_a_base_processor_refuses_a_batch_by_its_frame_count() -> None:
    # What a processor without the extension does: parse_request sees 3 frames.
    frames = Request("b1", Batch.of([1, 2]), reply_to="t1", meta={"m": 1}).to_frames()
    with pytest.raises(InvalidRequest) as info:
        parse_request(frames)
    error = info.value
    assert (error.error_type, error.topic, error.id, error.meta) == (
        BAD_REQUEST, b"t1", "b1", {"m": 1})
    assert "3" in error.message


# -- batch responses from the wire ------------------------------------------------------------

def batch_response(header_fields: dict[str, Any], body: Any) -> list[bytes]:
    base = {"v": 1, "id": "b", "status": "batch", "cached": False, "processor": "p"}
    return [b"t", pack({**base, **header_fields}), pack(body)]


@pytest.mark.parametrize(("fields", "body"), [
    ({}, 5),
    ({"errors": {"0": {}}}, [1]),
    ({"errors": [[1, {"type": "JobFailed"}]]}, [1]),
    ({"errors": [[0]]}, [1]),
    ({"errors": [[True, {}]]}, [1]),
    ({"errors": [[0, "boom"]]}, [1]),
])
def test_malformed_batch_responses_are_protocol_errors(fields: dict[str, Any],
                                                       body: Any) -> None:
    frames = batch_response(fields, body)
    with pytest.raises(ProtocolError):
        Response.from_frames(frames)
    assert parse_response(frames) is None  # a receiver skips it


def test_cached_batch_response() -> None:
    response = Response.from_frames(batch_response({"cached": True}, [1, 2]))
    assert response.cached and response.value == BatchResult([1, 2], cached=True)


def test_pong_extensions_are_read_leniently() -> None:
    def pong(**fields: Any) -> Response:
        return Response.from_frames([b"t", pack({"v": 1, "id": "p", "status": "pong",
                                                 "processor": "p", **fields}), b"\xc0"])

    assert pong().extensions == () and pong().batch_max is None
    assert pong(ext=["batch", 3, "other"]).extensions == ("batch", "other")
    assert pong(ext="batch").extensions == ()
    assert pong(batch_max=0).batch_max is None
    assert pong(batch_max=True).batch_max is None
    assert pong(batch_max=99).batch_max == 99
