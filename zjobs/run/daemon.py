"""One processor as a daemon of the current process: what ``zjobs serve`` and child
processes run.

:class:`ServeSettings` says what to serve and where; :class:`Daemon` builds the processor
on its own zmq context, serves until asked to stop (by :meth:`Daemon.request_stop`, or by
SIGTERM/SIGINT when it handles signals), then drains gracefully: the job in progress
finishes and its response is flushed before the context is terminated. Requests still
queued and not started are not answered; the ``stopped`` log line tells how many were
received and answered.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeAlias

import zmq

from zjobs.core.cache import cached
from zjobs.core.handler import Counters
from zjobs.core.job import Job
from zjobs.core.resources import ResourceFactory
from zjobs.errors import ZJobsError
from zjobs.processor.aio import DEFAULT_CONCURRENCY, AsyncZmqProcessor
from zjobs.processor.async_job import is_async_job
from zjobs.processor.sync import ZmqProcessor
from zjobs.run.loader import load_factory, load_job
from zjobs.transport.sockets import DEFAULT_MAX_MESSAGE_SIZE, ServerSecurity

__all__ = ["Daemon", "ServeSettings", "ServedProcessor", "build_processor"]

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """What a daemon serves, and where: the options of ``zjobs serve`` as one picklable value,
    so the CLI, child processes and custom entry points build the same processor.

    Args:
        job: a job, or ``"MODULE:OBJECT"`` naming one (a function, a class with ``run``,
            or an instance); a name keeps the settings picklable for child processes.
        requests: endpoint to bind for requests (``tcp://*:5555``, ``tcp://127.0.0.1:*``...).
        responses: endpoint to bind for responses.
        name: the processor name in responses; the job's name by default.
        resources: a resources factory, or ``"MODULE:FACTORY"`` naming one.
        cache_size: when positive, wrap the job in an in-memory LRU cache of this size.
        max_message_size: largest request frame accepted, in bytes.
        security: server-side security for both sockets (e.g. CURVE).
        concurrency: requests in flight at once. An async job (``async def run``) is served
            by :class:`~zjobs.aio.AsyncZmqProcessor` with this limit (100 when None); a
            sync job given a limit runs in a pool of that many threads (its resources must
            be thread-safe), and without one it runs one request at a time.
        dedup_size: responses kept in the replay window (0: no window); see
            :class:`~zjobs.ZmqProcessor`.
        dedup_ttl_s: how long a repeated request id is answered from the replay window.
        heartbeat_interval_s: seconds between heartbeats; None sends none.
        metrics: ``HOST:PORT`` to serve Prometheus metrics on (``/metrics``); None: none.
            Needs the ``zjobs[metrics]`` extra.
    """

    job: str | Job
    requests: str = "tcp://127.0.0.1:*"
    responses: str = "tcp://127.0.0.1:*"
    name: str | None = None
    resources: str | ResourceFactory | None = None
    cache_size: int = 0
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    security: ServerSecurity | None = None
    concurrency: int | None = None
    dedup_size: int = 10_000
    dedup_ttl_s: float = 60.0
    heartbeat_interval_s: float | None = 1.0
    metrics: str | None = None

    def describe(self) -> str:
        """The job as a person would name it (its reference, or its repr)."""
        return self.job if isinstance(self.job, str) else repr(self.job)


ServedProcessor: TypeAlias = ZmqProcessor | AsyncZmqProcessor
"""What :func:`build_processor` builds: a sync or an asyncio processor."""


def build_processor(settings: ServeSettings,
                    context: zmq.Context[zmq.Socket[bytes]] | None = None) -> ServedProcessor:
    """Load the job and resources named in ``settings`` and bind a processor for them.

    Raises:
        LoadError: the job or the resources factory cannot be loaded.
        BindError: an endpoint cannot be bound.
    """
    job: Any = load_job(settings.job)
    if settings.cache_size > 0:
        job = cached(job, maxsize=settings.cache_size)
    factory = load_factory(settings.resources) if settings.resources is not None else None
    reliability: dict[str, Any] = {
        "dedup_size": settings.dedup_size, "dedup_ttl_s": settings.dedup_ttl_s,
        "heartbeat_interval_s": settings.heartbeat_interval_s, "metrics": settings.metrics}
    if settings.concurrency is not None or is_async_job(job):
        return AsyncZmqProcessor(job, requests=settings.requests, responses=settings.responses,
                                 name=settings.name, resources=factory, context=context,
                                 max_message_size=settings.max_message_size,
                                 security=settings.security,
                                 concurrency=settings.concurrency or DEFAULT_CONCURRENCY,
                                 threads=not is_async_job(job), **reliability)
    return ZmqProcessor(job, requests=settings.requests, responses=settings.responses,
                        name=settings.name, resources=factory, context=context,
                        max_message_size=settings.max_message_size,
                        security=settings.security, **reliability)


class Daemon:
    """Serves one processor in the current process until stopped, then drains.

    The job runs in the processor's thread; the calling thread waits in :meth:`run`, so
    signals are handled promptly even while a job is busy.

    Args:
        settings: what to serve and where.
        handle_signals: install SIGTERM and SIGINT handlers (main thread only) that stop
            gracefully; a second signal exits at once with status 1, abandoning the job in
            progress. The previous handlers are restored when :meth:`run` returns.
    """

    def __init__(self, settings: ServeSettings, *, handle_signals: bool = False) -> None:
        self.settings = settings
        self.handle_signals = handle_signals
        self.processor: ServedProcessor | None = None
        self.stop_reason = ""
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"<Daemon {self.settings.describe()} processor={self.processor!r}>"

    def request_stop(self, reason: str = "stop requested") -> None:
        """Begin a graceful stop; safe from signal handlers and other threads."""
        if not self.stop_reason:
            self.stop_reason = reason
        self._stop.set()
        processor = self.processor
        if processor is not None:
            processor.request_stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stop.is_set():
            os.write(2, f"zjobs: second {name}: exiting without waiting for the job "
                        "in progress\n".encode())
            os._exit(1)
        log.info("received %s: stopping after the job in progress", name)
        self.request_stop(name)

    def run(self, on_ready: Callable[[ServedProcessor], None] | None = None) -> Counters:
        """Bind, open the resources, call ``on_ready(processor)``, serve until stopped.

        Returns:
            the processor's final counters.

        Raises:
            LoadError, BindError: before anything was served.
            StartError: the resources factory raised.
            ZJobsError: the processor stopped by itself (it crashed; the error is logged).
        """
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        previous: dict[signal.Signals, Any] = {}
        try:
            if self.handle_signals:
                for signum in _STOP_SIGNALS:
                    previous[signum] = signal.signal(signum, self._on_signal)
            self.processor = processor = build_processor(self.settings, context)
            processor.start()
            if self._stop.is_set():  # a signal came while binding or opening resources
                processor.request_stop()
            else:
                ep = processor.endpoints
                log.info("serving %s as %r: requests=%s responses=%s pid=%d",
                         self.settings.describe(), processor.name, ep.requests, ep.responses,
                         os.getpid())
                if processor.metrics is not None:
                    log.info("metrics for %r at %s", processor.name, processor.metrics.url)
                if on_ready is not None:
                    on_ready(processor)
            while not self._stop.wait(0.5):
                # A signal may land between the wait and this check and stop the processor
                # at once: that is a requested stop, not a crash.
                if processor.state == "stopped" and not self._stop.is_set():
                    raise ZJobsError(f"processor {processor.name!r} stopped unexpectedly")
            processor.stop(timeout_s=None)
            counters = processor.counters
            log.info("stopped %r (%s): %s sender_disconnects=%d", processor.name,
                     self.stop_reason,
                     " ".join(f"{k}={v}" for k, v in counters.as_dict().items()),
                     processor.sender_disconnects)
            return counters
        finally:
            if self.processor is not None:
                self.processor.request_stop()
                self.processor.stop(timeout_s=None)
            # Terminating the private context waits (up to the linger) for the last
            # responses to leave, so the job finished during the drain is delivered.
            context.term()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
