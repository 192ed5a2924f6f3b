"""Jobs and helpers for the reliability fault tests (``tests/test_reliability_*.py``).

The daemons run ``zjobs serve jobs_reliability:<job>`` as real subprocesses, started and
stopped by PID through :class:`jobs_interop.Peer`.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from jobs_interop import REPO, Peer, zjobs_command


def double(request: Any, resources: Any) -> Any:
    """An int doubled (quickly); anything else echoed."""
    return request * 2 if type(request) is int else request


def quick(request: Any, resources: Any) -> Any:
    """Like :func:`double`, after 1 ms: enough for requests to queue up in a processor."""
    time.sleep(0.001)
    return double(request, resources)


def sleepy(request: Any, resources: Any) -> Any:
    """Like :func:`double`, after 5 ms: a processor with a backlog takes a while to drain."""
    time.sleep(0.005)
    return double(request, resources)


def serve(job: str, requests: str = "tcp://127.0.0.1:*", responses: str = "tcp://127.0.0.1:*",
          *, name: str = "rel", extra: Sequence[str] = ()) -> Peer:
    """Start ``zjobs serve jobs_reliability:<job>`` and wait for its listening line."""
    return Peer([*zjobs_command(), "serve", f"jobs_reliability:{job}", "--requests", requests,
                 "--responses", responses, "--name", name, "--log-level", "warning", *extra])


def rss_kib(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), in KiB, from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


def load_benchmark(name: str) -> Any:
    """``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package), so a
    test runs a short version of a benchmark."""
    spec = importlib.util.spec_from_file_location(f"zjobs_{name}",
                                                  REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def blob(request: Any, resources: Any) -> Any:
    """``request`` zero bytes: large responses on demand."""
    return bytes(request)


def serve_hwm(job: str, sndhwm: int) -> Peer:
    """Like :func:`serve`, with the processor's PUB high-water mark set (not a CLI option):
    runs this module as a script."""
    return Peer([sys.executable, __file__, job, str(sndhwm)])


def _main(job: str, sndhwm: str) -> None:
    # A minimal daemon for serve_hwm: the same listening line as `zjobs serve`; stops on
    # SIGTERM like it.
    from zjobs import ZmqProcessor

    proc = ZmqProcessor(globals()[job], name="hwm", sndhwm=int(sndhwm))
    signal.signal(signal.SIGTERM, lambda *_: proc.request_stop())
    ep = proc.endpoints
    print(f"listening requests={ep.requests} responses={ep.responses} name=hwm", flush=True)
    proc.run()


RUN_LOG_ENV = "ZJOBS_TEST_RUN_LOG"
"""The folder where :func:`logged` appends its runs, one file per daemon process."""

_run_log: int | None = None


def logged(request: Any, resources: Any) -> Any:
    """Like :func:`picky` for ints (a negative one raises ValueError), after appending the
    request to ``<$ZJOBS_TEST_RUN_LOG>/<pid>.log``: a side channel the test reads to count
    the job's runs per value and per daemon run, also of one killed before it answered
    (each line is one write with O_APPEND, in the kernel once written)."""
    global _run_log
    if _run_log is None:
        folder = os.environ[RUN_LOG_ENV]
        _run_log = os.open(os.path.join(folder, f"{os.getpid()}.log"),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_run_log, f"{request!r}\n".encode())
    if type(request) is int and request < 0:
        raise ValueError(f"negative: {request}")
    return double(request, resources)


def paced(request: Any, resources: Any) -> Any:
    """:func:`logged`, and every 32nd int takes 1 ms more: a coalesced batch of them then
    takes a few ms (still fast per call), so a kill lands in the middle of one."""
    if type(request) is int and request % 32 == 31:
        time.sleep(0.001)
    return logged(request, resources)


def picky(request: Any, resources: Any) -> Any:
    """An int doubled; ``{"fail": x}`` raises ValueError; anything else echoed."""
    if isinstance(request, dict) and "fail" in request:
        raise ValueError(str(request["fail"]))
    return double(request, resources)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
