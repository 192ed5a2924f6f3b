"""Coalescing: plain calls made while others are in flight travel together as one batch.

A client that has calls in flight, answered fast, holds each new plain call (encoded)
instead of sending it, and sends the held ones as one batch request (the ZJP/1 batch
extension) when ``limit`` are held, when somebody waits for a result, or ``linger_s``
after the first was held. A call made while nothing is in flight goes at once, so a
sequential caller never waits: the rule is Nagle's algorithm's, and a Kafka producer's
``batch.size`` and ``linger.ms`` are the same trade. One message and one answer then
carry many calls, which is what lets a pipelined Python client outrun a loop that sends
one message per call.

Only fast jobs with small answers are coalesced. A batch's calls are answered together
when its last one is done, by one processor, so a batch takes only as many calls as a
processor answers in about :data:`BATCH_RUN_S` (from the answers counted over the last
:data:`PACE_WINDOW_S` with calls in flight, and the processors answering), and as many
as keep its answer near :data:`BATCH_ANSWER_BYTES`; when that is fewer than two, calls
go alone. So slow jobs, which gain little from saving a message, are never held: their
first answers are not delayed, and no processor is left idle while another runs a
batch.

Every held call keeps its own future: a :class:`Group` is the batch's handle in the call
engine and completes each item's handle from the batch's answer (a failed item fails only
its own call). The batch is one call to the engine: one id, one deadline, retried whole
with the same id (a processor answers a repeat from its replay window). A batch refused
whole (``BadRequest``: a processor without the extension, which ran nothing) goes back to
the driver to send again one call per message.

Transport-free: the engine holds and groups, the drivers (threads, asyncio) send.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from zjobs.errors import ProtocolError, RemoteError
from zjobs.wire.batch import Batch, BatchResult
from zjobs.wire.protocol import BAD_REQUEST

if TYPE_CHECKING:
    from zjobs.core.engine import Handle

__all__ = [
    "BATCH_ANSWER_BYTES",
    "BATCH_RUN_S",
    "DEFAULT_COALESCE",
    "DEFAULT_LINGER_S",
    "PACE_WINDOW_S",
    "Group",
    "Held",
]

DEFAULT_COALESCE: Final = 64
"""Most calls one coalesced batch holds by default. A few dozen already cut the cost per
call to a fraction of a message's; more only delays the first answers of a burst."""

BATCH_RUN_S: Final = 0.002
"""About the longest one coalesced batch is made to keep a processor busy: it takes as
many calls as a processor answered in this time lately, so jobs of a millisecond or more
always go alone. Jobs that fast cost a processor about what a message does, so a batch
saves much of the work; slower ones gain little from it and would wait for each other."""

BATCH_ANSWER_BYTES: Final = 16 * 1024
"""About the most answer bytes one coalesced batch is made to carry, from the answers'
size lately: a batch of small answers stays a small message, and calls with answers of
this size or more go alone. Queues count messages (a PUB's high-water mark, a stalled
subscriber's share of a processor's memory), so bigger messages would loosen their
bounds; and for big answers a message's own cost matters little."""

PACE_WINDOW_S: Final = 0.01
"""How long the answers are counted for one measure of the processors' pace: long enough
that a backlog read at once after a pause does not look like fast jobs."""

DEFAULT_LINGER_S: Final = 0.002
"""Longest a held call waits for company when nobody waits for a result (callbacks,
``as_completed``); a wait for any result sends what is held at once."""


class Group:
    """The handle of a coalesced batch in the engine: completes each held call's handle.

    Args:
        bodies: each call's encoded request value, in order.
        handles: each call's own handle, in the same order.
        key: the timeout and retries every call of the group has.
        refused: called with this group when a processor refused the batch whole (it ran
            none of it): the driver sends each call again on its own.
    """

    __slots__ = ("bodies", "handles", "key", "refused")

    def __init__(self, bodies: list[bytes], handles: list[Handle], key: tuple[float, int],
                 refused: Callable[[Group], None]) -> None:
        self.bodies = bodies
        self.handles = handles
        self.key = key
        self.refused = refused

    def __repr__(self) -> str:
        return f"<Group of {len(self.handles)} calls>"

    def batch(self) -> Batch:
        """The batch request value carrying every call."""
        return Batch.of_encoded(self.bodies)

    def done(self) -> bool:
        """True once every call is done (answered, failed or cancelled): no retry needed."""
        return all(handle.done() for handle in self.handles)

    def set_result(self, result: Any, /) -> None:
        """Complete every call from the batch's answer: its value, or its own error."""
        handles = self.handles
        if not isinstance(result, BatchResult) or len(result.values) != len(handles):
            got = (f"{len(result.values)} results" if isinstance(result, BatchResult)
                   else f"a {type(result).__name__}")
            self.set_exception(ProtocolError(
                f"a batch of {len(handles)} calls was answered with {got}"))
            return
        errors = result.errors
        for index, (handle, value) in enumerate(zip(handles, result.values, strict=True)):
            error = errors.get(index) if errors else None
            if error is None:
                _settle(handle, value, None)
            else:
                _settle(handle, None, error)
        self._release()

    def set_exception(self, exception: BaseException, /) -> None:
        """Fail every call with the batch's error, or hand a refused batch back."""
        if isinstance(exception, RemoteError) and exception.type == BAD_REQUEST:
            self.refused(self)
        else:
            for handle in self.handles:
                _settle(handle, None, exception)
        self._release()

    def _release(self) -> None:
        # Settled: the engine may keep the batch's call a while (its deadline entry), so
        # the calls' futures and bodies are let go of now.
        self.handles, self.bodies = [], []


def _settle(handle: Handle, value: Any, error: BaseException | None) -> None:
    # A call cancelled meanwhile keeps its cancellation.
    if handle.done():
        return
    try:
        if error is None:
            handle.set_result(value)
        else:
            handle.set_exception(error)
    except Exception:  # InvalidStateError of either kind of future: cancelled meanwhile
        if not handle.done():
            raise


class Held:
    """The calls a client holds back, waiting to travel as one batch.

    Calls held together share their timeout and retries (the batch's), so a call with
    other ones is not held while different ones are.
    """

    __slots__ = ("bodies", "handles", "key", "since")

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.handles: list[Handle] = []
        self.key: tuple[float, int] | None = None
        """The timeout and retries of the calls held now."""
        self.since = float("inf")
        """Monotonic time the first call now held was held."""

    def __len__(self) -> int:
        return len(self.handles)

    def add(self, body: bytes, handle: Handle, key: tuple[float, int], now: float) -> int:
        """Hold one call; return how many are held now."""
        if not self.handles:
            self.key = key
            self.since = now
        self.bodies.append(body)
        self.handles.append(handle)
        return len(self.handles)

    def take(self, refused: Callable[[Group], None]) -> Group:
        """Every call held, as one group; nothing is held afterwards."""
        assert self.key is not None, "nothing is held"
        group = Group(self.bodies, self.handles, self.key, refused)
        self.bodies, self.handles = [], []
        self.key = None
        self.since = float("inf")
        return group
