"""Overload: several clients submit a burst of calls at once to one slow processor daemon.

    python benchmarks/overload.py [--clients 10] [--calls 2000] [--job-ms 1] [--timeout 40]

The processor is a real ``zjobs serve zjobs.demo:sleep`` daemon (each call sleeps
``--job-ms``); each client is its own process (this script, run with ``client``) that
submits ``--calls`` calls at once, with default options and ``retries=0``, then waits for
every answer. So the processor works through a backlog of clients x calls requests while
every client's requests wait in its queues: nothing may be lost on the way. Reported:
calls answered, lost (``CallTimeout``), other errors, job runs beyond one per call (from
the processor's heartbeat counters) and resident memory of the processor and the largest
client. Exit status 1 if any call was not answered exactly once.
``tests/test_reliability_backpressure.py`` runs a smaller version in CI.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

LISTENING = re.compile(r"^listening requests=(\S+) responses=(\S+) name=(\S+)(?: instance=\S+)?$")


@dataclass(frozen=True)
class OverloadResult:
    """What an overload run counted."""

    clients: int
    calls: int
    answered: int
    lost: int
    errors: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    """Jobs the processor ran (its ``ok`` counter): one per call when nothing ran twice."""
    received: int = 0
    """Requests the processor received (its ``received`` counter, pings included)."""
    seconds: float = 0.0
    processor_rss_kib: tuple[int, int] = (0, 0)
    client_rss_max_kib: int = 0

    @property
    def total(self) -> int:
        return self.clients * self.calls

    @property
    def duplicated(self) -> int:
        """Job runs beyond one per call."""
        return max(0, self.runs - self.total)

    def summary(self) -> str:
        before, after = self.processor_rss_kib
        return (f"{self.clients} clients x {self.calls} calls in {self.seconds:.1f} s: "
                f"{self.answered}/{self.total} answered, {self.lost} lost, errors "
                f"{self.errors or 0}, {self.duplicated} duplicated (processor ran {self.runs} "
                f"jobs, received {self.received} requests); processor RSS {before} -> "
                f"{after} KiB, largest client RSS {self.client_rss_max_kib} KiB")


def rss_kib(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), in KiB."""
    with open(f"/proc/{pid or 'self'}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def zjobs_command() -> list[str]:
    script = Path(sys.executable).with_name("zjobs")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from zjobs.cli import main; main()"]


def processor_counters(responses: str, *, after: float) -> dict[str, int]:
    """The counters of the first heartbeat sent later than ``after`` (wall-clock seconds)."""
    from zjobs import ReceiveTimeout, ZmqReceiver
    from zjobs.wire.heartbeat import HEARTBEAT_TOPIC, Heartbeat

    with ZmqReceiver(responses, topics=[HEARTBEAT_TOPIC]) as receiver:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            frames = receiver.receive_frames(time.monotonic() + 5)
            if frames is None:
                continue
            beat = Heartbeat.from_frames(frames)
            if beat.time_ms / 1000 > after:
                return dict(beat.counters)
    raise ReceiveTimeout(30)


def run_overload(clients: int = 10, calls: int = 2000, job_ms: float = 1.0,
                 timeout_s: float = 40.0) -> OverloadResult:
    """Start a daemon and ``clients`` client processes; each submits ``calls`` at once."""
    daemon = subprocess.Popen(
        [*zjobs_command(), "serve", "zjobs.demo:sleep", "--requests", "tcp://127.0.0.1:*",
         "--responses", "tcp://127.0.0.1:*", "--name", "overload", "--log-level", "warning"],
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
                [sys.executable, __file__, "client", requests, responses, str(calls),
                 str(job_ms), str(timeout_s)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a client did not get ready")
        rss_start = rss_kib(daemon.pid)
        start = time.monotonic()
        for worker in workers:  # all bursts at once
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            out, _ = worker.communicate(timeout=timeout_s + clients * calls * job_ms / 1000
                                        + 120)
            reports.append(json.loads(out))
        seconds = time.monotonic() - start
        rss_end = rss_kib(daemon.pid)
        counters = processor_counters(responses, after=time.time())
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        daemon.terminate()
        daemon.wait(30)
        if daemon.stdout is not None:
            daemon.stdout.close()
    errors: Counter[str] = Counter()
    for report in reports:
        errors.update(report["errors"])
    return OverloadResult(
        clients=clients, calls=calls,
        answered=sum(report["answered"] for report in reports),
        lost=sum(report["lost"] for report in reports),
        errors=dict(errors), runs=counters.get("ok", 0),
        received=counters.get("received", 0), seconds=seconds,
        processor_rss_kib=(rss_start, rss_end),
        client_rss_max_kib=max(report["rss_kib"] for report in reports))


def client_main(requests: str, responses: str, calls: int, job_ms: float,
                timeout_s: float) -> None:
    """One client process: ``calls`` submitted at once, every answer awaited; JSON on stdout."""
    from zjobs import CallTimeout, Client, ZJobsError

    with Client.connect(requests, responses, timeout_s=timeout_s, retries=0) as client:
        client.wait_ready(timeout_s=60)
        print("ready", flush=True)
        sys.stdin.readline()
        # Distinct requests, so each answer is checked against its own call.
        values = [job_ms / 1000 + n * 1e-9 for n in range(calls)]
        futures = [client.submit(value) for value in values]
        answered = lost = 0
        errors: Counter[str] = Counter()
        for value, future in zip(values, futures, strict=True):
            try:
                if future.result(timeout=timeout_s + 60) == value:
                    answered += 1
                else:
                    errors["wrong answer"] += 1
            except CallTimeout:
                lost += 1
            except ZJobsError as exc:
                errors[type(exc).__name__] += 1
        rss = rss_kib()
    json.dump({"answered": answered, "lost": lost, "errors": errors, "rss_kib": rss},
              sys.stdout)


def main() -> None:
    if sys.argv[1:2] == ["client"]:
        requests, responses, calls, job_ms, timeout_s = sys.argv[2:7]
        client_main(requests, responses, int(calls), float(job_ms), float(timeout_s))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--calls", type=int, default=2000, help="calls per client, at once")
    parser.add_argument("--job-ms", type=float, default=1.0, help="how long each job sleeps")
    parser.add_argument("--timeout", type=float, default=40.0, help="each call's timeout_s")
    args = parser.parse_args()
    result = run_overload(args.clients, args.calls, args.job_ms, args.timeout)
    print(result.summary())
    if result.answered != result.total or result.duplicated:
        sys.exit(1)


if __name__ == "__main__":
    main()
