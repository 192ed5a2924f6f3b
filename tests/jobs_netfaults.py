"""The job the network-fault tests serve: it writes down every run, so that a test can count
how many times each call ran, on which host and when.

``ZJOBS_RUN_LOG=FILE zjobs serve jobs_netfaults:record --resources jobs_netfaults:run_log``
appends one line ``<request> <monotonic seconds>`` per run to FILE and answers the request
unchanged. ``time.monotonic`` reads the one clock every namespace of a machine shares, so
the times compare with those of the test and of the client.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class RunLog:
    """Appends one line per job run to a file (one ``write`` each, so lines never mix)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, key: Any) -> None:
        os.write(self._fd, f"{key} {time.monotonic():.6f}\n".encode())

    def close(self) -> None:
        os.close(self._fd)


def run_log() -> RunLog:
    """The resources factory: the log named by ``ZJOBS_RUN_LOG`` (closed when serving stops)."""
    return RunLog(os.environ["ZJOBS_RUN_LOG"])


def record(request: Any, runs: RunLog) -> Any:
    """Write the run down, then answer the request as it came."""
    runs.record(request)
    return request


def read_runs(path: Path) -> list[tuple[int, float]]:
    """The runs a :class:`RunLog` wrote: (request, monotonic time) in the order they ran."""
    if not path.exists():
        return []
    runs = []
    # The last piece is empty, or a line still being written: skip it.
    for line in path.read_text().split("\n")[:-1]:
        key, _, at = line.partition(" ")
        runs.append((int(key), float(at)))
    return runs
