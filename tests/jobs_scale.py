"""The job of the scale-out tests: 10 ms of sleep (I/O-bound), and a line per run.

``zjobs serve jobs_scale:nap`` answers ``{"n": N}`` with N after sleeping 10 ms and prints
``ran N`` on stdout, so the test counts how many times each request ran, on every processor.
"""

from __future__ import annotations

import time
from typing import Any


def nap(request: Any, resources: Any) -> Any:
    """Sleep 10 ms, print ``ran N``, answer N."""
    time.sleep(0.01)
    print(f"ran {request['n']}", flush=True)
    return request["n"]
