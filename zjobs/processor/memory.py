"""MemoryProcessor: serves a job on an in-memory bus in a background thread, the ZJP/1 rules
without sockets: a fast, socket-free double for unit tests::

    with MemoryProcessor(square) as proc, proc.client() as client:
        assert client.call(7) == 49

Its requests and responses travel through a :class:`~zjobs.transport.memory.MemoryBus`;
:class:`~zjobs.MemorySender` and :class:`~zjobs.MemoryReceiver` connect to it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Self

from zjobs.client.sync import Client
from zjobs.core.dedup import ReplayWindow
from zjobs.core.handler import Counters, RequestHandler
from zjobs.core.job import Job, describe_job, run_job
from zjobs.core.resources import ResourceFactory, Resources
from zjobs.errors import ClosedError, CrashedError, StartError, Timeout
from zjobs.transport.memory import MemoryBus, MemoryReceiver, MemorySender

__all__ = ["MemoryProcessor"]

log = logging.getLogger(__name__)


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
        self.bus = MemoryBus(self.name, maxsize)
        """The in-memory queue and subscriber list this processor serves on."""
        self._resources = Resources(resources)
        self._handler: RequestHandler | None = None
        self._thread: threading.Thread | None = None
        self._runner: threading.Thread | None = None  # the caller's thread inside run()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._state = "created"
        self._crash: BaseException | None = None

    def __repr__(self) -> str:
        return f"<MemoryProcessor {self.name!r} {self._state}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def state(self) -> str:
        """One of created, running, stopping, stopped."""
        return self._state

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until serving has ended (stopped, or crashed); True once it has."""
        return self._done.wait(timeout_s)

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

    def client(self, **options: Any) -> Client:
        """A :class:`~zjobs.Client` over this processor's queues."""
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
        self._thread = threading.Thread(target=self._background, name=f"zjobs-memory-{self.name}",
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

    def _background(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # kept for stop(): the thread has no caller
            log.error("processor %s crashed", self.name, exc_info=exc)
            self._crash = exc
        finally:
            self._finish()

    def _serve(self) -> None:
        handler, bus = self._handler, self.bus
        assert handler is not None
        while (frames := bus.take()) is not None:
            out = handler.handle(frames)
            if out is not None:
                bus.publish(out)

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
            CrashedError: the serving thread had died (raised once).
        """
        with self._lock:
            if self._state == "created":
                self._state = "stopped"
                self._done.set()
            if self._state == "stopped":
                self._raise_crash()
                return
            send_stop = self._state == "running"
            self._state = "stopping"
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if send_stop and not self.bus.put_stop(timeout_s):
            self._state = "running"
            raise Timeout(f"processor {self.name!r}: its queue stayed full for {timeout_s}s")
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
        self._raise_crash()

    close = stop

    def _raise_crash(self) -> None:
        crash, self._crash = self._crash, None
        if crash is not None:
            raise CrashedError(f"processor {self.name!r}", crash)
