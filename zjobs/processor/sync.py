"""ZmqProcessor: serves one job on a PULL socket (requests) and a PUB socket (responses),
one request at a time, in the calling thread or a background thread.

The sockets are bound when the processor is created, so its endpoints (wildcards
resolved) are known at once. It then runs in the calling thread (:meth:`run`) or in a
background thread (:meth:`start`), until stopped. Stopping is graceful: the job in
progress finishes and its response is published first.

Reliability (see the README's "Reliability and delivery guarantees"): every published
message carries a sequence number and heartbeats go out every second (even while a job
runs), a repeated request id is answered from a replay window instead of running the job
twice, and TCP keepalive drops connections to peers that vanished.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Self

import zmq

from zjobs.core.job import Job
from zjobs.core.options import ProcessorOptions
from zjobs.core.resources import ResourceFactory, Resources
from zjobs.errors import Timeout
from zjobs.processor.base import BaseZmqProcessor, Endpoints, Processor, build_options
from zjobs.transport.publisher import Publisher
from zjobs.transport.sockets import ServerSecurity, recv_multipart

__all__ = ["BaseZmqProcessor", "Endpoints", "Processor", "ZmqProcessor"]

log = logging.getLogger(__name__)

_POLLIN = int(zmq.POLLIN)
_BUSY_WAIT_MS = 10


class ZmqProcessor(BaseZmqProcessor):
    """A :class:`Processor` over ZeroMQ sockets, serving in a thread.

    Args:
        job: an object with ``run(request, resources)`` (optionally ``get_cache`` and
            ``put_cache``), or a function ``f(request, resources)``.
        options: how to serve (:class:`~zjobs.ProcessorOptions`: endpoints, name, cache,
            replay window, heartbeats, high-water marks, keepalive, Prometheus metrics
            (see :attr:`metrics`)...). Its fields may also
            be given as keywords (``requests=...``, ``dedup_size=...``), which override it.
            ``concurrency`` must be None or 1 and ``threads`` false: this processor answers
            one request at a time (use :class:`~zjobs.aio.AsyncZmqProcessor` for more).
        resources: a factory for the resources passed to the job (see
            :mod:`zjobs.core.resources`); called when serving starts, closed when it stops.
        context: the zmq context (the shared instance by default).
        security: server-side security (e.g. CURVE) for both sockets. If it has a
            ``release_server(socket)`` method, that is called after each socket is closed.

    Raises:
        BindError: an endpoint (or the metrics address) could not be bound (the error
            names it).
        TypeError: ``job`` is not a job, or a keyword is not an option.
        OptionsError: an option's value cannot be used.
        ImportError: ``metrics`` without prometheus_client installed.
    """

    def __init__(
        self,
        job: Job,
        options: ProcessorOptions | None = None,
        *,
        resources: ResourceFactory | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: ServerSecurity | None = None,
        **fields: Any,
    ) -> None:
        options = build_options(options, fields, "ZmqProcessor")
        if options.concurrency not in (None, 1) or options.threads:
            raise ValueError(f"ZmqProcessor answers one request at a time: concurrency="
                             f"{options.concurrency}, threads={options.threads} need "
                             "AsyncZmqProcessor (threads=True for a sync job)")
        self._resources = Resources(resources)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._runner: threading.Thread | None = None  # the caller's thread inside run()
        self._done = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        try:
            self._setup(job, options, context=context, security=security)
        except BaseException:
            self._close_wake()
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

        If the serving thread dies of anything but a job's failure (a job raising
        KeyboardInterrupt, a socket error), the processor stops and the next :meth:`stop`
        raises :class:`~zjobs.CrashedError` from it.

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
            except BaseException as exc:  # kept for stop(): the thread has no caller
                log.error("processor %s crashed", self.name, exc_info=exc)
                self._crashed(exc)
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
        # zmq_poll on a list made once: zmq.Poller rebuilds it on every call.
        waiting: list[tuple[Any, int]] = [(pull, _POLLIN), (self._wake_r, _POLLIN)]
        stopping = self._stopping
        publisher = Publisher(pub, name=self.name, instance=self.instance,
                              heartbeat_interval_s=self.options.heartbeat_interval_s,
                              counters=lambda: handler.counters.as_dict(),
                              load=handler.load.snapshot)
        handle, publish = handler.handle, publisher.publish
        log.debug("processor %s serving on %s", self.name, self.endpoints)
        publisher.start()
        # While requests keep coming, wait for the next one in a blocking receive: cheaper
        # than a poll and a zmq.Again per request (in a profile, a third of the processor's
        # instructions per sequential request). Once none came for _BUSY_WAIT_MS, wait in a
        # poll that request_stop() also wakes, so a stop waits at most that long.
        pull.rcvtimeo = _BUSY_WAIT_MS
        try:
            while not stopping.is_set():
                try:
                    frames = recv_multipart(pull)
                except zmq.Again:
                    zmq.zmq_poll(waiting)
                    continue
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
            CrashedError: the serving thread had died (raised once).
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
            self._done.set()
        self._raise_crash()

    close = stop

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until serving has ended (stopped, or crashed); True once it has."""
        return self._done.wait(timeout_s)

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
