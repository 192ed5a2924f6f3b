"""Processor heartbeats and sequence numbers (a ZJP/1 extension), and what a receiver
learns from them.

A processor numbers every message it publishes (the ``"seq"`` header key: 1, 2, 3, ...
per PUB socket and processor run) and publishes a heartbeat every interval on the reserved
topic :data:`HEARTBEAT_TOPIC`, with its name, instance and counters. A receiver that
subscribes to that topic knows which processors are alive (a heartbeat within a few
intervals) and which are gone (silent, or stopped); one that subscribes to everything
(``""``) also sees every sequence number, so a gap means it missed messages.

Wire format (``docs/PROTOCOL.md``, "Extension: heartbeats and sequence numbers"), 3 frames:
topic ``b"\\x00heartbeat"``; header map ``{"v": 1, "type": "heartbeat", "processor": str,
"instance": str, "seq": int, "interval_ms": int, "time_ms": int, "state": "running" |
"stopped"}``; body: the counters as a map of str to int. Pure functions and plain objects:
nothing here touches a socket.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from zjobs.codec import decode, decode_header, encode, extend_map
from zjobs.errors import ProtocolError
from zjobs.protocol import RESERVED_PREFIX, VERSION

__all__ = [
    "HEARTBEAT_TOPIC",
    "RUNNING",
    "STOPPED",
    "Heartbeat",
    "PeerState",
    "ProcessorMonitor",
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


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat: who sent it, when the next is due, and what it has done so far.

    ``seq`` is filled in by the publisher (it numbers every message); 0 before that.
    """

    processor: str
    instance: str
    interval_ms: int
    state: str = RUNNING
    counters: Mapping[str, int] = field(default_factory=dict)
    time_ms: int = field(default_factory=_wall_ms)
    seq: int = 0

    def header(self) -> dict[str, Any]:
        """The header map as sent (without ``"seq"``, which the publisher adds)."""
        return {"v": VERSION, "type": "heartbeat", "processor": self.processor,
                "instance": self.instance, "interval_ms": self.interval_ms,
                "time_ms": self.time_ms, "state": self.state}

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
        return cls(processor, instance, interval, state, counters, sent, seq)


@dataclass(slots=True)
class PeerState:
    """What a receiver knows about one processor run (one instance)."""

    instance: str
    processor: str = ""
    interval_s: float | None = None
    """The heartbeat interval it announced; None until its first heartbeat."""
    last_heard: float = 0.0
    """Monotonic time of its last heartbeat."""
    state: str = RUNNING
    seq: int | None = None
    """The last sequence number seen from it."""
    gaps: int = 0
    """Messages missed, judged by sequence numbers (meaningful for a receiver of everything)."""
    counters: Mapping[str, int] = field(default_factory=dict)

    def alive(self, now: float, liveness: int) -> bool:
        """Not stopped, and heard within ``liveness`` heartbeat intervals (a processor known
        only from sequence numbers, never from a heartbeat, counts as alive)."""
        if self.state == STOPPED:
            return False
        if self.interval_s is None:
            return True
        return now - self.last_heard <= liveness * self.interval_s


class ProcessorMonitor:
    """Tracks the processors a receiver hears from: liveness by heartbeats, gaps by ``seq``.

    Feed it with :meth:`heartbeat` (heartbeat frames) and :meth:`sequence` (the instance
    and seq of every other message); use it from one thread.

    Args:
        liveness: a processor is gone after this many heartbeat intervals without one.
        clock: monotonic seconds.
        max_peers: most processor runs remembered (the longest gone are forgotten first).
    """

    def __init__(self, liveness: int = 3, *, clock: Callable[[], float] = time.monotonic,
                 max_peers: int = 256) -> None:
        if liveness < 1:
            raise ValueError("liveness must be at least 1 interval")
        self.liveness = liveness
        self.max_peers = max_peers
        self.gaps = 0
        """Messages missed over all processors, judged by sequence numbers."""
        self.heartbeats = 0
        """Heartbeats received."""
        self._clock = clock
        self._peers: dict[str, PeerState] = {}

    def __repr__(self) -> str:
        now = self._clock()
        alive = sum(peer.alive(now, self.liveness) for peer in self._peers.values())
        return f"<ProcessorMonitor {alive}/{len(self._peers)} alive, {self.gaps} gaps>"

    def __iter__(self) -> Iterator[PeerState]:
        return iter(list(self._peers.values()))

    def peer(self, instance: str) -> PeerState | None:
        """What is known about one processor run."""
        return self._peers.get(instance)

    def _peer(self, instance: str) -> PeerState:
        peer = self._peers.get(instance)
        if peer is None:
            if len(self._peers) >= self.max_peers:
                self._forget_one()
            peer = self._peers[instance] = PeerState(instance)
        return peer

    def _forget_one(self) -> None:
        now = self._clock()
        gone = [p for p in self._peers.values() if not p.alive(now, self.liveness)]
        victim = min(gone or self._peers.values(), key=lambda p: p.last_heard)
        del self._peers[victim.instance]

    def sequence(self, instance: str | None, seq: int | None) -> int:
        """Note a message's sequence number; return how many messages were skipped before it."""
        if instance is None or seq is None:
            return 0
        peer = self._peer(instance)
        missed = 0
        if peer.seq is not None and seq > peer.seq + 1:
            missed = seq - peer.seq - 1
            peer.gaps += missed
            self.gaps += missed
        if peer.seq is None or seq > peer.seq:
            peer.seq = seq
        return missed

    def heartbeat(self, frames: Sequence[bytes]) -> Heartbeat | None:
        """Take in a message from the heartbeat topic; return it, or None if it is not valid."""
        try:
            beat = Heartbeat.from_frames(frames)
        except ProtocolError:
            return None
        self.heartbeats += 1
        self.sequence(beat.instance, beat.seq or None)
        peer = self._peer(beat.instance)
        peer.processor = beat.processor
        peer.interval_s = beat.interval_ms / 1000
        peer.last_heard = self._clock()
        peer.state = beat.state
        peer.counters = beat.counters
        return beat

    def alive(self) -> list[PeerState]:
        """The processor runs heard from recently and not stopped."""
        now = self._clock()
        return [peer for peer in self._peers.values() if peer.alive(now, self.liveness)]

    def all_gone(self) -> bool:
        """True when heartbeats were heard from at least one processor and none is alive now."""
        now = self._clock()
        heard = False
        for peer in self._peers.values():
            if peer.interval_s is None and peer.state != STOPPED:
                continue  # known only from sequence numbers: no liveness to judge
            heard = True
            if peer.alive(now, self.liveness):
                return False
        return heard
