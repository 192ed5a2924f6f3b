"""In-memory transport: a processor, sender and receiver built on queues, with no sockets.

They speak the same ZJP/1 frames as the ZeroMQ classes (so the same validation and the
same Client work over them), which shows the interfaces are not tied to ZeroMQ and
gives users a fast, socket-free double for unit tests::

    with MemoryProcessor(square) as proc, proc.client() as client:
        assert client.call(7) == 49
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Self

from zjobs.core.dedup import ReplayWindow
from zjobs.core.handler import Counters, RequestHandler
from zjobs.core.job import Job, describe_job, run_job
from zjobs.core.resources import ResourceFactory, Resources
from zjobs.errors import ClosedError, ReceiveTimeout, SendTimeout, StartError, Timeout
from zjobs.transport.receiver import as_topic
from zjobs.transport.sender import USE_SENDER_DEFAULT, IdGenerator, UseSenderDefault
from zjobs.wire.protocol import Id, Meta, Request, Response, parse_response

__all__ = ["MemoryProcessor", "MemoryReceiver", "MemorySender"]

_STOP = object()


class MemoryReceiver:
    """An :class:`~zjobs.McReceive` fed by :class:`MemoryProcessor` publications.

    Like a SUB socket it drops what does not fit in its queue (``maxsize``), counting it.
    """

    def __init__(self, topics: Iterable[str | bytes] = ("",), *, maxsize: int = 100_000) -> None:
        self.topics: list[bytes] = [as_topic(t) for t in topics]
        self.dropped = 0
        self.skipped = 0
        """Messages that were not responses (reserved topic, malformed, unknown status)."""
        self._queue: queue.Queue[list[bytes]] = queue.Queue(maxsize)
        self._sources: list[MemoryProcessor] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryReceiver topics={self.topics} queued={self._queue.qsize()}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, processor: MemoryProcessor) -> None:
        """Receive what ``processor`` publishes."""
        processor._subscribers.append(self)
        self._sources.append(processor)

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
            if self in source._subscribers:
                source._subscribers.remove(self)
        self._sources.clear()


class MemorySender:
    """An :class:`~zjobs.MpSend` that hands requests to :class:`MemoryProcessor` queues,
    round-robin like a PUSH socket."""

    def __init__(self, processors: Sequence[MemoryProcessor] = (), *,
                 send_timeout_s: float | None = None) -> None:
        self.processors = list(processors)
        self.send_timeout_s = send_timeout_s
        self.ids = IdGenerator()
        self._turn = itertools.count()
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemorySender processors={[p.name for p in self.processors]}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, processor: MemoryProcessor) -> None:
        """Also send to ``processor``."""
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
        try:
            target._inbox.put(frames, timeout=limit)
        except queue.Full:
            raise SendTimeout([target.name], limit) from None
        return rid

    def close(self) -> None:
        """Stop sending; idempotent."""
        self._closed = True


class MemoryProcessor:
    """A :class:`~zjobs.Processor` that serves a job from a queue in a background thread: the
    ZJP/1 rules without sockets, a fast double for unit tests.

    Args:
        job: the job, as for :class:`~zjobs.ZmqProcessor`.
        name: written into responses; the job's name by default.
        resources: resources factory, opened on start and closed on stop.
        maxsize: requests queued before senders block (backpressure).
    """

    def __init__(self, job: Job, *, name: str | None = None,
                 resources: ResourceFactory | None = None, maxsize: int = 1000) -> None:
        run_job(job)
        self.job = job
        self.name = name or describe_job(job)
        self._inbox: queue.Queue[Any] = queue.Queue(maxsize)
        self._subscribers: list[MemoryReceiver] = []
        self._resources = Resources(resources)
        self._handler: RequestHandler | None = None
        self._thread: threading.Thread | None = None
        self._runner: threading.Thread | None = None  # the caller's thread inside run()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._state = "created"

    def __repr__(self) -> str:
        return f"<MemoryProcessor {self.name!r} {self._state}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def counters(self) -> Counters:
        """A snapshot of the processor's counters."""
        return self._handler.counters if self._handler is not None else Counters()

    def sender(self) -> MemorySender:
        """A sender to this processor."""
        return MemorySender([self])

    def receiver(self, topics: Iterable[str | bytes] = ("",)) -> MemoryReceiver:
        """A receiver of this processor's responses."""
        receiver = MemoryReceiver(topics)
        receiver.connect(self)
        return receiver

    def client(self, **options: Any) -> Any:
        """A :class:`~zjobs.Client` over this processor's queues."""
        from zjobs.client.sync import Client

        return Client(self.sender(), self.receiver(topics=()), **options)

    def _open(self) -> None:
        with self._lock:
            if self._state != "created":
                raise ClosedError(f"processor {self.name!r} is {self._state}")
            try:
                value = self._resources.open()
            except Exception as exc:
                raise StartError(f"processor {self.name!r}: resources factory failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
            self._handler = RequestHandler(self.job, name=self.name, resources=value,
                                           replay_window=ReplayWindow())
            self._state = "running"

    def start(self) -> Self:
        """Open the resources and serve in a background thread.

        Raises:
            StartError: the resources factory raised.
            ClosedError: the processor already ran.
        """
        self._open()
        self._thread = threading.Thread(target=self._main, name=f"zjobs-memory-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Open the resources and serve in the calling thread until :meth:`stop` is called.

        Raises:
            StartError: the resources factory raised.
            ClosedError: the processor already ran.
        """
        self._open()
        self._runner = threading.current_thread()
        self._main()

    def _main(self) -> None:
        try:
            self._serve()
        finally:
            self._finish()

    def _serve(self) -> None:
        handler = self._handler
        assert handler is not None
        while True:
            frames = self._inbox.get()
            if frames is _STOP:
                return
            out = handler.handle(frames)
            if out is not None:
                for subscriber in list(self._subscribers):
                    subscriber.deliver(out)

    def _finish(self) -> None:
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
        try:
            self._resources.close()
        finally:
            self._done.set()

    def stop(self, timeout_s: float | None = 10.0) -> None:
        """Finish what is queued before the stop, then close the resources. Idempotent.

        Raises:
            Timeout: the job in progress did not finish within ``timeout_s`` (the resources
                stay open; call ``stop`` again later).
        """
        with self._lock:
            if self._state == "created":
                self._state = "stopped"
            if self._state == "stopped":
                return
            send_stop = self._state == "running"
            self._state = "stopping"
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if send_stop:
            try:
                self._inbox.put(_STOP, timeout=timeout_s)
            except queue.Full:
                self._state = "running"
                raise Timeout(f"processor {self.name!r}: its queue stayed full for "
                              f"{timeout_s}s") from None
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        thread, runner = self._thread, self._runner
        if thread is not None and thread is not threading.current_thread():
            thread.join(left)
            if thread.is_alive():
                raise Timeout(f"processor {self.name!r} did not stop within {timeout_s}s: "
                              "its job is still running")
        elif runner is not None and runner is not threading.current_thread():
            if not self._done.wait(left):  # run() in another thread closes the resources
                raise Timeout(f"processor {self.name!r} did not stop within {timeout_s}s: "
                              "its job is still running")

    close = stop
