"""What a receiver learns from processor heartbeats and sequence numbers: which processor
runs are alive, which are gone, and how many messages were missed (``seq`` gaps).

Transport-free: fed with frames and a clock, so liveness is tested without sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from zjobs.errors import ProtocolError
from zjobs.wire.heartbeat import RUNNING, STOPPED, Heartbeat, Load

__all__ = ["PeerState", "ProcessorMonitor"]


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
    host: str = ""
    pid: int = 0
    load: Load | None = None
    """Its load over the interval before its last heartbeat, if it sends it."""
    beats: int = 0
    """Heartbeats received from it."""

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
        peer.host, peer.pid, peer.load = beat.host, beat.pid, beat.load
        peer.beats += 1
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
