"""What every processor shares: the ``Processor`` interface, ``Endpoints``, and
:class:`BaseZmqProcessor`, the common part of the sync and asyncio ZeroMQ processors.

A ZeroMQ processor binds its sockets when it is created, so its endpoints (wildcards
resolved) are known at once, and serves only once. Its options are one
:class:`~zjobs.core.options.ProcessorOptions`; the keyword arguments of the constructors
build it. A crash of its serving thread or task (anything but a job's failure, which is a
JobFailed answer) is kept and raised from the next :meth:`~BaseZmqProcessor.stop`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

import zmq

from zjobs.client.sync import Client
from zjobs.core.cache import cached
from zjobs.core.dedup import ReplayWindow
from zjobs.core.handler import Counters, RequestHandler, new_instance_id
from zjobs.core.job import Job, describe_job, run_job
from zjobs.core.load import LoadSnapshot
from zjobs.core.options import ProcessorOptions
from zjobs.errors import ClosedError, CrashedError, StartError
from zjobs.transport.receiver import McReceive, ZmqReceiver
from zjobs.transport.sender import MpSend, ZmqSender
from zjobs.transport.sockets import ProcessorSockets, ServerSecurity, connectable

if TYPE_CHECKING:
    from zjobs.transport.metrics import MetricsServer

__all__ = ["BaseZmqProcessor", "Endpoints", "HasEndpoints", "Processor", "build_options"]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a processor listens: its request (PULL) and response (PUB) endpoints, the two
    addresses clients, links and pipelines connect to."""

    requests: str
    responses: str

    def connectable(self) -> Endpoints:
        """The endpoints a local peer connects to (wildcard hosts become loopback)."""
        return Endpoints(connectable(self.requests), connectable(self.responses))


@runtime_checkable
class HasEndpoints(Protocol):
    """Anything serving at known endpoints under a name: a processor of any kind (sync or
    asyncio), or a started :class:`~zjobs.ProcessorProcess`. Links and pipelines take these."""

    @property
    def name(self) -> str | None:
        """The processor's name (None while not known yet)."""
        ...

    @property
    def endpoints(self) -> Endpoints | None:
        """The endpoints bound, or None while not known yet."""
        ...


class Processor(Protocol):
    """Runs one job: takes requests, runs the job, broadcasts every response."""

    name: str

    @property
    def counters(self) -> Counters:
        """What the processor has done so far."""
        ...

    def run(self) -> None:
        """Serve in the calling thread until stopped."""
        ...

    def start(self) -> Self:
        """Serve in a background thread; return once serving."""
        ...

    def stop(self, timeout_s: float | None = 10.0) -> None:
        """Stop serving (the job in progress finishes first) and release everything."""
        ...

    def sender(self) -> MpSend:
        """A sender connected to this processor."""
        ...

    def receiver(self, topics: Iterable[str | bytes] = ("",)) -> McReceive:
        """A receiver connected to this processor, subscribed to ``topics``."""
        ...


def build_options(options: ProcessorOptions | None, fields: dict[str, Any],
                  owner: str) -> ProcessorOptions:
    """``options`` (default ones when None) with ``fields`` given as keywords applied.

    Raises:
        TypeError: a keyword is not a processor option (naming ``owner``).
        OptionsError: a value cannot be used.
    """
    base = ProcessorOptions() if options is None else options.options
    if not fields:
        return base
    try:
        return base.replace(**fields)
    except TypeError as exc:
        raise TypeError(f"{owner}(): {exc}") from None


class BaseZmqProcessor:
    """What :class:`~zjobs.ZmqProcessor` and :class:`~zjobs.aio.AsyncZmqProcessor` share
    once bound: options, state and counters, peers connected to them, serving only once,
    the request handler, and the crash kept for :meth:`stop`. Not for use on its own."""

    options: ProcessorOptions
    job: Job
    name: str
    instance: str
    context: zmq.Context[Any]
    endpoints: Endpoints
    _state: str
    _lock: threading.Lock
    _handler: RequestHandler | None
    _sockets: ProcessorSockets
    _crash: BaseException | None
    metrics: MetricsServer | None
    """The processor's Prometheus endpoint, when its options give a ``metrics`` address."""

    def _setup(self, job: Job, options: ProcessorOptions, *, context: zmq.Context[Any] | None,
               security: ServerSecurity | None, pull_class: type[zmq.Socket[Any]] | None = None,
               pub_class: type[zmq.Socket[Any]] | None = None) -> None:
        """The constructors' common part; binds the sockets last."""
        run_job(job)  # fail now, not in the serving thread
        self.options = options
        self.job = cached(job, maxsize=options.cache_size) if options.cache_size else job
        self.name = options.name or describe_job(job)
        self.instance = new_instance_id()
        self.context = context or zmq.Context.instance()
        self._handler = None
        self._crash = None
        self.metrics = None
        self._state = "created"
        self._lock = threading.Lock()
        self._sockets = ProcessorSockets(
            self.context, options.requests, options.responses,
            max_message_size=options.max_message_size, linger_ms=options.linger_ms,
            rcvhwm=options.rcvhwm, sndhwm=options.sndhwm, keepalive=options.keepalive,
            security=security, pull_class=pull_class, pub_class=pub_class)
        self.endpoints = Endpoints(self._sockets.requests, self._sockets.responses)
        try:
            self._serve_metrics(options.metrics)
        except BaseException:
            self._sockets.close()
            raise

    @property
    def state(self) -> str:
        """One of created, running, stopping, stopped."""
        return self._state

    @property
    def counters(self) -> Counters:
        """A snapshot of the processor's counters (all zero before it serves)."""
        handler = self._handler
        return handler.counters if handler is not None else Counters()

    @property
    def load(self) -> LoadSnapshot:
        """Jobs run so far, their durations, and the requests in flight now."""
        handler = self._handler
        return handler.load.snapshot() if handler is not None else LoadSnapshot()

    @property
    def sender_disconnects(self) -> int:
        """Senders' connections to the request endpoint that closed: a sender that is done,
        or one libzmq cut off for a request frame larger than ``max_message_size`` (that
        request is never seen, so it is in no counter); logged at most every 10 s."""
        return self._sockets.sender_disconnects

    @property
    def connect_endpoints(self) -> Endpoints:
        """The endpoints a local peer connects to (wildcard hosts become loopback)."""
        return self.endpoints.connectable()

    def sender(self, **options: Any) -> ZmqSender:
        """A sync :class:`~zjobs.ZmqSender` connected to this processor (options go to its
        constructor)."""
        options.setdefault("context", self.context)
        return ZmqSender(self.connect_endpoints.requests, **options)

    def receiver(self, topics: Iterable[str | bytes] = ("",), **options: Any) -> ZmqReceiver:
        """A sync :class:`~zjobs.ZmqReceiver` connected to this processor, subscribed to
        ``topics``."""
        options.setdefault("context", self.context)
        return ZmqReceiver(self.connect_endpoints.responses, topics=topics, **options)

    def client(self, **options: Any) -> Client:
        """A sync :class:`~zjobs.Client` connected to this processor."""
        options.setdefault("context", self.context)
        return Client.connect(self.connect_endpoints.requests, self.connect_endpoints.responses,
                              **options)

    def _serve_metrics(self, address: str | None) -> None:
        if address is not None:
            # An optional dependency (zjobs[metrics]): imported only when asked for.
            from zjobs.transport.metrics import MetricsServer, ProcessorCollector

            self.metrics = MetricsServer(address, ProcessorCollector(
                self.name, lambda: self.counters.as_dict(), lambda: self.load))

    def _close_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()

    def _claim(self, how: str) -> None:
        with self._lock:
            if self._state != "created":
                raise ClosedError(f"processor {self.name!r} is {self._state}: "
                                  f"{how} needs a new processor")
            self._state = "running"

    def _resources_failed(self, exc: Exception) -> StartError:
        return StartError(f"processor {self.name!r}: resources factory failed: "
                          f"{type(exc).__name__}: {exc}")

    def _new_handler(self, resources: Any) -> RequestHandler:
        options = self.options
        window = (ReplayWindow(options.dedup_size, options.dedup_ttl_s)
                  if options.dedup_size else None)
        return RequestHandler(self.job, name=self.name, resources=resources,
                              instance=self.instance, replay_window=window,
                              batch_max=options.batch_max)

    def _crashed(self, exc: BaseException) -> None:
        """Keep the first crash of the serving thread or task, for :meth:`stop`."""
        if self._crash is None:
            self._crash = exc

    def _raise_crash(self) -> None:
        """Raise the kept crash once (then forget it, so that stop() stays idempotent)."""
        crash, self._crash = self._crash, None
        if crash is not None:
            raise CrashedError(f"processor {self.name!r}", crash)
