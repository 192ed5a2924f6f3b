"""Supervising child processes: start them, restart the ones that die, stop them all.

A :class:`Supervisor` runs commands (:class:`ChildSpec`) as child processes, forwards
their output line by line with the child's name in front (``parse | listening ...``),
restarts a child that exits while the supervisor is running, after a backoff that
doubles with each quick failure (``backoff_s``, ``2 * backoff_s``, ... up to
``max_backoff_s``; a child that ran ``stable_s`` seconds starts over at ``backoff_s``), and
stops them all gracefully: SIGTERM, then SIGKILL for those still alive after
``stop_timeout_s``.

Children run in their own session, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops them in order. The supervisor installs no signal handlers:
its caller does (``zjobs up`` calls :meth:`Supervisor.request_stop` from SIGINT/SIGTERM).
If the supervisor itself is killed with SIGKILL its children keep running; stop them by
their pids, which it prints.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from zjobs.errors import StartError

__all__ = ["ChildSpec", "Supervisor"]

log = logging.getLogger(__name__)

_TICK_S = 0.05


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """A command to supervise.

    Args:
        name: the child's name in output lines and messages.
        argv: the command and its arguments.
        ready_line: the child is ready once a line of its output contains this text.
        probe: alternatively, a function ``probe(timeout_s)`` that returns once the child
            answers (raising when it does not in time).
        describe: a line saying where the child listens, printed once it is ready.
        env: extra environment variables.
    """

    name: str
    argv: Sequence[str]
    ready_line: str | None = None
    probe: Callable[[float], object] | None = None
    describe: str = ""
    env: dict[str, str] = field(default_factory=dict)


class _Child:
    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.failures = 0  # consecutive quick failures
        self.restarts = 0
        self.restart_at: float | None = None
        self.ready = threading.Event()
        self.reader: threading.Thread | None = None


class Supervisor:
    """Runs child processes, restarts the ones that die, stops them all on request.

    Args:
        out: where lines go (the children's output and the supervisor's messages); called
            from several threads, one line at a time.
        child_out: where the children's lines go instead, as ``child_out(name, line)``
            (under the same lock); None: ``out("NAME | line")``.
        backoff_s: delay before the first restart of a child.
        max_backoff_s: longest delay between restarts.
        stable_s: a child that ran this long before dying is restarted after ``backoff_s``.
        stop_timeout_s: how long children get to exit after SIGTERM before SIGKILL.
        ready_timeout_s: how long :meth:`start` waits for each group to be ready.
    """

    def __init__(
        self,
        *,
        out: Callable[[str], None],
        child_out: Callable[[str, str], None] | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stable_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self.stop_timeout_s = stop_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.children: list[_Child] = []
        self._out = out
        self._child_out = child_out
        self._out_lock = threading.Lock()
        self._stop_requested = False  # a plain flag: set from signal handlers

    def __repr__(self) -> str:
        alive = sum(c.process is not None and c.process.poll() is None for c in self.children)
        return f"<Supervisor children={len(self.children)} alive={alive}>"

    def say(self, line: str) -> None:
        """Write one line through ``out``."""
        with self._out_lock:
            self._out(line)

    def pid(self, name: str) -> int | None:
        """The pid of the child called ``name`` (None when it is not running)."""
        for child in self.children:
            if child.spec.name == name and child.process is not None:
                return child.process.pid
        return None

    # -- starting ------------------------------------------------------------------------

    def start(self, specs: Sequence[ChildSpec]) -> None:
        """Start a group of children and wait until each one is ready.

        Raises:
            StartError: a child exited, or was not ready within ``ready_timeout_s`` (the
                children already started keep running: call :meth:`stop`).
        """
        group = [_Child(spec) for spec in specs]
        self.children.extend(group)
        for child in group:
            self._launch(child)
        deadline = time.monotonic() + self.ready_timeout_s
        for child in group:
            self._wait_ready(child, deadline)
            if child.spec.describe:
                self.say(child.spec.describe)

    def _launch(self, child: _Child) -> None:
        spec = child.spec
        child.ready.clear()
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        child.process = subprocess.Popen(
            list(spec.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None
        self.say(f"started {spec.name} (pid {child.process.pid})")
        assert child.process.stdout is not None
        child.reader = threading.Thread(target=self._forward, args=(child, child.process.stdout),
                                        name=f"zjobs-up-{spec.name}", daemon=True)
        child.reader.start()
        if spec.probe is not None:
            threading.Thread(target=self._probe, args=(child, child.process),
                             name=f"zjobs-up-probe-{spec.name}", daemon=True).start()
        elif spec.ready_line is None:
            child.ready.set()

    def _forward(self, child: _Child, stream: IO[bytes]) -> None:
        marker = child.spec.ready_line
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                if self._child_out is None:
                    self.say(f"{child.spec.name} | {line}")
                else:
                    with self._out_lock:
                        self._child_out(child.spec.name, line)
                if marker is not None and marker in line:
                    child.ready.set()

    def _probe(self, child: _Child, process: subprocess.Popen[bytes]) -> None:
        probe = child.spec.probe
        assert probe is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while process.poll() is None and not self._stop_requested:
            try:
                probe(min(1.0, max(0.05, deadline - time.monotonic())))
            except Exception as exc:
                if time.monotonic() >= deadline:
                    log.warning("%s did not answer within %ss: %s", child.spec.name,
                                self.ready_timeout_s, exc)
                    return
                continue
            child.ready.set()
            return

    def _wait_ready(self, child: _Child, deadline: float) -> None:
        process = child.process
        assert process is not None
        while not child.ready.wait(_TICK_S):
            code = process.poll()
            if code is not None:
                if child.reader is not None:
                    child.reader.join(1.0)  # let its last words be printed first
                raise StartError(f"{child.spec.name} exited with {_describe_exit(code)} "
                                 "while starting")
            if self._stop_requested:
                raise StartError(f"stopped while {child.spec.name} was starting")
            if time.monotonic() >= deadline:
                raise StartError(f"{child.spec.name} was not ready within "
                                 f"{self.ready_timeout_s}s")

    # -- running -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Make :meth:`run` return; safe to call from a signal handler."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called."""
        return self._stop_requested

    def run(self) -> None:
        """Watch the children and restart those that exit, until :meth:`request_stop`."""
        while not self._stop_requested:
            time.sleep(_TICK_S)
            if self._stop_requested:
                break
            now = time.monotonic()
            for child in self.children:
                self._watch(child, now)

    def _watch(self, child: _Child, now: float) -> None:
        process = child.process
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restarts += 1
                self._launch(child)
                threading.Thread(target=self._announce_ready, args=(child,),
                                 name=f"zjobs-up-ready-{child.spec.name}", daemon=True).start()
            return
        if process is None or (code := process.poll()) is None:
            return
        ran_s = now - child.started_at
        child.failures = 1 if ran_s >= self.stable_s else child.failures + 1
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (child.failures - 1))
        child.restart_at = now + delay
        self.say(f"{child.spec.name} (pid {process.pid}) exited with {_describe_exit(code)} "
                 f"after {ran_s:.1f}s; restarting in {delay:.1f}s")

    def _announce_ready(self, child: _Child) -> None:
        process = child.process
        while process is child.process and not self._stop_requested:
            if child.ready.wait(_TICK_S * 4):
                self.say(f"{child.spec.name} restarted (pid {process.pid if process else '?'},"
                         f" restart {child.restarts}) and ready")
                return

    # -- stopping ------------------------------------------------------------------------

    def stop(self) -> int:
        """SIGTERM every child (the last started first), SIGKILL those still alive after
        ``stop_timeout_s``; return how many had to be killed. Idempotent."""
        self._stop_requested = True
        alive = [c for c in reversed(self.children)
                 if c.process is not None and c.process.poll() is None]
        for child in alive:
            assert child.process is not None
            try:
                child.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_timeout_s
        killed = 0
        for child in alive:
            process = child.process
            assert process is not None
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
                killed += 1
            if child.reader is not None:
                child.reader.join(2.0)
            self.say(f"stopped {child.spec.name} (pid {process.pid}, {_describe_exit(code)})")
        for child in self.children:
            if child.reader is not None:
                child.reader.join(2.0)
        return killed


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
