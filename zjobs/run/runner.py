"""Processors in child processes: separate processes without a shell.

A :class:`ProcessorProcess` starts a :class:`~zjobs.run.daemon.Daemon` in a child process
created with the ``spawn`` start method (a fresh interpreter, so it is safe to use from a
program that runs threads), waits until the child has bound its endpoints, and reports
them. ``stop()`` asks for a graceful stop (SIGTERM: the job in progress finishes and its
response is published), ``kill()`` does not wait. A child whose parent dies stops by
itself, so no processor outlives the program that started it::

    with ProcessorProcess("myjobs:square") as child, child.client() as client:
        print(child.endpoints, client.call(7))
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Self

from zjobs.client.sync import Client
from zjobs.core.handler import Counters
from zjobs.core.job import Job
from zjobs.core.options import ProcessorOptions
from zjobs.core.resources import ResourceFactory
from zjobs.errors import BindError, LoadError, StartError, Timeout, ZJobsError
from zjobs.processor.base import Endpoints, build_options
from zjobs.run.daemon import Daemon, ServedProcessor, ServeSettings
from zjobs.run.loader import add_app_dir
from zjobs.transport.sockets import ServerSecurity

__all__ = ["ProcessorProcess"]

log = logging.getLogger(__name__)


class ProcessorProcess:
    """A processor serving in a child process, with a handle to stop or kill it.

    The job and resources factory are given by name (``"MODULE:OBJECT"``, imported in the
    child) or as picklable objects (module-level functions, classes, instances). The child
    is handed the :class:`~zjobs.ServeSettings` built from them (pickled), so every
    processor option reaches it.

    Args:
        job: the job, or ``"MODULE:OBJECT"``.
        options: how the child serves (:class:`~zjobs.ProcessorOptions`: endpoints, name,
            concurrency, cache, replay window, heartbeats...); its fields may also be given
            as keywords, which override it. Wildcard ports are resolved, see
            :attr:`endpoints`; inproc cannot cross processes: use tcp or ipc.
        resources: a resources factory, or ``"MODULE:FACTORY"``.
        security: server-side security (must be picklable).
        log_level: when given, the child logs its lifecycle to stderr at this level.
        app_dir: a folder the child imports the job from (the current folder by default).

    Raises:
        TypeError: a keyword is not a processor option.
        OptionsError: an option's value cannot be used.
    """

    def __init__(
        self,
        job: str | Job,
        options: ProcessorOptions | None = None,
        *,
        resources: str | ResourceFactory | None = None,
        security: ServerSecurity | None = None,
        log_level: str | int | None = None,
        app_dir: str | None = None,
        **fields: Any,
    ) -> None:
        self.settings = ServeSettings.of(job, build_options(options, fields, "ProcessorProcess"),
                                         resources=resources, security=security)
        """What the child serves, and how."""
        self.log_level = log_level
        self.app_dir = app_dir or os.getcwd()
        self.endpoints: Endpoints | None = None
        """The endpoints the child bound (wildcards resolved); None until started."""
        self.name: str | None = None
        """The processor's name, as written into its responses; None until started."""
        self.counters: Counters | None = None
        """The final counters, reported by the child when it stopped gracefully."""
        self._process: multiprocessing.process.BaseProcess | None = None
        self._events: Connection | None = None  # child -> parent
        self._control: Connection | None = None  # parent -> child; closing it stops the child

    def __repr__(self) -> str:
        where = (f" requests={self.endpoints.requests} responses={self.endpoints.responses}"
                 if self.endpoints else "")
        return f"<ProcessorProcess {self.settings.describe()} {self.state} pid={self.pid}{where}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The child's process id, once started."""
        return self._process.pid if self._process is not None else None

    @property
    def exitcode(self) -> int | None:
        """The child's exit status (negative: killed by that signal); None while it runs."""
        return self._process.exitcode if self._process is not None else None

    @property
    def state(self) -> str:
        """One of created, running, stopped."""
        if self._process is None:
            return "created"
        return "running" if self._process.is_alive() else "stopped"

    def is_alive(self) -> bool:
        """True while the child process runs."""
        return self._process is not None and self._process.is_alive()

    @property
    def connect_endpoints(self) -> Endpoints:
        """The endpoints a local peer connects to (wildcard hosts become loopback)."""
        if self.endpoints is None:
            raise ZJobsError("the processor process has not started")
        return self.endpoints.connectable()

    def client(self, **options: Any) -> Client:
        """A :class:`~zjobs.Client` connected to this processor."""
        ep = self.connect_endpoints
        return Client.connect(ep.requests, ep.responses, **options)

    def start(self, timeout_s: float = 60.0) -> Self:
        """Start the child; return once it serves, with :attr:`endpoints` set.

        Raises:
            LoadError: the job or resources factory cannot be loaded in the child.
            BindError: an endpoint cannot be bound.
            StartError: the child failed otherwise (resources factory raised, it died).
            Timeout: it did not start within ``timeout_s`` (it is then killed).
        """
        return self.launch().wait_started(timeout_s)

    def launch(self) -> Self:
        """Start the child process without waiting for it to serve; see
        :meth:`wait_started`. Launch several, then wait for each, to start them in parallel.
        """
        if self._process is not None:
            raise ZJobsError("a ProcessorProcess starts once; create a new one")
        ctx = multiprocessing.get_context("spawn")
        events_r, events_w = ctx.Pipe(duplex=False)
        control_r, control_w = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_child_main,
            args=(self.settings, events_w, control_r, self.log_level, self.app_dir),
            name=f"zjobs-{self.settings.describe()}",
            daemon=True,
        )
        self._process, self._events, self._control = process, events_r, control_w
        try:
            process.start()
        finally:
            events_w.close()
            control_r.close()
        return self

    def wait_started(self, timeout_s: float = 60.0) -> Self:
        """Wait until the launched child serves; the errors are those of :meth:`start`."""
        process, events = self._process, self._events
        if process is None:
            raise ZJobsError("launch() the processor process first")
        if self.endpoints is not None:
            return self
        if events is None:
            raise StartError(f"processor process {self.settings.describe()} has stopped")
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"processor process {self.settings.describe()} did not "
                                  f"start within {timeout_s}s")
                if wait([events, process.sentinel], left) and events.poll():
                    try:
                        message = events.recv()
                    except EOFError:
                        message = ("died",)
                    if self._started(message):
                        return self
                elif not process.is_alive():
                    self._started(("died",))
        except BaseException:
            self.kill()
            raise

    def _started(self, message: tuple[Any, ...]) -> bool:
        kind = message[0]
        if kind == "ready":
            self.endpoints = Endpoints(message[1], message[2])
            self.name = message[3]
            return True
        if kind == "error":
            _, error_type, text, attrs = message
            self._process_join(10.0)  # it exits by itself; kill() after that is a no-op
            if error_type == "LoadError":
                raise LoadError(attrs.get("spec", ""), text)
            if error_type == "BindError":
                raise BindError(attrs["endpoint"], attrs["reason"])
            raise StartError(text)
        if kind == "died":
            self._process_join(5.0)
            raise StartError(f"processor process {self.settings.describe()} exited with "
                             f"status {self.exitcode} before serving")
        return False

    def _process_join(self, timeout_s: float | None) -> None:
        if self._process is not None:
            self._process.join(timeout_s)

    def stop(self, timeout_s: float | None = 30.0) -> int | None:
        """Stop gracefully (SIGTERM) and wait; kill the child if it takes over ``timeout_s``.

        Idempotent. Returns the exit status: 0 after a graceful stop.
        """
        process = self._process
        if process is None:
            return None
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            process.join(timeout_s)
            if process.is_alive():
                log.warning("processor process %s (pid %s) did not stop within %ss: killing "
                            "it", self.settings.describe(), process.pid, timeout_s)
        return self.kill()

    close = stop

    def kill(self) -> int | None:
        """Kill the child at once (SIGKILL; the job in progress is lost) and reap it."""
        process = self._process
        if process is None:
            return None
        if process.is_alive():
            process.kill()
        process.join()
        self._collect()
        return process.exitcode

    def _collect(self) -> None:
        events, control = self._events, self._control
        self._events = self._control = None
        if control is not None:
            control.close()
        if events is None:
            return
        try:
            while events.poll():
                message = events.recv()
                if message[0] == "stopped":
                    self.counters = Counters(**message[1])
        except (EOFError, OSError):
            pass
        finally:
            events.close()


def _child_main(settings: ServeSettings, events: Connection, control: Connection,
                log_level: str | int | None, app_dir: str) -> None:
    """The child process: serve ``settings`` until SIGTERM/SIGINT or the parent goes away."""
    if log_level is not None:
        logging.basicConfig(stream=sys.stderr, level=log_level,
                            format="%(asctime)s %(levelname)s %(name)s[%(process)d]: "
                                   "%(message)s")
    add_app_dir(app_dir)
    daemon = Daemon(settings, handle_signals=True)

    def watch_parent() -> None:
        # The parent holds the other end of `control`: EOF means it closed it or died.
        try:
            control.recv()
        except (EOFError, OSError):
            pass
        daemon.request_stop("parent gone")

    threading.Thread(target=watch_parent, name="zjobs-runner-watch", daemon=True).start()

    def ready(processor: ServedProcessor) -> None:
        ep = processor.endpoints
        events.send(("ready", ep.requests, ep.responses, processor.name))

    try:
        counters = daemon.run(on_ready=ready)
    except Exception as exc:
        attrs = {k: getattr(exc, k) for k in ("spec", "endpoint", "reason") if hasattr(exc, k)}
        _send(events, ("error", type(exc).__name__, str(exc), attrs))
        sys.exit(2 if isinstance(exc, LoadError | BindError) else 1)
    _send(events, ("stopped", counters.as_dict()))


def _send(events: Connection, message: tuple[Any, ...]) -> None:
    try:
        events.send(message)
    except OSError:
        pass  # the parent is gone
