"""Processor heartbeats and sequence numbers (a ZJP/1 extension): the wire format.

What a receiver learns from them is :mod:`zjobs.core.monitor`.

A processor numbers every message it publishes (the ``"seq"`` header key: 1, 2, 3, ...
per PUB socket and processor run) and publishes a heartbeat every interval on the reserved
topic :data:`HEARTBEAT_TOPIC`, with its name, instance and counters. A receiver that
subscribes to that topic knows which processors are alive (a heartbeat within a few
intervals) and which are gone (silent, or stopped); one that subscribes to everything
(``""``) also sees every sequence number, so a gap means it missed messages.

Wire format (``docs/PROTOCOL.md``, "Extension: heartbeats and sequence numbers"), 3 frames:
topic ``b"\\x00heartbeat"``; header map ``{"v": 1, "type": "heartbeat", "processor": str,
"instance": str, "seq": int, "interval_ms": int, "time_ms": int, "state": "running" |
"stopped"}``, optionally with ``"host"``, ``"pid"`` and ``"load"`` (a :class:`Load` map:
what a watcher shows); body: the counters as a map of str to int. Pure functions and plain
objects: nothing here touches a socket.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from zjobs.errors import ProtocolError
from zjobs.wire.codec import decode, decode_header, encode, extend_map
from zjobs.wire.protocol import RESERVED_PREFIX, VERSION

__all__ = [
    "HEARTBEAT_TOPIC",
    "RUNNING",
    "STOPPED",
    "Heartbeat",
    "Load",
    "with_seq",
]

HEARTBEAT_TOPIC: Final = RESERVED_PREFIX + b"heartbeat"
"""The topic frame of heartbeats; subscribe to it to receive them."""

RUNNING: Final = "running"
STOPPED: Final = "stopped"

_SEQ_KEY: Final = encode("seq")
_UINT8 = struct.Struct(">BB")
_UINT16 = struct.Struct(">BH")
_UINT32 = struct.Struct(">BI")
_UINT64 = struct.Struct(">BQ")


def _uint(value: int) -> bytes:
    # The shortest msgpack encoding of a non-negative int, without a packer call.
    if value < 0x80:
        return bytes((value,))
    if value < 0x100:
        return _UINT8.pack(0xCC, value)
    if value < 0x10000:
        return _UINT16.pack(0xCD, value)
    if value < 0x100000000:
        return _UINT32.pack(0xCE, value)
    return _UINT64.pack(0xCF, value)


def with_seq(frames: Sequence[bytes], seq: int) -> list[bytes]:
    """A copy of published frames (topic, header, ...) whose header also has ``"seq"``."""
    header = frames[1]
    first = header[0] if header else 0
    if 0x80 <= first < 0x8F:  # a small map, the usual case: on every publish
        header = bytes((first + 1,)) + header[1:] + _SEQ_KEY + _uint(seq)
    else:
        header = extend_map(header, _SEQ_KEY + _uint(seq), 1)
    return [frames[0], header, *frames[2:]]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


@dataclass(frozen=True, slots=True)
class Load:
    """What a processor is doing now and did over the last heartbeat interval (the window).

    Durations are of job runs (cache lookups included): from taking a request up to its
    response being ready. Pongs, bad requests, expired deadlines and replays are not jobs.
    ``p50_us``/``p99_us`` are None when no job finished in the window.
    """

    in_flight: int = 0
    """Requests taken up and not answered yet."""
    window_ms: int = 0
    """How long the window lasted (since the previous heartbeat)."""
    jobs: int = 0
    """Jobs finished in the window."""
    busy_us: int = 0
    """Time spent in those jobs, summed (above ``window_ms`` with concurrent jobs)."""
    p50_us: int | None = None
    p99_us: int | None = None

    def to_map(self) -> dict[str, int]:
        """The ``"load"`` header map (percentiles only when there were jobs)."""
        out = {"in_flight": self.in_flight, "window_ms": self.window_ms, "jobs": self.jobs,
               "busy_us": self.busy_us}
        if self.p50_us is not None:
            out["p50_us"] = self.p50_us
        if self.p99_us is not None:
            out["p99_us"] = self.p99_us
        return out

    @classmethod
    def from_map(cls, value: Any) -> Load | None:
        """Read a ``"load"`` header map; None when it is not a map or a field is mistyped
        (the rest of the heartbeat is still good: a watcher then shows no load)."""
        if not isinstance(value, dict):
            return None
        fields = [_count(value.get(key, 0))
                  for key in ("in_flight", "window_ms", "jobs", "busy_us")]
        p50, p99 = value.get("p50_us"), value.get("p99_us")
        if any(f is None for f in fields) or any(
                p is not None and _count(p) is None for p in (p50, p99)):
            return None
        in_flight, window_ms, jobs, busy_us = (f or 0 for f in fields)
        return cls(in_flight, window_ms, jobs, busy_us, p50, p99)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat: who sent it, when the next is due, and what it has done so far.

    ``seq`` is filled in by the publisher (it numbers every message); 0 before that.
    ``host``, ``pid`` and ``load`` are optional on the wire: "" / 0 / None when absent.
    """

    processor: str
    instance: str
    interval_ms: int
    state: str = RUNNING
    counters: Mapping[str, int] = field(default_factory=dict)
    time_ms: int = field(default_factory=_wall_ms)
    seq: int = 0
    host: str = ""
    pid: int = 0
    load: Load | None = None

    def header(self) -> dict[str, Any]:
        """The header map as sent (without ``"seq"``, which the publisher adds)."""
        header: dict[str, Any] = {
            "v": VERSION, "type": "heartbeat", "processor": self.processor,
            "instance": self.instance, "interval_ms": self.interval_ms,
            "time_ms": self.time_ms, "state": self.state}
        if self.host:
            header["host"] = self.host
        if self.pid:
            header["pid"] = self.pid
        if self.load is not None:
            header["load"] = self.load.to_map()
        return header

    def to_frames(self) -> list[bytes]:
        """The three frames: topic, header, counters (``"seq"`` is added at publishing)."""
        return [HEARTBEAT_TOPIC, encode(self.header()), encode(dict(self.counters))]

    @classmethod
    def from_frames(cls, frames: Sequence[bytes]) -> Heartbeat:
        """Decode heartbeat frames.

        Raises:
            ProtocolError: not a heartbeat (wrong topic, frame count, header or field types).
        """
        if len(frames) != 3 or bytes(frames[0]) != HEARTBEAT_TOPIC:
            raise ProtocolError("not a heartbeat: wrong topic or frame count")
        header = decode_header(frames[1])
        if (not isinstance(header, dict) or type(header.get("v")) is not int
                or header.get("v") != VERSION or header.get("type") != "heartbeat"):
            raise ProtocolError("heartbeat header is not a ZJP/1 heartbeat map")
        processor, instance = header.get("processor"), header.get("instance")
        interval, seq = header.get("interval_ms"), header.get("seq", 0)
        sent, state = header.get("time_ms", 0), header.get("state", RUNNING)
        if not (isinstance(processor, str) and isinstance(instance, str) and instance
                and type(interval) is int and interval > 0 and type(seq) is int
                and type(sent) is int and isinstance(state, str)):
            raise ProtocolError("heartbeat header has a missing or mistyped field")
        body = decode(frames[2])
        counters = ({k: v for k, v in body.items() if isinstance(k, str) and type(v) is int}
                    if isinstance(body, dict) else {})
        # The optional fields are read leniently: a mistyped one is dropped, not the beat.
        host, pid = header.get("host", ""), header.get("pid", 0)
        return cls(processor, instance, interval, state, counters, sent, seq,
                   host if isinstance(host, str) else "", _count(pid) or 0,
                   Load.from_map(header["load"]) if "load" in header else None)
