"""How a client maps many values over processors: chunks, batches, order and errors.

Transport-free, so :meth:`zjobs.Client.map` and :meth:`zjobs.AsyncClient.map` share one
flow and only carry out its actions: a :class:`MapFlow` cuts the input into chunks (a
:class:`~zjobs.wire.batch.Batch` each when every processor takes batches, else values to
send one per message), keeps a bounded window of them in flight, and hands back every
value's outcome in input order, so memory stays bounded for an input of any length.

A failed item fails only its own outcome (the error object takes its place). A batch that a
processor refuses as a whole (``BadRequest``: a processor without the extension, which ran
nothing) is sent again one value per message, and batching stops for the rest of the map.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

from zjobs.errors import EncodeError, ProtocolError, RemoteError
from zjobs.wire.batch import BATCH, Batch, BatchResult
from zjobs.wire.codec import encode
from zjobs.wire.protocol import BAD_REQUEST

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_SIZE",
    "Chunk",
    "Emit",
    "MapFlow",
    "Send",
    "Wait",
    "batch_limit",
    "map_window",
]

DEFAULT_BATCH_SIZE: Final = 1000
"""Items per batch a map asks for (fewer when a processor takes fewer)."""

DEFAULT_BATCH_BYTES: Final = 1024 * 1024
"""Most bytes of encoded items in one batch (far below a processor's 16 MiB frame limit)."""

SINGLES: Final = 100
"""Values per chunk when they go one per message (a chunk is then 100 requests)."""


def batch_limit(advertised: Iterable[tuple[tuple[str, ...], int | None]], wanted: int) -> int:
    """How many items one batch may hold for a group of processors: ``wanted`` at most,
    no more than any of them takes, and 0 (no batches) unless every one advertised them.

    Args:
        advertised: per processor run: the extensions and ``batch_max`` of its pong.
        wanted: the batch size asked for.
    """
    limit = wanted
    seen = False
    for extensions, most in advertised:
        if BATCH not in extensions or most is None:
            return 0
        limit = min(limit, most)
        seen = True
    return limit if seen else 0


def map_window(batch_size: int, window: int | None) -> tuple[int, int]:
    """A map's batch size and window (values in flight), checked; the default window is
    four batches, and at least 1,000 values.

    Raises:
        ValueError: ``batch_size`` or ``window`` below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size!r}")
    if window is None:
        window = max(1000, 4 * batch_size)
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window!r}")
    return batch_size, window


class Chunk:
    """Consecutive input values that travel together: one batch, or one request each.

    Attributes:
        values: the values to send, in input order (those that could be encoded).
        batch: the batch carrying them, or None when they go one per message.
        skipped: positions (in the chunk) of values that cannot be encoded, with the error
            that is their outcome; they are not sent.
        size: how many input values the chunk covers (sent and skipped).
    """

    __slots__ = ("batch", "size", "skipped", "values")

    def __init__(self, values: list[Any], batch: Batch | None,
                 skipped: dict[int, EncodeError] | None = None) -> None:
        self.values = values
        self.batch = batch
        self.skipped = skipped or {}
        self.size = len(values) + len(self.skipped)

    def __repr__(self) -> str:
        how = f"batch of {self.batch.count}" if self.batch is not None else "singles"
        return f"<Chunk {self.size} values, {how}, {len(self.skipped)} unencodable>"

    def singles(self) -> Chunk:
        """The same values, to be sent one per message."""
        return Chunk(self.values, None, self.skipped)

    def outcomes(self, reply: Any) -> tuple[list[Any], bool]:
        """Every value's outcome, in order, from what came back for the chunk, and whether
        any of them is an error.

        ``reply`` is, for a batch, its :class:`BatchResult` or the error that failed it as a
        whole (it then fails every item); for singles, one outcome per value sent.
        """
        if self.batch is not None and isinstance(reply, BatchResult):
            if len(reply.values) == len(self.values):
                if not self.skipped and not reply.errors:
                    return reply.values, False  # the usual case, checked in O(1)
                sent = reply.outcomes()
            else:
                sent = [ProtocolError(f"a batch of {len(self.values)} items was answered "
                                      f"with {len(reply.values)} results")] * len(self.values)
        elif self.batch is not None:
            error = reply if isinstance(reply, BaseException) else ProtocolError(
                f"a batch was answered with a {type(reply).__name__}")
            sent = [error] * len(self.values)
        else:
            sent = list(reply)
        if self.skipped:
            values = iter(sent)
            sent = [self.skipped[position] if position in self.skipped else next(values)
                    for position in range(self.size)]
        return sent, any(isinstance(outcome, BaseException) for outcome in sent)


@dataclass(frozen=True, slots=True)
class Send:
    """Action: send ``chunk``; reply with what :meth:`Chunk.outcomes` will need a handle
    for (the batch's handle, or a list with one handle per value), where a send that raised
    is its exception instead of a handle."""

    chunk: Chunk


@dataclass(frozen=True, slots=True)
class Wait:
    """Action: wait for what :class:`Send` gave back; reply with the outcome (the batch's
    result or error, or a list with each value's result or error)."""

    handle: Any


@dataclass(frozen=True, slots=True)
class Emit:
    """Action: hand these outcomes to the user, in order; ``failed`` says whether any of
    them is an error object."""

    outcomes: list[Any]
    failed: bool


Action = Send | Wait | Emit


def _refused(reply: Any) -> bool:
    # A processor refused the batch as a whole: nothing ran, the items may go one by one.
    return isinstance(reply, RemoteError) and reply.type == BAD_REQUEST


class MapFlow:
    """The decisions of one map: what to send, what to wait for, what to hand out.

    A driver iterates :meth:`actions` and answers each action (see :class:`Send`,
    :class:`Wait`, :class:`Emit`); every input value comes out in one :class:`Emit`, in
    input order. At most ``window`` values are in flight (one chunk more while a refused
    batch is sent again one value per message).

    Args:
        values: the input; read lazily, a chunk at a time.
        limit: how many items a batch may hold now (0 or 1: send values one per message);
            asked before each chunk, so a processor that joins without the extension stops
            the batching.
        window: most values in flight.
        max_bytes: most bytes of encoded items in one batch.
    """

    def __init__(self, values: Iterable[Any], *, limit: Callable[[], int],
                 window: int, max_bytes: int = DEFAULT_BATCH_BYTES) -> None:
        if window < 1 or max_bytes < 1:
            raise ValueError("window and max_bytes must be at least 1")
        self._source: Iterator[Any] = iter(values)
        self._held: deque[Any] = deque()  # values cut from an oversized batch, read first
        self._limit = limit
        self._window = window
        self._max_bytes = max_bytes
        self._batching = True
        self._inflight: deque[tuple[Chunk, Any]] = deque()
        self.batches = 0
        """Batches sent."""
        self.singles = 0
        """Values sent one per message."""
        self.refused = 0
        """Batches refused as a whole and sent again one value per message."""

    def outstanding(self) -> list[Any]:
        """Handles sent and not yet waited for (for a driver that stops early to cancel);
        a list per chunk of singles."""
        return [handle for _, handle in self._inflight]

    def _take(self, count: int) -> list[Any]:
        taken: list[Any] = []
        held = self._held
        while held and len(taken) < count:
            taken.append(held.popleft())
        if len(taken) < count:
            taken.extend(islice(self._source, count - len(taken)))
        return taken

    def _next_chunk(self, room: int) -> Chunk | None:
        limit = self._limit() if self._batching else 0
        if limit <= 1:
            values = self._take(min(SINGLES, room))
            return self._singles(values) if values else None
        values = self._take(min(limit, max(1, room)))
        if not values:
            return None
        return self._batch(values)

    @staticmethod
    def _singles(values: list[Any]) -> Chunk:
        return Chunk(values, None)

    def _batch(self, values: list[Any]) -> Chunk:
        try:
            body = encode(values)
        except EncodeError:
            return self._batch_each(values)
        while len(body) > self._max_bytes and len(values) > 1:
            keep = len(values) // 2
            self._held.extendleft(reversed(values[keep:]))
            values = values[:keep]
            body = encode(values)
        return Chunk(values, Batch(body, len(values)))

    def _batch_each(self, values: list[Any]) -> Chunk:
        # Some value cannot be encoded: find which, and batch the others.
        good: list[Any] = []
        encoded: list[bytes] = []
        skipped: dict[int, EncodeError] = {}
        for position, value in enumerate(values):
            try:
                encoded.append(encode(value))
                good.append(value)
            except EncodeError as exc:
                skipped[position] = exc
        if not good:
            return Chunk([], None, skipped)
        return Chunk(good, Batch.of_encoded(encoded), skipped)

    def actions(self) -> Generator[Action, Any, None]:
        """The actions of the map, each answered by the driver's ``send()``."""
        inflight = self._inflight
        queued = 0  # values in flight
        exhausted = False
        while True:
            while not exhausted and queued < self._window:
                chunk = self._next_chunk(self._window - queued)
                if chunk is None:
                    exhausted = True
                    break
                if not chunk.values:  # nothing encodable: the errors are the outcomes
                    inflight.append((chunk, []))
                    continue
                if chunk.batch is not None:
                    self.batches += 1
                else:
                    self.singles += len(chunk.values)
                inflight.append((chunk, (yield Send(chunk))))
                queued += len(chunk.values)
            if not inflight:
                return
            chunk, handle = inflight.popleft()
            queued -= len(chunk.values)
            if not chunk.values:
                reply: Any = []
            elif chunk.batch is not None and isinstance(handle, BaseException):
                reply = handle  # the send raised: every item fails with it
            else:
                reply = yield Wait(handle)
            if chunk.batch is not None and _refused(reply):
                self.refused += 1
                self._batching = False
                again = chunk.singles()
                self.singles += len(again.values)
                inflight.appendleft((again, (yield Send(again))))
                queued += len(again.values)
                continue
            yield Emit(*chunk.outcomes(reply))
