"""``zjobs up`` as a real subprocess, for the tests of systems (``tests/test_up.py``,
``tests/test_reliability_chain.py``)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest


class Up:
    """``zjobs up`` as a subprocess, its output lines collected by a reader thread."""

    def __init__(self, path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zjobs", "up", *args, str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=path.parent,
            env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, name="test-up-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout_s: float = 60.0) -> str:
        """The first new line matching ``predicate``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no matching line within {timeout_s}s:\n" + "\n".join(self.lines))
            if line is None:
                pytest.fail("zjobs up exited:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if predicate(line):
                return line

    def pids(self) -> dict[str, int]:
        """The pid of every child started, by name (the latest one per name)."""
        found = (re.match(r"started (\S+) \(pid (\d+)\)", line) for line in self.lines)
        return {m[1]: int(m[2]) for m in found if m}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, wait for the exit code, and collect the remaining lines."""
        self.process.send_signal(sig)
        code = self.process.wait(60)
        self.stop_reading()
        return code

    def stop_reading(self) -> None:
        """Collect every line left, once the process has exited."""
        self._reader.join(10)
        while (line := self._queue.get()) is not None:
            self.lines.append(line)

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(10)
        for pid in self.pids().values():  # children left behind by a failed test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
