"""Supervising child processes: start them, restart the ones that die, stop them all.

A :class:`Supervisor` runs commands (:class:`ChildSpec`) as child processes, forwards
their output line by line with the child's name in front (``parse | listening ...``; their
stderr, where logs go, to a separate ``child_err`` when given),
restarts a child that exits while the supervisor is running, after a backoff that
doubles with each quick failure (``backoff_s``, ``2 * backoff_s``, ... up to
``max_backoff_s``; a child that ran ``stable_s`` seconds starts over at ``backoff_s``), and
stops them all gracefully: SIGTERM, then SIGKILL for those still alive after
``stop_timeout_s``.

Children run in their own session, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops them in order. The supervisor installs no signal handlers:
its caller does (``zjobs up`` calls :meth:`Supervisor.request_stop` from SIGINT/SIGTERM).

The lifeline: every child inherits the read end of a pipe whose write end only the
supervisor holds, and finds its number in the ``ZJOBS_LIFELINE`` environment variable.
The supervisor never writes to it, so the child reads end-of-file exactly when the kernel
closed the supervisor's end: it exited or was killed, SIGKILL included. A child that
watches it (:func:`watch_lifeline`; ``zjobs serve`` and ``zjobs link`` do) stops then, so
no child outlives its supervisor. A pipe rather than Linux's parent-death signal: that
signal follows the *thread* that started the child, and it exists on Linux only.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Final

from zjobs.errors import StartError

__all__ = ["LIFELINE_ENV", "ChildSpec", "Probe", "Supervisor", "watch_lifeline"]

log = logging.getLogger(__name__)

_TICK_S = 0.05
_RECENT_LINES = 20  # output lines kept per child, to explain a failed start

LIFELINE_ENV: Final = "ZJOBS_LIFELINE"
"""Environment variable naming a child's lifeline: the file descriptor that reaches
end-of-file once the supervisor is gone."""

Probe = Callable[[str, float], object]
"""``probe(line, timeout_s)``: returns once the child answers, raises when it did not in
time; ``line`` is the child's ready line (``""`` when its spec has none)."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """A command to supervise.

    Args:
        name: the child's name in output lines and messages.
        argv: the command and its arguments.
        ready_line: the child is ready once a line of its output contains this text (and,
            with a probe, once the probe succeeded).
        probe: a :data:`Probe`, called (again until it succeeds) with the ready line once
            the child printed it, or at once without a ready line. A probe may check the
            line, for example that what answers is the child that printed it.
        describe: a line saying where the child listens, printed once it is ready.
        env: extra environment variables.
    """

    name: str
    argv: Sequence[str]
    ready_line: str | None = None
    probe: Probe | None = None
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
        self.err_reader: threading.Thread | None = None
        self.lifeline: int | None = None  # the write end of the child's lifeline pipe
        self.recent: collections.deque[str] = collections.deque(maxlen=_RECENT_LINES)

    def reaped(self) -> None:
        """The child exited: close its lifeline (a restart gets a new one)."""
        lifeline, self.lifeline = self.lifeline, None
        if lifeline is not None:
            os.close(lifeline)

    def failure(self) -> str:
        """The child's own account of why it stopped: its last ``Error:`` line, if any."""
        for line in reversed(self.recent):
            if line.startswith("Error: "):
                return line[len("Error: "):]
        return ""


class Supervisor:
    """Runs child processes, restarts the ones that die, stops them all on request.

    Args:
        out: where lines go (the children's output and the supervisor's messages); called
            from several threads, one line at a time.
        child_out: where the children's lines go instead, as ``child_out(name, line)``
            (under the same lock); None: ``out("NAME | line")``.
        child_err: where the lines the children write to their stderr (their logs and
            ``Error:`` lines) go, as ``child_err(name, line)`` (under the same lock); None:
            with their stdout lines.
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
        child_err: Callable[[str, str], None] | None = None,
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
        self._child_err = child_err
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
        child.reaped()
        # The pipe's ends are not inheritable: only the child gets the read end (pass_fds),
        # so the write end stays with the supervisor alone and closes when it dies.
        read_end, write_end = os.pipe()
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1", LIFELINE_ENV: str(read_end)}
        try:
            process = subprocess.Popen(
                list(spec.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if self._child_err is None else subprocess.PIPE,
                env=env, start_new_session=True, pass_fds=(read_end,))
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        child.process, child.lifeline = process, write_end
        child.started_at = time.monotonic()
        child.restart_at = None
        self.say(f"started {spec.name} (pid {process.pid})")
        assert process.stdout is not None
        child.reader = threading.Thread(target=self._forward, args=(child, process),
                                        name=f"zjobs-up-{spec.name}", daemon=True)
        child.reader.start()
        child.err_reader = None
        if process.stderr is not None:
            child.err_reader = threading.Thread(
                target=self._forward_err, args=(child, process.stderr),
                name=f"zjobs-up-{spec.name}-stderr", daemon=True)
            child.err_reader.start()
        if spec.probe is not None and spec.ready_line is None:
            self._start_probe(child, process, "")
        elif spec.ready_line is None:
            child.ready.set()

    def _forward(self, child: _Child, process: subprocess.Popen[bytes]) -> None:
        marker = child.spec.ready_line
        stream: IO[bytes] | None = process.stdout
        assert stream is not None
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                child.recent.append(line)
                if self._child_out is None:
                    self.say(f"{child.spec.name} | {line}")
                else:
                    with self._out_lock:
                        self._child_out(child.spec.name, line)
                if marker is not None and marker in line:
                    marker = None  # the first ready line counts
                    if child.spec.probe is None:
                        child.ready.set()
                    else:
                        self._start_probe(child, process, line)

    def _forward_err(self, child: _Child, stream: IO[bytes]) -> None:
        assert self._child_err is not None
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                child.recent.append(line)  # an Error: line explains a failed start
                with self._out_lock:
                    self._child_err(child.spec.name, line)

    def _start_probe(self, child: _Child, process: subprocess.Popen[bytes], line: str) -> None:
        threading.Thread(target=self._probe, args=(child, process, line),
                         name=f"zjobs-up-probe-{child.spec.name}", daemon=True).start()

    def _probe(self, child: _Child, process: subprocess.Popen[bytes], line: str) -> None:
        probe = child.spec.probe
        assert probe is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while process.poll() is None and not self._stop_requested:
            try:
                probe(line, min(1.0, max(0.05, deadline - time.monotonic())))
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
                for reader in (child.reader, child.err_reader):
                    if reader is not None:
                        reader.join(1.0)  # let its last words be printed first
                reason = child.failure()
                raise StartError(f"{child.spec.name} exited with {_describe_exit(code)} "
                                 f"while starting{': ' + reason if reason else ''}")
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
        child.reaped()
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
            for reader in (child.reader, child.err_reader):
                if reader is not None:
                    reader.join(2.0)
            self.say(f"stopped {child.spec.name} (pid {process.pid}, {_describe_exit(code)})")
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                child.reaped()
            for reader in (child.reader, child.err_reader):
                if reader is not None:
                    reader.join(2.0)
        return killed


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def watch_lifeline(fd: int, on_gone: Callable[[], object], *, grace_s: float = 1.0) -> None:
    """In a supervised child: call ``on_gone`` once the supervisor is gone, and let the
    kernel end the process if it still runs ``grace_s`` later (a SIGALRM timer: a process
    that handles SIGALRM itself must exit on it).

    Call it early with the descriptor named by :data:`LIFELINE_ENV`; ``on_gone`` should
    begin a graceful stop (it is called from a background thread). The grace is short on
    purpose: nobody supervises the child any more, and a new supervisor may be starting
    and need its endpoints.

    Raises:
        ValueError: ``fd`` is not a pipe (it cannot be a lifeline).
    """
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError as exc:
        raise ValueError(f"lifeline {fd} is not an open file descriptor: {exc}") from exc
    if not is_pipe:
        raise ValueError(f"lifeline {fd} is not a pipe")
    os.set_inheritable(fd, False)  # not passed on to processes the job may start

    def watch() -> None:
        try:
            while os.read(fd, 64):
                pass  # the supervisor writes nothing; only end-of-file matters
        except OSError:
            pass  # also an end: nothing can be read from the supervisor any more
        finally:
            os.close(fd)
        # The kernel ends the process when the timer fires (SIGALRM's default action),
        # whatever Python is doing by then: finalizing, or stuck in a job.
        signal.setitimer(signal.ITIMER_REAL, grace_s)
        log.warning("the supervisor is gone: stopping (at most %ss)", grace_s)
        on_gone()

    threading.Thread(target=watch, name="zjobs-lifeline", daemon=True).start()
