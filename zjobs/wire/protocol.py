"""ZJP/1 messages: requests and responses as frames, with the processor's validation rules.

Pure functions over bytes; nothing here touches a socket, so the sync and asyncio
sides, and any transport, share one implementation. ``docs/PROTOCOL.md`` is the
normative description; the rule numbers there match the checks in :func:`parse_request`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import msgpack

from zjobs.errors import EncodeError, ProtocolError, RemoteError
from zjobs.wire.batch import (
    BATCH,
    BATCH_TAG,
    DEFAULT_BATCH_MAX,
    EXTENSIONS_KEY,
    Batch,
    BatchResult,
    array_header,
)
from zjobs.wire.codec import decode, decode_header, encode

__all__ = [
    "BAD_REQUEST",
    "BATCH",
    "DEADLINE_EXCEEDED",
    "ERROR",
    "JOB_FAILED",
    "OK",
    "PONG",
    "RESERVED_PREFIX",
    "STATUSES",
    "UNSUPPORTED_VERSION",
    "VERSION",
    "BatchRequest",
    "ErrorInfo",
    "InvalidRequest",
    "PlainRequest",
    "Request",
    "RequestEncoder",
    "Response",
    "ResponseEncoder",
    "is_batch",
    "parse_batch",
    "parse_request",
    "parse_response",
    "read_request",
]

log = logging.getLogger(__name__)

VERSION: Final = 1
OK: Final = "ok"
ERROR: Final = "error"
PONG: Final = "pong"
STATUSES: Final = frozenset({OK, ERROR, PONG, BATCH})

BAD_REQUEST: Final = "BadRequest"
UNSUPPORTED_VERSION: Final = "UnsupportedVersion"
JOB_FAILED: Final = "JobFailed"
DEADLINE_EXCEEDED: Final = "DeadlineExceeded"

RESERVED_PREFIX: Final = b"\x00"
"""Topics starting with this byte carry the protocol's own messages, never responses."""

MAX_ID_BYTES: Final = 255

Id = str | bytes
Meta = dict[Any, Any]


def valid_id(value: object) -> bool:
    """True for a ZJP/1 id: a str of 1 to 255 UTF-8 bytes or a bin of 1 to 255 bytes."""
    if isinstance(value, str):
        # A str of at most 63 characters cannot exceed 255 UTF-8 bytes: skip the encode.
        return 0 < len(value) and (len(value) <= 63 or len(value.encode()) <= MAX_ID_BYTES)
    if isinstance(value, bytes):
        return 0 < len(value) <= MAX_ID_BYTES
    return False


def topic_bytes(reply_to: str | bytes | None) -> bytes:
    """The topic frame for a reply_to: UTF-8 for a str, empty when absent."""
    if reply_to is None:
        return b""
    return reply_to.encode() if isinstance(reply_to, str) else reply_to


@dataclass(frozen=True, slots=True)
class Request:
    """A ZJP/1 request: a header (id, reply_to, ping, deadline_ms, meta, dedup) and a value.

    A request whose value is a :class:`~zjobs.wire.batch.Batch` is encoded as a batch
    request (the batch extension): its items, each run as if it were a request of its own.
    """

    id: Id
    value: Any = None
    reply_to: str | bytes | None = None
    ping: bool = False
    deadline_ms: int | None = None
    meta: Meta | None = None
    dedup: bool = False
    """The sender may send this request again with the same id: a processor with a replay
    window remembers its response and answers a repeat from it (the ``"dedup"`` extension;
    any header value other than true counts as absent)."""

    def header(self) -> dict[str, Any]:
        """The header map, with only the optional keys that are set."""
        header: dict[str, Any] = {"v": VERSION, "id": self.id}
        if self.dedup:
            header["dedup"] = True
        if self.reply_to is not None:
            header["reply_to"] = self.reply_to
        if self.ping:
            header["ping"] = True
        if self.deadline_ms is not None:
            header["deadline_ms"] = self.deadline_ms
        if self.meta is not None:
            header["meta"] = self.meta
        return header

    def to_frames(self) -> list[bytes]:
        """Encode as the two request frames (three for a batch); raise EncodeError for a value
        msgpack cannot hold."""
        if isinstance(self.value, Batch):
            return _batch_frames(encode(self.header()), self.value, self.ping)
        return [encode(self.header()), encode(self.value)]

    @classmethod
    def from_frames(cls, frames: Sequence[bytes]) -> Request:
        """Decode and validate request frames; raise :class:`InvalidRequest` when invalid."""
        return parse_request(frames)


class RequestEncoder:
    """Encodes request frames with the constant parts of the header encoded once.

    A sender repeats the same reply_to (and flags) on every request; only the id changes.
    For requests without meta or deadline the header is a cached prefix, the id, and a
    cached suffix: the same bytes :meth:`Request.to_frames` writes, at a fraction of the
    cost. Safe to share between threads.
    """

    _MAX_SHAPES: Final = 64  # distinct (reply_to, ping, dedup) remembered

    def __init__(self) -> None:
        self._shapes: dict[tuple[str | bytes | None, bool, bool], tuple[bytes, bytes]] = {}

    def frames(self, rid: Id, value: Any, reply_to: str | bytes | None = None,
               ping: bool = False, deadline_ms: int | None = None, meta: Meta | None = None,
               dedup: bool = False) -> list[bytes]:
        """The two frames of a request; raise EncodeError for a value msgpack cannot hold."""
        if meta is not None or deadline_ms is not None:
            return Request(rid, value, reply_to, ping, deadline_ms, meta, dedup).to_frames()
        key = (reply_to, ping, dedup)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shape(reply_to, ping, dedup)
            if len(self._shapes) < self._MAX_SHAPES:
                self._shapes[key] = shape
        header = b"".join((shape[0], encode(rid), shape[1]))
        if type(value) is Batch:
            return _batch_frames(header, value, ping)
        return [header, encode(value)]

    @staticmethod
    def _shape(reply_to: str | bytes | None, ping: bool, dedup: bool) -> tuple[bytes, bytes]:
        # Split the header of a request with a one-byte id around that id (same key order as
        # Request.header), keeping the map size byte in the prefix.
        marker = Request("\x01", None, reply_to, ping, None, None, dedup)
        header = encode(marker.header())
        cut = header.index(encode("\x01"), len(encode("v")) + 2)
        return header[:cut], header[cut + 2:]


def _batch_frames(header: bytes, batch: Batch, ping: bool) -> list[bytes]:
    if ping:
        raise ValueError("a batch request cannot be a ping")
    return [header, batch.body, BATCH_TAG]


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """A batch request as a processor takes it up: the header fields and the decoded items.

    Clients send one by giving a sender a :class:`~zjobs.wire.batch.Batch` as the value.
    """

    id: Id
    items: list[Any]
    reply_to: str | bytes | None = None
    deadline_ms: int | None = None
    meta: Meta | None = None
    dedup: bool = False

    def to_frames(self) -> list[bytes]:
        """Encode as the three batch request frames: header, items, tag."""
        return Request(self.id, Batch.of(self.items), self.reply_to, False, self.deadline_ms,
                       self.meta, self.dedup).to_frames()

    @classmethod
    def from_frames(cls, frames: Sequence[bytes],
                    max_items: int = DEFAULT_BATCH_MAX) -> BatchRequest:
        """Decode and validate batch request frames (see :func:`parse_batch`)."""
        return parse_batch(frames, max_items)


def is_batch(frames: Sequence[bytes]) -> bool:
    """True for a message shaped as a batch request: three frames, the last the batch tag."""
    return len(frames) == 3 and frames[2] == BATCH_TAG


class InvalidRequest(ProtocolError):
    """A request that fails validation, with what is needed to answer it.

    Attributes:
        error_type: the ZJP/1 error type to answer with.
        topic: where to publish the error, or None when the request has no usable reply_to
            (it is then dropped).
        id: the request's id when the header had a valid one, else None.
        meta: the request's meta when the header had a valid map there, else None.
    """

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        topic: bytes | None = None,
        id: Id | None = None,
        meta: Meta | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.topic = topic
        self.id = id
        self.meta = meta


def _usable_topic(header: Mapping[Any, Any]) -> bytes | None:
    reply_to = header.get("reply_to")
    if reply_to is None:
        return b""
    if isinstance(reply_to, str | bytes):
        topic = topic_bytes(reply_to)
        return None if topic.startswith(RESERVED_PREFIX) else topic
    return None


def parse_request(frames: Sequence[bytes]) -> Request:
    """Validate request frames in the ZJP/1 order and return the request.

    Order (``docs/PROTOCOL.md``, steps 1 to 7): the header is a map with a usable
    reply_to (else the message cannot be answered: ``topic`` is None), frame count,
    version, id, the other optional fields' types, then the body (skipped for a ping).
    The first failure decides the error type.

    Raises:
        InvalidRequest: carrying the error type, and the topic, id and meta to answer with.
    """
    read = read_request(frames)
    if type(read) is tuple:
        rid, reply_to, value, dedup = read
        return Request(rid, value, reply_to, False, None, None, dedup)
    assert isinstance(read, Request)
    return read


PlainRequest: TypeAlias = tuple[Id, "str | bytes", Any, bool]
"""The usual request as :func:`read_request` returns it: ``(id, reply_to, value, dedup)``,
with no ping, deadline or meta."""


def read_request(frames: Sequence[bytes]) -> Request | PlainRequest:
    """:func:`parse_request`, except that the usual request (a header of only v, id,
    reply_to and perhaps dedup) comes back as a :data:`PlainRequest` tuple: a processor's
    hot path, where building the frozen :class:`Request` costs more than the checks.

    Raises:
        InvalidRequest: as :func:`parse_request`.
    """
    if not frames:
        raise InvalidRequest(BAD_REQUEST, "a request has 2 frames, this message has none")
    try:
        header = decode_header(frames[0])
    except ProtocolError as exc:
        raise InvalidRequest(BAD_REQUEST, str(exc)) from exc
    if len(frames) == 2 and type(header) is dict:
        plain = _plain_request(header, frames[1])
        if plain is not None:
            return plain
    if not isinstance(header, dict):
        raise InvalidRequest(BAD_REQUEST, f"header is a {type(header).__name__}, not a map")

    topic = _usable_topic(header)
    raw_id = header.get("id")
    rid: Id | None = raw_id if valid_id(raw_id) else None
    raw_meta = header.get("meta")
    meta: Meta | None = raw_meta if isinstance(raw_meta, dict) else None

    def invalid(error_type: str, message: str) -> InvalidRequest:
        return InvalidRequest(error_type, message, topic=topic, id=rid, meta=meta)

    if topic is None:
        raise invalid(BAD_REQUEST, "reply_to must be a str or bin not starting with 0x00")
    if len(frames) != 2:
        raise invalid(BAD_REQUEST, f"a request has 2 frames, this message has {len(frames)}")
    version = header.get("v")
    if type(version) is not int or version != VERSION:
        raise invalid(UNSUPPORTED_VERSION, f"unsupported protocol version {version!r}, expected 1")
    if rid is None:
        what = "missing" if raw_id is None else f"invalid ({type(raw_id).__name__})"
        raise invalid(BAD_REQUEST, f"id is {what}: a str or bin of 1 to 255 bytes is required")

    ping = header.get("ping")
    if ping is not None and not isinstance(ping, bool):
        raise invalid(BAD_REQUEST, f"ping must be a bool, not {type(ping).__name__}")
    deadline = header.get("deadline_ms")
    if deadline is not None and type(deadline) is not int:
        raise invalid(BAD_REQUEST, f"deadline_ms must be an int, not {type(deadline).__name__}")
    if raw_meta is not None and meta is None:
        raise invalid(BAD_REQUEST, f"meta must be a map, not {type(raw_meta).__name__}")
    reply_to = header.get("reply_to")

    if ping:
        return Request(rid, None, reply_to, True, deadline, meta)
    try:
        value = decode(frames[1])
    except ProtocolError as exc:
        raise invalid(BAD_REQUEST, f"body: {exc}") from exc
    return Request(rid, value, reply_to, False, deadline, meta, header.get("dedup") is True)


def _plain_request(header: dict[Any, Any], body: bytes) -> PlainRequest | None:
    # The usual request, checked in a few steps: a header of exactly v (1), id (a str of at
    # most 63 characters or a bin), reply_to (a str or bin not starting with 0x00) and
    # perhaps dedup, and a body that decodes. Anything else is None: parse_request then
    # applies every rule in order (and names the first that fails).
    size = len(header)
    if size != 3 and (size != 4 or "dedup" not in header):
        return None
    version, rid, reply_to = header.get("v"), header.get("id"), header.get("reply_to")
    if type(version) is not int or version != VERSION:
        return None
    if not ((type(rid) is str and 0 < len(rid) <= 63)
            or (type(rid) is bytes and 0 < len(rid) <= MAX_ID_BYTES)):
        return None
    if not ((type(reply_to) is str and not reply_to.startswith("\x00"))
            or (type(reply_to) is bytes and not reply_to.startswith(RESERVED_PREFIX))):
        return None
    try:
        value = decode(body)
    except ProtocolError:
        return None
    return rid, reply_to, value, size == 4 and header["dedup"] is True


def parse_batch(frames: Sequence[bytes], max_items: int = DEFAULT_BATCH_MAX) -> BatchRequest:
    """Validate a batch request: three frames, the last :data:`~zjobs.wire.batch.BATCH_TAG`.

    The header and the body are checked as those of a request (:func:`parse_request`, in
    its order); then the batch must not be a ping, and its body must be an array of 1 to
    ``max_items`` values.

    Raises:
        InvalidRequest: carrying the error type, and the topic, id and meta to answer with.
        ValueError: ``frames`` is not shaped as a batch (see :func:`is_batch`).
    """
    if not is_batch(frames):
        raise ValueError("not a batch request (3 frames, the last b'batch'): see is_batch()")
    request = parse_request(frames[:2])

    def invalid(message: str) -> InvalidRequest:
        return InvalidRequest(BAD_REQUEST, message, topic=topic_bytes(request.reply_to),
                              id=request.id, meta=request.meta)

    if request.ping:
        raise invalid("a batch request cannot be a ping")
    items = request.value
    if not isinstance(items, list):
        raise invalid(f"a batch body is an array of items, not a {type(items).__name__}")
    if not 0 < len(items) <= max_items:
        raise invalid(f"a batch holds 1 to {max_items} items, this one {len(items)}")
    return BatchRequest(request.id, items, request.reply_to, request.deadline_ms, request.meta,
                        request.dedup)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The error map of an error response: its type and message, and every key it had."""

    type: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        """The error map as sent: the details, with type and message on top."""
        return {**self.details, "type": self.type, "message": self.message}


@dataclass(frozen=True, slots=True)
class Response:
    """A ZJP/1 response: topic, header fields, and the value (for status ok)."""

    id: Id | None
    status: str
    value: Any = None
    error: ErrorInfo | None = None
    cached: bool = False
    processor: str = ""
    meta: Meta | None = None
    topic: bytes = b""
    instance: str | None = None
    replay: bool = False
    """True when the processor answered a repeated request id from its replay window
    (the job did not run again); the ``"replay"`` header key, a ZJP/1 extension."""
    seq: int | None = None
    """The processor's sequence number for this message (the ``"seq"`` extension)."""
    extensions: tuple[str, ...] = ()
    """The extensions a processor advertised in a pong (its ``"ext"`` header key), e.g.
    ``("batch",)``; empty for other responses and for processors that advertise none."""
    batch_max: int | None = None
    """Most items the processor takes in one batch (a pong's ``"batch_max"``)."""
    size: int = field(default=0, compare=False, repr=False)
    """Bytes of the body frame as received (0 for a response built, not received); not
    part of what the response says, so not compared."""

    @property
    def ok(self) -> bool:
        """True for a successful response (status "ok")."""
        return self.status == OK

    def unwrap(self) -> Any:
        """Return the value (a :class:`~zjobs.wire.batch.BatchResult` for a batch), or raise
        :class:`RemoteError` for an error response."""
        if self.error is not None:
            raise RemoteError(
                self.error.type,
                self.error.message,
                id=self.id,
                processor=self.processor,
                details=self.error.to_map(),
            )
        return self.value

    def header(self) -> dict[str, Any]:
        """The header map as sent."""
        header: dict[str, Any] = {
            "v": VERSION,
            "id": self.id,
            "status": self.status,
            "cached": self.cached,
            "processor": self.processor,
        }
        if self.instance is not None:
            header["instance"] = self.instance
        if self.error is not None:
            header["error"] = self.error.to_map()
        if self.meta is not None:
            header["meta"] = self.meta
        if self.replay:
            header["replay"] = True
        if self.seq is not None:
            header["seq"] = self.seq
        if self.extensions:
            header[EXTENSIONS_KEY] = list(self.extensions)
        if self.batch_max is not None:
            header["batch_max"] = self.batch_max
        if isinstance(self.value, BatchResult) and self.value.errors:
            header["errors"] = [[index, error.details]
                                for index, error in sorted(self.value.errors.items())]
        return header

    def to_frames(self) -> list[bytes]:
        """Encode as the three response frames: topic, header, body."""
        if self.status == BATCH:
            if not isinstance(self.value, BatchResult):
                raise TypeError("a batch response's value is a BatchResult")
            body = encode(self.value.values)
        else:
            body = encode(self.value if self.ok else None)
        return [self.topic, encode(self.header()), body]

    @classmethod
    def from_frames(cls, frames: Sequence[bytes]) -> Response:
        """Decode response frames; raise :class:`ProtocolError` if they are not ZJP/1.

        A status this version does not know is decoded as is: the caller decides to skip it.
        """
        if len(frames) != 3:
            raise ProtocolError(f"a response has 3 frames, this message has {len(frames)}")
        header = decode_header(frames[1])
        if type(header) is dict and len(header) == 7:
            plain = _plain_response(header, frames)
            if plain is not None:
                return plain
        version = header.get("v") if isinstance(header, dict) else None
        if type(version) is not int or version != VERSION:  # a bool or float is not 1
            raise ProtocolError("response header is not a ZJP/1 map")
        status = header.get("status")
        if not isinstance(status, str):
            raise ProtocolError("response status is not a str")
        rid = header.get("id")
        error = None
        if status == ERROR:
            raw = header.get("error")
            if not isinstance(raw, dict):
                raise ProtocolError("error response without an error map")
            error = ErrorInfo(str(raw.get("type", "")), str(raw.get("message", "")), dict(raw))
        meta = header.get("meta")
        instance = header.get("instance")
        processor = header.get("processor")
        processor = processor if isinstance(processor, str) else ""
        seq = header.get("seq")
        rid = rid if isinstance(rid, str | bytes) else None
        cached = header.get("cached") is True
        value: Any = None
        extensions: tuple[str, ...] = ()
        batch_max = None
        if status == OK:
            value = decode(frames[2])
        elif status == BATCH:
            value = _batch_result(header, decode(frames[2]), rid, processor, cached)
        elif status == PONG:
            ext = header.get(EXTENSIONS_KEY)
            if isinstance(ext, list):
                extensions = tuple(name for name in ext if isinstance(name, str))
            most = header.get("batch_max")
            batch_max = most if type(most) is int and most > 0 else None
        return cls(
            id=rid,
            status=status,
            value=value,
            error=error,
            cached=cached,
            processor=processor,
            meta=meta if isinstance(meta, dict) else None,
            topic=bytes(frames[0]),
            instance=instance if isinstance(instance, str) else None,
            replay=header.get("replay") is True,
            seq=seq if type(seq) is int else None,
            extensions=extensions,
            batch_max=batch_max,
            size=len(frames[2]),
        )


def _plain_response(header: dict[Any, Any], frames: Sequence[bytes]) -> Response | None:
    # The usual answer, as zjobs processors send it: an ok header of exactly v (1), id,
    # status, cached, processor, instance and seq, each of its type. Anything else is None:
    # from_frames then reads every key as it may come from any peer.
    rid, processor, instance, seq = (header.get("id"), header.get("processor"),
                                     header.get("instance"), header.get("seq"))
    version, cached = header.get("v"), header.get("cached")
    if (header.get("status") != OK or type(version) is not int or version != VERSION
            or type(rid) not in (str, bytes) or type(processor) is not str
            or type(instance) is not str or type(seq) is not int or type(cached) is not bool):
        return None
    body = frames[2]
    return Response(rid, OK, decode(body), None, cached, processor, None, bytes(frames[0]),
                    instance, False, seq, (), None, len(body))


def _batch_result(header: Mapping[Any, Any], values: Any, rid: Id | None, processor: str,
                  cached: bool) -> BatchResult:
    # The body is every item's value; "errors" lists [index, error map] for the failed ones.
    if not isinstance(values, list):
        raise ProtocolError("a batch response's body is not an array")
    raw = header.get("errors")
    errors: dict[int, RemoteError] = {}
    if raw is not None:
        if not isinstance(raw, list):
            raise ProtocolError("a batch response's errors are not an array")
        for entry in raw:
            if (not isinstance(entry, list) or len(entry) != 2 or type(entry[0]) is not int
                    or not 0 <= entry[0] < len(values) or not isinstance(entry[1], dict)):
                raise ProtocolError(f"a batch response's error entry is malformed: {entry!r}")
            index, error = entry
            errors[index] = RemoteError(str(error.get("type", "")), str(error.get("message", "")),
                                        id=rid, processor=processor, details=dict(error))
    return BatchResult(values, errors, cached)


def parse_response(
    frames: Sequence[bytes],
    on_sequence: Callable[[str | None, int | None], object] | None = None,
) -> Response | None:
    """The response in ``frames``, or None for a message a receiver skips.

    Skipped: the protocol's own messages (topics starting with 0x00, e.g. heartbeats),
    frames that are not a ZJP/1 response (logged at debug level), and responses of a
    status this version does not know.

    Args:
        frames: a message as received, topic frame first.
        on_sequence: called with the instance and sequence number of every response
            decoded, one of an unknown status too (so a monitor sees no false gap).
    """
    if frames and frames[0].startswith(RESERVED_PREFIX):
        return None
    try:
        response = Response.from_frames(frames)
    except ProtocolError as exc:
        log.debug("skipped a message that is not a ZJP/1 response: %s", exc)
        return None
    if on_sequence is not None:
        on_sequence(response.instance, response.seq)
    return response if response.status in STATUSES else None


class ResponseEncoder:
    """Builds response frames for one processor, with the constant header parts encoded once.

    Not thread-safe (it reuses one msgpack packer): each processor loop owns one.

    Args:
        processor: the processor's name.
        instance: the processor run's id.
        pong_extra: entries added to every pong's header: what the processor advertises
            (e.g. ``{"ext": ["batch"], "batch_max": 4096}``).
    """

    def __init__(self, processor: str, instance: str,
                 pong_extra: Mapping[str, Any] | None = None) -> None:
        self.processor = processor
        self.instance = instance
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        pack = self._packer.pack
        # v, processor and instance are the same in every header; status and cached come in
        # few combinations. Each prefix lacks only the map size, the id and the optional keys.
        common = pack("v") + pack(VERSION) + pack("processor") + pack(processor)
        common += pack("instance") + pack(instance)
        self._prefix = {
            (status, cached): common + pack("status") + pack(status) + pack("cached") + pack(cached)
            for status in (OK, ERROR, PONG, BATCH)
            for cached in (False, True)
        }
        self._id_key = pack("id")
        self._meta_key = pack("meta")
        self._error_key = pack("error")
        self._errors_key = pack("errors")
        self._nil = pack(None)
        # An ok answer without meta, the usual one: all but the id's value, map size included.
        self._ok_head = {cached: self._packer.pack_map_header(6) + self._prefix[OK, cached]
                         + self._id_key for cached in (False, True)}
        extra = dict(pong_extra or {})
        self._pong_extra = (b"".join(pack(key) + pack(value) for key, value in extra.items()),
                            len(extra))

    def _header(self, status: str, cached: bool, rid: Id | None, meta: Meta | None,
                error: Any, error_key: bytes = b"", extra: tuple[bytes, int] = (b"", 0)
                ) -> bytes:
        pack = self._packer.pack
        size = 6 + (meta is not None) + (error is not None) + extra[1]
        parts = [self._packer.pack_map_header(size), self._prefix[status, cached],
                 self._id_key, pack(rid)]
        if meta is not None:
            parts += (self._meta_key, pack(meta))
        if error is not None:
            parts += (error_key or self._error_key, pack(error))
        if extra[1]:
            parts.append(extra[0])
        return b"".join(parts)

    def ok(self, topic: bytes, rid: Id, body: bytes, *, cached: bool = False,
           meta: Meta | None = None) -> list[bytes]:
        """Frames of an ok response whose value is already encoded as ``body``."""
        if meta is None:
            return [topic, self._ok_head[cached] + self._packer.pack(rid), body]
        return [topic, self._header(OK, cached, rid, meta, None), body]

    def pong(self, topic: bytes, rid: Id, meta: Meta | None = None) -> list[bytes]:
        """Frames of a pong (with the ``pong_extra`` entries)."""
        return [topic, self._header(PONG, False, rid, meta, None, extra=self._pong_extra),
                self._nil]

    def batch(self, topic: bytes, rid: Id, bodies: Sequence[bytes],
              errors: Sequence[tuple[int, dict[str, Any]]], *, cached: bool = False,
              meta: Meta | None = None) -> list[bytes]:
        """Frames of a batch response.

        Args:
            bodies: every item's encoded value, in item order (nil for a failed item).
            errors: ``(index, error map)`` for each failed item, by ascending index.
            cached: every item's value came from the cache.
        """
        header = self._header(BATCH, cached, rid, meta,
                              [list(entry) for entry in errors] if errors else None,
                              self._errors_key)
        return [topic, header, b"".join((array_header(len(bodies)), *bodies))]

    def error(self, topic: bytes, rid: Id | None, error: dict[str, Any],
              meta: Meta | None = None) -> list[bytes]:
        """Frames of an error response; ``error`` is the error map (type, message, ...)."""
        return [topic, self._header(ERROR, False, rid, meta, error), self._nil]

    def encode_value(self, value: Any) -> bytes:
        """Encode a response value with the reused packer.

        Raises:
            EncodeError: msgpack cannot represent ``value`` (from what msgpack raised);
                ZJP/1 names the JobFailed answer after it.
        """
        try:
            return self._packer.pack(value)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"cannot encode the job's {type(value).__name__} as msgpack: "
                              f"{exc}") from exc
