"""Processors: the ``Processor`` interface and ``ZmqProcessor``, which serves one job on
a PULL socket (requests) and a PUB socket (responses).

The sockets are bound when the processor is created, so its endpoints (wildcards
resolved) are known at once. It then runs in the calling thread (:meth:`run`) or in a
background thread (:meth:`start`), one request at a time, until stopped. Stopping is
graceful: the job in progress finishes and its response is published first.

Reliability (see the README's "Reliability and delivery guarantees"): every published
message carries a sequence number and heartbeats go out every second (even while a job
runs), a repeated request id is answered from a replay window instead of running the job
twice, and TCP keepalive drops connections to peers that vanished.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self

import zmq

from zjobs.core.dedup import ReplayWindow
from zjobs.core.handler import Counters, RequestHandler, new_instance_id
from zjobs.core.job import Job, describe_job, run_job
from zjobs.core.load import LoadSnapshot
from zjobs.core.resources import ResourceFactory, Resources
from zjobs.errors import ClosedError, StartError, Timeout
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.publisher import Publisher
from zjobs.transport.receiver import McReceive, ZmqReceiver
from zjobs.transport.sender import MpSend, ZmqSender
from zjobs.transport.sockets import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ProcessorSockets,
    ServerSecurity,
    connectable,
)

if TYPE_CHECKING:
    from zjobs.client.sync import Client
    from zjobs.transport.metrics import MetricsServer

__all__ = ["Endpoints", "Processor", "ZmqProcessor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a processor listens: its request (PULL) and response (PUB) endpoints, the two
    addresses clients, links and pipelines connect to."""

    requests: str
    responses: str

    def connectable(self) -> Endpoints:
        """The endpoints a local peer connects to (wildcard hosts become loopback)."""
        return Endpoints(connectable(self.requests), connectable(self.responses))


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


class BaseZmqProcessor:
    """What :class:`ZmqProcessor` and :class:`~zjobs.aio.AsyncZmqProcessor` share once
    bound: their state and counters, peers connected to them, serving only once, and the
    request handler built from their options. Not for use on its own."""

    job: Job
    name: str
    instance: str
    context: zmq.Context[Any]
    endpoints: Endpoints
    dedup_size: int
    dedup_ttl_s: float
    _state: str
    _lock: threading.Lock
    _handler: RequestHandler | None
    metrics: MetricsServer | None
    """The processor's Prometheus endpoint, when it was given a ``metrics`` address."""
    _sockets: ProcessorSockets

    @staticmethod
    def _check_options(dedup_size: int, dedup_ttl_s: float,
                       heartbeat_interval_s: float | None) -> None:
        if dedup_size < 0 or dedup_ttl_s < 0:
            raise ValueError("dedup_size and dedup_ttl_s must not be negative")
        if heartbeat_interval_s is not None and heartbeat_interval_s <= 0:
            raise ValueError("heartbeat_interval_s must be positive (or None)")

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
        from zjobs.client.sync import Client

        options.setdefault("context", self.context)
        return Client.connect(self.connect_endpoints.requests, self.connect_endpoints.responses,
                              **options)

    def _serve_metrics(self, address: str | None) -> None:
        self.metrics = None
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
        window = ReplayWindow(self.dedup_size, self.dedup_ttl_s) if self.dedup_size else None
        return RequestHandler(self.job, name=self.name, resources=resources,
                              instance=self.instance, replay_window=window)


class ZmqProcessor(BaseZmqProcessor):
    """A :class:`Processor` over ZeroMQ sockets, serving in a thread.

    Args:
        job: an object with ``run(request, resources)`` (optionally ``get_cache`` and
            ``put_cache``), or a function ``f(request, resources)``.
        requests: endpoint to bind the PULL socket on (``tcp://127.0.0.1:*`` picks a port).
        responses: endpoint to bind the PUB socket on.
        name: written into every response; defaults to the job's name.
        resources: a factory for the resources passed to the job (see :mod:`zjobs.core.resources`);
            called when serving starts, closed when it stops.
        context: the zmq context (the shared instance by default).
        max_message_size: largest request frame accepted (ZMQ_MAXMSGSIZE); a peer sending a
            larger one is disconnected by libzmq.
        linger_ms: how long published responses may still flush after the sockets close.
        rcvhwm: requests queued in the processor before senders are held back.
        sndhwm: responses queued per subscriber before the publisher drops for that subscriber.
        dedup_size: how many recent responses are kept to answer a repeated request id
            (a client's retry) without running the job again; 0 turns this off.
        dedup_ttl_s: how long after a request was taken up a repeat of it is answered from
            that window.
        heartbeat_interval_s: seconds between heartbeats on the reserved heartbeat topic;
            None sends none.
        keepalive: TCP keepalive on both sockets, dropping dead peers' connections.
        security: server-side security (e.g. CURVE) for both sockets. If it has a
            ``release_server(socket)`` method, that is called after each socket is closed.
        metrics: ``HOST:PORT`` to serve Prometheus metrics on (``/metrics``; port 0 picks
            one, see :attr:`metrics`), from creation until stopped. Needs the
            ``zjobs[metrics]`` extra.

    Raises:
        BindError: an endpoint (or the metrics address) could not be bound (the error
            names it).
        TypeError: ``job`` is not a job.
        ImportError: ``metrics`` without prometheus_client installed.
    """

    def __init__(
        self,
        job: Job,
        *,
        requests: str = "tcp://127.0.0.1:*",
        responses: str = "tcp://127.0.0.1:*",
        name: str | None = None,
        resources: ResourceFactory | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        linger_ms: int = 1000,
        rcvhwm: int = 1000,
        sndhwm: int = 100_000,
        security: ServerSecurity | None = None,
        dedup_size: int = 10_000,
        dedup_ttl_s: float = 60.0,
        heartbeat_interval_s: float | None = 1.0,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        metrics: str | None = None,
    ) -> None:
        run_job(job)  # fail now, not in the serving thread
        self._check_options(dedup_size, dedup_ttl_s, heartbeat_interval_s)
        self.dedup_size = dedup_size
        self.dedup_ttl_s = dedup_ttl_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.job = job
        self.name = name or describe_job(job)
        self.instance = new_instance_id()
        self.context = context or zmq.Context.instance()
        self._resources = Resources(resources)
        self._handler = None
        self._state = "created"
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._runner: threading.Thread | None = None  # the caller's thread inside run()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        try:
            self._sockets = ProcessorSockets(
                self.context, requests, responses, max_message_size=max_message_size,
                linger_ms=linger_ms, rcvhwm=rcvhwm, sndhwm=sndhwm, keepalive=keepalive,
                security=security)
        except BaseException:
            self._close_wake()
            raise
        self.endpoints = Endpoints(self._sockets.requests, self._sockets.responses)
        try:
            self._serve_metrics(metrics)
        except BaseException:
            self._close_sockets()
            raise

    def __repr__(self) -> str:
        ep = getattr(self, "endpoints", None)
        where = f" requests={ep.requests} responses={ep.responses}" if ep else ""
        return f"<ZmqProcessor {self.name!r} {self._state}{where}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        """Open the resources and serve in the calling thread until :meth:`stop` is called.

        The sockets and resources are closed when it returns, also after an error.

        Raises:
            StartError: the resources factory raised.
        """
        self._claim("run()")
        self._runner = threading.current_thread()
        try:
            self._open_resources()
            self._serve()
        finally:
            self._finish()

    def start(self) -> Self:
        """Serve in a background thread; return once the resources are open.

        Raises:
            StartError: the resources factory raised (the processor is then stopped).
        """
        self._claim("start()")
        opened = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                try:
                    self._open_resources()
                except BaseException as exc:
                    failure.append(exc)
                    return
                finally:
                    opened.set()
                self._serve()
            except Exception:
                log.exception("processor %s crashed", self.name)
            finally:
                self._finish()

        self._thread = threading.Thread(target=main, name=f"zjobs-processor-{self.name}",
                                        daemon=True)
        self._thread.start()
        opened.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def _open_resources(self) -> None:
        try:
            value = self._resources.open()
        except Exception as exc:
            raise self._resources_failed(exc) from exc
        self._handler = self._new_handler(value)

    def _serve(self) -> None:
        pull, pub, handler = self._sockets.pull, self._sockets.pub, self._handler
        assert pull is not None and pub is not None and handler is not None
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        stopping = self._stopping
        publisher = Publisher(pub, name=self.name, instance=self.instance,
                              heartbeat_interval_s=self.heartbeat_interval_s,
                              counters=lambda: handler.counters.as_dict(),
                              load=handler.load.snapshot)
        handle, publish = handler.handle, publisher.publish
        log.debug("processor %s serving on %s", self.name, self.endpoints)
        publisher.start()
        try:
            while not stopping.is_set():
                poller.poll()
                # Take every message already queued before polling again: one poll per burst.
                while not stopping.is_set():
                    try:
                        frames = pull.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    out = handle(frames)
                    if out is not None:
                        publish(out)
        finally:
            publisher.close()  # a last heartbeat says "stopped", after the last response

    def request_stop(self) -> None:
        """Ask the serving loop to stop after the current job; safe from signal handlers."""
        self._stopping.set()
        try:
            self._wake_w.send(b"\x00")
        except (BlockingIOError, OSError):
            pass  # already woken, or closed

    def stop(self, timeout_s: float | None = 10.0) -> None:
        """Stop serving: the job in progress finishes and its response is published, then the
        resources and sockets are closed. Idempotent; a processor that never ran is just closed.

        Raises:
            Timeout: the job in progress did not finish within ``timeout_s``.
        """
        self.request_stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                raise Timeout(f"processor {self.name!r} did not stop within {timeout_s}s: "
                              "its job is still running")
        runner = self._runner
        if runner is not None and runner is not threading.current_thread():
            if not self._done.wait(timeout_s):  # run() in another thread: wait for its end
                raise Timeout(f"processor {self.name!r} did not stop within {timeout_s}s: "
                              "its job is still running")
        with self._lock:
            never_ran = self._state == "created"
            if never_ran:
                self._state = "stopped"
        if never_ran:
            self._close_sockets()

    close = stop

    def _finish(self) -> None:
        self._state = "stopping"
        try:
            self._resources.close()
        except Exception:
            log.exception("processor %s: closing resources failed", self.name)
        finally:
            self._close_sockets()
            self._state = "stopped"
            self._done.set()
            counters = self.counters.as_dict()
            log.debug("processor %s stopped: %s", self.name, counters)

    def _close_sockets(self) -> None:
        self._close_metrics()
        self._sockets.close()
        self._close_wake()

    def _close_wake(self) -> None:
        self._wake_r.close()
        self._wake_w.close()
