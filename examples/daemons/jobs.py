"""Jobs served as daemons by the examples in this folder (`zjobs serve jobs:...`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any


def whoami(request: Any, resources: Any) -> dict[str, Any]:
    """Echo the request with the pid of the process that served it (shows load balancing)."""
    return {"request": request, "pid": os.getpid()}


def slow(request: float, resources: Any) -> float:
    """Sleep ``request`` seconds: a job to try a graceful stop on (SIGTERM mid-job)."""
    time.sleep(float(request))
    return request


class WordCount:
    """A class job: `zjobs serve jobs:WordCount` instantiates it with no arguments."""

    def run(self, request: str, resources: dict[str, int]) -> dict[str, int]:
        for word in request.split():
            resources[word] = resources.get(word, 0) + 1
        return dict(resources)


def totals() -> Iterator[dict[str, int]]:
    """Resources for WordCount (`--resources jobs:totals`): opened at start, closed at stop."""
    counts: dict[str, int] = {}
    yield counts
    print(f"word totals at shutdown: {counts}", flush=True)
