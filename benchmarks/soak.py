"""Soak test: several clients call one processor daemon at full speed for a fixed time.

    python benchmarks/soak.py [--seconds 60] [--clients 4] [--window 100]

The processor is a real ``zjobs serve zjobs.demo:square`` daemon; each client is its own
process (this script, run with ``client``) with ``--window`` calls in flight. Reported:
calls per second, latency p50/p99 (from submit to result), errors, lost calls (no answer
within 30 s) and the processor's resident memory at the start and the end.
``tests/test_soak_short.py`` runs a 5-second version in CI.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

LISTENING = re.compile(r"^listening requests=(\S+) responses=(\S+) name=(\S+)(?: instance=\S+)?$")
CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SoakResult:
    """What a soak run measured."""

    seconds: float
    clients: int
    calls: int
    errors: int
    lost: int
    p50_ms: float
    p99_ms: float
    rss_start_kib: int
    rss_end_kib: int

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds

    def summary(self) -> str:
        return (f"{self.clients} clients, {self.seconds:.1f} s: {self.calls} calls, "
                f"{self.per_second:,.0f} calls/s, p50 {self.p50_ms:.2f} ms, "
                f"p99 {self.p99_ms:.2f} ms, errors {self.errors}, lost {self.lost}, "
                f"processor RSS {self.rss_start_kib} -> {self.rss_end_kib} KiB")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def zjobs_command() -> list[str]:
    script = Path(sys.executable).with_name("zjobs")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from zjobs.cli import main; main()"]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_soak(seconds: float = 60.0, clients: int = 4, window: int = 100) -> SoakResult:
    """Start a daemon and ``clients`` client processes, run for ``seconds``, measure."""
    daemon = subprocess.Popen(
        [*zjobs_command(), "serve", "zjobs.demo:square", "--requests", "tcp://127.0.0.1:*",
         "--responses", "tcp://127.0.0.1:*", "--name", "soak", "--log-level", "warning"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    workers: list[subprocess.Popen[str]] = []
    try:
        assert daemon.stdout is not None
        match = LISTENING.match(daemon.stdout.readline().strip())
        if match is None:
            raise RuntimeError("the daemon did not print its listening line")
        requests, responses = match.group(1), match.group(2)
        for _ in range(clients):
            workers.append(subprocess.Popen(
                [sys.executable, __file__, "client", requests, responses, str(seconds),
                 str(window)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a client did not get ready")
        rss_start = rss_kib(daemon.pid)
        for worker in workers:  # start together
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            out, _ = worker.communicate(timeout=seconds + CALL_TIMEOUT_S + 60)
            reports.append(json.loads(out))
        rss_end = rss_kib(daemon.pid)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        daemon.terminate()
        daemon.wait(30)
        if daemon.stdout is not None:
            daemon.stdout.close()
    latencies = sorted(x for report in reports for x in report["latencies_ms"])
    return SoakResult(
        seconds=max(report["seconds"] for report in reports),
        clients=clients,
        calls=sum(report["calls"] for report in reports),
        errors=sum(report["errors"] for report in reports),
        lost=sum(report["lost"] for report in reports),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        rss_start_kib=rss_start,
        rss_end_kib=rss_end,
    )


def client_main(requests: str, responses: str, seconds: float, window: int) -> None:
    """One client process: ``window`` calls in flight until the time is up; JSON on stdout."""
    from zjobs import CallTimeout, Client

    with Client.connect(requests, responses, timeout_s=CALL_TIMEOUT_S) as client:
        client.wait_ready(timeout_s=60)
        print("ready", flush=True)
        sys.stdin.readline()
        slots = threading.Semaphore(window)
        lock = threading.Lock()
        latencies: list[float] = []
        counts = {"calls": 0, "errors": 0, "lost": 0}

        def finished(future: Any, started: float, n: int) -> None:
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                try:
                    if future.result() == n * n:
                        counts["calls"] += 1
                        latencies.append(round(elapsed, 3))
                    else:
                        counts["errors"] += 1
                except CallTimeout:
                    counts["lost"] += 1
                except Exception:
                    counts["errors"] += 1
            slots.release()

        start = time.perf_counter()
        end = start + seconds
        n = 0
        while time.perf_counter() < end:
            slots.acquire()
            started = time.perf_counter()
            future = client.submit(n)
            future.add_done_callback(partial(finished, started=started, n=n))
            n += 1
        for _ in range(window):  # let the calls in flight finish
            slots.acquire(timeout=CALL_TIMEOUT_S + 10)
        elapsed = time.perf_counter() - start
    with lock:
        json.dump({"seconds": elapsed, "latencies_ms": latencies, **counts}, sys.stdout)


def main() -> None:
    if sys.argv[1:2] == ["client"]:
        requests, responses, seconds, window = sys.argv[2:6]
        client_main(requests, responses, float(seconds), int(window))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--window", type=int, default=100, help="calls in flight per client")
    args = parser.parse_args()
    result = run_soak(args.seconds, args.clients, args.window)
    print(result.summary())
    if result.errors or result.lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
