"""Duplicate suppression: a bounded window of recent requests and the responses they got.

A client that retries resends a request with the same id. If the first attempt reached
the processor (only its response was late or lost), running the job again would repeat
its side effects. The processor instead remembers, for each recent ``(reply_to topic,
id)``, the response it published, and answers a repeat from this window, marked as a
replay (the ``"replay": true`` response header key, a ZJP/1 extension).

The window is bounded three ways: by entries (``size``), by age (``ttl_s``, counted from
when the original was taken up) and by the bytes of the responses it holds
(``max_bytes``); the oldest entries go first. Requests whose job is still running are kept
apart (they are bounded by the processor's concurrency): a repeat that arrives meanwhile
is *joined* to the original, whose single response answers both.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Final, NamedTuple

from zjobs.wire.codec import encode, extend_map
from zjobs.wire.protocol import Id

__all__ = ["JOINED", "ReplayWindow", "Stored", "mark_replay"]

Key = tuple[bytes, Id]
"""A request's identity for duplicate detection: its reply_to topic and its id."""

_REPLAY_ENTRY: Final = encode("replay") + encode(True)


class _Joined(enum.Enum):
    JOINED = "JOINED"

    def __repr__(self) -> str:
        return "zjobs.core.dedup.JOINED"


JOINED: Final = _Joined.JOINED
"""Returned by :meth:`ReplayWindow.claim` for a repeat of a request that is still running."""


class Stored(NamedTuple):
    """A response remembered by the window: its frames, and whether it was a failure."""

    frames: list[bytes]
    failed: bool


class _Entry:
    __slots__ = ("failed", "frames", "nbytes", "taken_at")

    def __init__(self, taken_at: float, frames: list[bytes], failed: bool) -> None:
        self.taken_at = taken_at
        self.frames = frames
        self.failed = failed
        self.nbytes = sum(len(frame) for frame in frames)


def mark_replay(frames: list[bytes]) -> list[bytes]:
    """The response frames with ``"replay": true`` added to the header."""
    return [frames[0], extend_map(frames[1], _REPLAY_ENTRY, 1), *frames[2:]]


class ReplayWindow:
    """Recent requests by ``(topic, id)`` with their responses, bounded in size, age and bytes.

    Use it from one thread (the processor's loop). A processor calls :meth:`claim` when it
    takes a request up and :meth:`complete` with the response it publishes.

    Args:
        size: most responses remembered; 0 remembers none (but still joins repeats of
            running requests).
        ttl_s: how long after the original was taken up a repeat is still recognised.
        max_bytes: most bytes of response frames remembered.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        size: int = 10_000,
        ttl_s: float = 60.0,
        max_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 0 or ttl_s < 0 or max_bytes < 0:
            raise ValueError("size, ttl_s and max_bytes must not be negative")
        self.size = size
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.nbytes = 0
        """Bytes of response frames held now."""
        self._clock = clock
        self._done: dict[Key, _Entry] = {}  # insertion order is age order
        self._running: dict[Key, list[float | int]] = {}  # key -> [taken_at, joined]

    def __repr__(self) -> str:
        return (f"<ReplayWindow {len(self._done)}/{self.size} responses, {self.nbytes} bytes, "
                f"{len(self._running)} running, ttl {self.ttl_s}s>")

    def __len__(self) -> int:
        return len(self._done)

    @property
    def running(self) -> int:
        """Requests claimed and not yet completed."""
        return len(self._running)

    def claim(self, key: Key) -> Stored | _Joined | None:
        """Take a request up.

        Returns:
            None when it is new: it is now running, and :meth:`complete` or :meth:`release`
            must follow. A :class:`Stored` response when it was answered before (publish
            ``mark_replay(stored.frames)``). :data:`JOINED` when the original is still
            running: its response will answer this repeat too.
        """
        now = self._clock()
        entry = self._done.get(key)
        if entry is not None:
            if now - entry.taken_at <= self.ttl_s:
                return Stored(entry.frames, entry.failed)
            self._evict(now)
            entry = self._done.pop(key, None)  # the ttl sweep stops at a younger entry
            if entry is not None:
                self.nbytes -= entry.nbytes
        running = self._running.get(key)
        if running is not None:
            running[1] += 1
            return JOINED
        self._running[key] = [now, 0]
        return None

    def complete(self, key: Key, frames: list[bytes], *, failed: bool = False) -> int:
        """Remember the response to a claimed request; return how many repeats had joined it."""
        running = self._running.pop(key, None)
        if running is None:
            return 0
        taken_at, joined = running
        if self.size:
            entry = _Entry(taken_at, frames, failed)
            self._done[key] = entry
            self.nbytes += entry.nbytes
            self._evict(self._clock())
        return int(joined)

    def release(self, key: Key) -> int:
        """Forget a claimed request that got no job response (e.g. its deadline had passed);
        return how many repeats had joined it."""
        running = self._running.pop(key, None)
        return 0 if running is None else int(running[1])

    def _evict(self, now: float) -> None:
        done = self._done
        oldest = now - self.ttl_s
        while done:
            key = next(iter(done))
            entry = done[key]
            if (len(done) <= self.size and self.nbytes <= self.max_bytes
                    and entry.taken_at >= oldest):
                return
            del done[key]
            self.nbytes -= entry.nbytes
