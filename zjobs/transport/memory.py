"""In-memory transport: the bus a processor serves on, and a sender and receiver for it,
built on queues, with no sockets.

A :class:`MemoryBus` is what a bound PULL and PUB socket pair is for ZeroMQ: a bounded
queue of request messages and the receivers subscribed to the responses. The sender and
receiver speak the same ZJP/1 frames as the ZeroMQ classes (so the same validation and the
same Client work over them), which shows the interfaces are not tied to ZeroMQ.
:class:`~zjobs.MemoryProcessor` (in :mod:`zjobs.processor.memory`) serves a job on a bus::

    with MemoryProcessor(square) as proc, proc.client() as client:
        assert client.call(7) == 49
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, Self, TypeAlias

from zjobs.errors import ClosedError, ReceiveTimeout, SendTimeout
from zjobs.transport.receiver import as_topic
from zjobs.transport.sender import USE_SENDER_DEFAULT, IdGenerator, UseSenderDefault
from zjobs.wire.protocol import Id, Meta, Request, Response, parse_response

__all__ = ["HasBus", "MemoryBus", "MemoryReceiver", "MemorySender"]


class MemoryBus:
    """One in-memory processor's two ends: a bounded queue of request messages (its PULL
    side) and the receivers its responses are delivered to (its PUB side).

    Args:
        name: the processor's name (in errors and reprs).
        maxsize: request messages queued before senders wait (backpressure).
    """

    def __init__(self, name: str, maxsize: int = 1000) -> None:
        self.name = name
        self._requests: queue.Queue[list[bytes] | None] = queue.Queue(maxsize)
        self._subscribers: list[MemoryReceiver] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"<MemoryBus {self.name!r} queued={self._requests.qsize()} "
                f"subscribers={len(self._subscribers)}>")

    @property
    def subscribers(self) -> tuple[MemoryReceiver, ...]:
        """The receivers responses are delivered to."""
        with self._lock:
            return tuple(self._subscribers)

    def put(self, frames: list[bytes], timeout_s: float | None) -> None:
        """Queue one request message, waiting up to ``timeout_s`` for room.

        Raises:
            SendTimeout: the queue stayed full.
        """
        try:
            self._requests.put(frames, timeout=timeout_s)
        except queue.Full:
            raise SendTimeout([self.name], timeout_s) from None

    def put_stop(self, timeout_s: float | None) -> bool:
        """Queue the end of the requests after those queued; False when the queue stayed full."""
        try:
            self._requests.put(None, timeout=timeout_s)
        except queue.Full:
            return False
        return True

    def take(self) -> list[bytes] | None:
        """The next request message, waiting for one; None once :meth:`put_stop` is reached."""
        return self._requests.get()

    def subscribe(self, receiver: MemoryReceiver) -> None:
        """Deliver the responses published from now on to ``receiver`` too."""
        with self._lock:
            self._subscribers.append(receiver)

    def unsubscribe(self, receiver: MemoryReceiver) -> None:
        """Stop delivering to ``receiver``; a no-op when it is not subscribed."""
        with self._lock:
            if receiver in self._subscribers:
                self._subscribers.remove(receiver)

    def publish(self, frames: list[bytes]) -> None:
        """Deliver a response message to every subscriber whose topics match it."""
        for receiver in self.subscribers:
            receiver.deliver(frames)


class HasBus(Protocol):
    """Something served on a :class:`MemoryBus`, such as :class:`~zjobs.MemoryProcessor`."""

    @property
    def bus(self) -> MemoryBus:
        """The bus it serves on."""
        ...


Target: TypeAlias = MemoryBus | HasBus
"""What a memory sender or receiver connects to: a bus, or what serves on one."""


def _bus(target: Target) -> MemoryBus:
    return target if isinstance(target, MemoryBus) else target.bus


class MemoryReceiver:
    """An :class:`~zjobs.McReceive` fed by what a :class:`~zjobs.MemoryProcessor` publishes.

    Like a SUB socket it drops what does not fit in its queue (``maxsize``), counting it.
    """

    def __init__(self, topics: Iterable[str | bytes] = ("",), *, maxsize: int = 100_000) -> None:
        self.topics: list[bytes] = [as_topic(t) for t in topics]
        self.dropped = 0
        self.skipped = 0
        """Messages that were not responses (reserved topic, malformed, unknown status)."""
        self._queue: queue.Queue[list[bytes]] = queue.Queue(maxsize)
        self._sources: list[MemoryBus] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryReceiver topics={self.topics} queued={self._queue.qsize()}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, processor: Target) -> None:
        """Receive what ``processor`` (or a bus) publishes."""
        bus = _bus(processor)
        bus.subscribe(self)
        self._sources.append(bus)

    def subscribe(self, topic: str | bytes) -> None:
        """Also receive responses whose topic starts with ``topic``."""
        self.topics.append(as_topic(topic))

    def deliver(self, frames: list[bytes]) -> None:
        """Called by a processor: queue ``frames`` if the topic matches."""
        topic = frames[0]
        if any(topic.startswith(t) for t in self.topics):
            try:
                self._queue.put_nowait(frames)
            except queue.Full:
                self.dropped += 1

    def receive(self, timeout: float | None = None) -> Response:
        """The next response; raise :class:`ReceiveTimeout` after ``timeout`` seconds.

        Like :class:`~zjobs.ZmqReceiver`, it skips what is not a response of a known status.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise ClosedError("receiver is closed")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                frames = self._queue.get(timeout=left)
            except queue.Empty:
                raise ReceiveTimeout(timeout) from None
            response = parse_response(frames)
            if response is not None:
                return response
            self.skipped += 1

    def close(self) -> None:
        """Stop receiving; idempotent."""
        self._closed = True
        for source in self._sources:
            source.unsubscribe(self)
        self._sources.clear()


class MemorySender:
    """An :class:`~zjobs.MpSend` that hands requests to :class:`~zjobs.MemoryProcessor`
    queues (their buses), round-robin like a PUSH socket."""

    def __init__(self, processors: Sequence[Target] = (), *,
                 send_timeout_s: float | None = None) -> None:
        self.processors = list(processors)
        self.send_timeout_s = send_timeout_s
        self.ids = IdGenerator()
        self._turn = itertools.count()
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemorySender processors={[_bus(p).name for p in self.processors]}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, processor: Target) -> None:
        """Also send to ``processor`` (or a bus)."""
        self.processors.append(processor)

    def send(
        self,
        request: Any,
        *,
        id: Id | None = None,
        reply_to: str | bytes | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
        ping: bool = False,
        timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
        dedup: bool = False,
    ) -> Id:
        """Encode the request as ZJP/1 frames and queue it on the next processor.

        ``timeout_s`` and ``dedup`` are those of :meth:`zjobs.ZmqSender.send`.
        """
        if self._closed:
            raise ClosedError("sender is closed")
        rid = id if id is not None else self.ids()
        frames = Request(rid, request, reply_to, ping, deadline_ms, meta, dedup).to_frames()
        limit = self.send_timeout_s if timeout_s is USE_SENDER_DEFAULT else timeout_s
        if not self.processors:
            raise SendTimeout([], limit)
        target = self.processors[next(self._turn) % len(self.processors)]
        _bus(target).put(frames, limit)
        return rid

    def close(self) -> None:
        """Stop sending; idempotent."""
        self._closed = True
