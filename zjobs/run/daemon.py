"""One processor as a daemon of the current process: what ``zjobs serve`` and child
processes run.

:class:`ServeSettings` says what to serve (the job and its resources, by object or by
``MODULE:OBJECT`` name, and the server security) and how (it *is* a
:class:`~zjobs.ProcessorOptions`, with every processor option); :class:`Daemon` builds the
processor on its own zmq context, serves until asked to stop (by
:meth:`Daemon.request_stop`, or by SIGTERM/SIGINT when it handles signals), then drains
gracefully: the job in progress finishes and its response is flushed before the context
is terminated. Requests still queued and not started are not answered; the ``stopped``
log line tells how many were received and answered.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeAlias

import zmq

from zjobs.core.async_job import is_async_job
from zjobs.core.handler import Counters
from zjobs.core.job import Job
from zjobs.core.options import ProcessorOptions, option_names
from zjobs.core.resources import ResourceFactory
from zjobs.errors import OptionsError, ZJobsError
from zjobs.processor.sync import ZmqProcessor
from zjobs.run.loader import load_factory, load_job
from zjobs.transport.sockets import ServerSecurity

if TYPE_CHECKING:
    from zjobs.processor.aio import AsyncZmqProcessor

__all__ = ["Daemon", "ServeSettings", "ServedProcessor", "build_processor"]

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_SIGNAL_LOOK_S = 0.1
"""How often the main thread, waiting for the processor's end, runs Python code: a signal
the kernel delivered to another thread is only handled then (see :meth:`Daemon.run`)."""


@dataclass(frozen=True, slots=True)
class ServeSettings(ProcessorOptions):
    """What a daemon serves, and how: the job, its resources and security, and every
    :class:`~zjobs.ProcessorOptions` field (given as keywords), as one picklable value, so
    the CLI, child processes, system files and custom entry points build the same processor.

    Args:
        job: a job, or ``"MODULE:OBJECT"`` naming one (a function, a class with ``run``,
            or an instance); a name keeps the settings picklable for child processes.
        resources: a resources factory, or ``"MODULE:FACTORY"`` naming one.
        security: server-side security for both sockets (e.g. CURVE).
        **options: the processor options (``requests``, ``name``, ``cache_size``,
            ``concurrency``...). ``concurrency`` also chooses the processor: an async job
            (``async def run``) is served by :class:`~zjobs.aio.AsyncZmqProcessor` (100 in
            flight when None); a sync job given a number runs in a pool of that many
            threads (its resources must be thread-safe), and without one it runs one
            request at a time in a :class:`~zjobs.ZmqProcessor`.

    Example::

        Daemon(ServeSettings("myjobs:square", requests="tcp://*:5555",
                             responses="tcp://*:5556", cache_size=1000)).run()
    """

    job: str | Job
    resources: str | ResourceFactory | None = field(default=None, kw_only=True)
    security: ServerSecurity | None = field(default=None, kw_only=True)

    @classmethod
    def of(cls, job: str | Job, options: ProcessorOptions, *,
           resources: str | ResourceFactory | None = None,
           security: ServerSecurity | None = None) -> ServeSettings:
        """The settings serving ``job`` with ``options``."""
        return cls(job, resources=resources, security=security,
                   **{name: getattr(options, name) for name in option_names()})

    def describe(self) -> str:
        """The job as a person would name it (its reference, or its repr)."""
        return self.job if isinstance(self.job, str) else repr(self.job)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (JSON), for a child process started by command.

        Raises:
            TypeError: the job or resources are objects, not names, or security is set:
                only :mod:`pickle` (:class:`~zjobs.ProcessorProcess`) can carry those.
        """
        if not isinstance(self.job, str) or not (self.resources is None
                                                 or isinstance(self.resources, str)):
            raise TypeError("only settings naming the job and resources as MODULE:OBJECT "
                            "convert to plain values")
        if self.security is not None:
            raise TypeError("settings with security do not convert to plain values")
        return {"job": self.job, "resources": self.resources,
                **ProcessorOptions.to_dict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServeSettings:
        """Settings from what :meth:`to_dict` wrote (and the same keys as a system file).

        Raises:
            OptionsError: a missing job, an unknown key, a value that cannot be used.
        """
        rest = dict(data)
        job, resources = rest.pop("job", None), rest.pop("resources", None)
        problems = [] if isinstance(job, str) and job else [("job", "must be MODULE:OBJECT")]
        if resources is not None and not isinstance(resources, str):
            problems.append(("resources", "must be MODULE:FACTORY"))
        try:
            options = ProcessorOptions.from_dict(rest)
        except OptionsError as exc:
            problems += exc.problems
        if problems:
            raise OptionsError(problems)
        return cls.of(job, options, resources=resources)


ServedProcessor: TypeAlias = "ZmqProcessor | AsyncZmqProcessor"
"""What :func:`build_processor` builds: a sync or an asyncio processor."""


def build_processor(settings: ServeSettings,
                    context: zmq.Context[zmq.Socket[bytes]] | None = None) -> ServedProcessor:
    """Load the job and resources named in ``settings`` and bind a processor for them.

    Raises:
        LoadError: the job or the resources factory cannot be loaded.
        BindError: an endpoint cannot be bound.
    """
    job: Any = load_job(settings.job)
    factory = load_factory(settings.resources) if settings.resources is not None else None
    options = settings.options
    if options.concurrency is not None or options.threads or is_async_job(job):
        # Imported here, where it is needed: importing zjobs must not import asyncio.
        from zjobs.processor.aio import AsyncZmqProcessor

        return AsyncZmqProcessor(job, options.replace(threads=not is_async_job(job)
                                                      or options.threads),
                                 resources=factory, context=context,
                                 security=settings.security)
    return ZmqProcessor(job, options, resources=factory, context=context,
                        security=settings.security)


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
            CrashedError: the processor stopped by itself (it crashed: the cause is attached).
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
            # request_stop() stops the processor, so its end is all there is to wait for.
            # Not in one blocking wait: Python runs signal handlers in this thread, and a
            # signal the kernel gave another thread does not interrupt the wait (it does
            # after SIGSTOP: SIGTERM then SIGCONT, as systemd stops a unit, goes to the
            # first thread to run, often not this one), so it looks again now and then.
            while not processor.wait(_SIGNAL_LOOK_S):
                pass
            processor.stop(timeout_s=None)  # raises CrashedError if it ended by itself
            if not self._stop.is_set():
                raise ZJobsError(f"processor {processor.name!r} stopped unexpectedly")
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
