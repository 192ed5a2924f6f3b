"""The zjobs benchmark: zjobs against a hand-written pyzmq + msgpack loop, in one run.

Both sides use the same topology (PUSH -> PULL, PUB -> SUB), the same message layout
(a msgpack header map and a msgpack body) and a processor in a separate process, so the
ratios zjobs / raw say what the framework costs or gains. Run it with
``python benchmarks/run.py`` or ``zjobs bench`` (from a source checkout: this file is not
part of the installed package); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import zmq

__all__ = ["Results", "Settings", "main", "run", "write_json"]


# -- jobs (module level so spawned children can import them) ---------------------------------

def square(request: int, resources: Any) -> int:
    """The trivial job."""
    return request * request


def burn(request: int, resources: Any) -> int:
    """A CPU-bound job: about a millisecond of pure Python."""
    total = 0
    for i in range(20_000):
        total += i * request
    return total


def echo(request: Any, resources: Any) -> Any:
    """Returns the request (for the 64 KiB payload)."""
    return request


def slow_square(request: int, resources: Any) -> int:
    """The trivial job behind a cache: a hit skips the millisecond."""
    time.sleep(0.001)
    return request * request


JOBS: dict[str, Callable[[Any, Any], Any]] = {
    "square": square, "burn": burn, "echo": echo, "slow_square": slow_square,
}


# -- the processors, each in its own process --------------------------------------------------

def _serve_zjobs(job: str, cached: bool, requests: str, responses: str, conn: Any) -> None:
    from zjobs import ZmqProcessor
    from zjobs import cached as with_cache

    target: Any = JOBS[job]
    if cached:
        target = with_cache(target, maxsize=100_000)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    processor = ZmqProcessor(target, requests=requests, responses=responses, context=context)
    signal.signal(signal.SIGTERM, lambda *_: processor.request_stop())
    conn.send((processor.endpoints.requests, processor.endpoints.responses))
    conn.close()
    processor.run()
    context.term()


def _serve_raw(job: str, cached: bool, requests: str, responses: str, conn: Any) -> None:
    # The baseline: what one writes by hand with pyzmq and msgpack, same frames as ZJP/1.
    fn = JOBS[job]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull, pub = context.socket(zmq.PULL), context.socket(zmq.PUB)
    pub.sndhwm = 100_000  # before bind: a high-water mark applies to later connections only
    pull.bind(requests)
    pub.bind(responses)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    conn.send((pull.getsockopt_string(zmq.LAST_ENDPOINT),
               pub.getsockopt_string(zmq.LAST_ENDPOINT)))
    conn.close()
    try:
        while True:
            header_bytes, body = pull.recv_multipart()
            header = msgpack.unpackb(header_bytes)
            topic = header.get("reply_to", "").encode()
            if header.get("ping"):
                reply = {"v": 1, "id": header["id"], "status": "pong", "cached": False,
                         "processor": "raw"}
                pub.send_multipart([topic, msgpack.packb(reply), msgpack.packb(None)])
                continue
            value = fn(msgpack.unpackb(body), None)
            reply = {"v": 1, "id": header["id"], "status": "ok", "cached": False,
                     "processor": "raw"}
            pub.send_multipart([topic, msgpack.packb(reply), msgpack.packb(value)])
    finally:
        pull.close(0)
        pub.close(0)
        context.term()


@dataclass
class Child:
    """A processor process and the endpoints it bound."""

    process: Any
    requests: str
    responses: str

    def rss_kib(self) -> int:
        """Resident set size of the child, from /proc (0 where /proc is missing)."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


@contextmanager
def processor(kind: str, job: str, transport: str, *, cached: bool = False) -> Iterator[Child]:
    """Start a processor process (``kind`` zjobs or raw) and stop it afterwards."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="zjb-", dir="/tmp") as tmp:
        if transport == "ipc":
            requests, responses = f"ipc://{tmp}/req", f"ipc://{tmp}/rep"
        else:
            requests = responses = "tcp://127.0.0.1:*"
        parent, child_conn = ctx.Pipe()
        target = _serve_zjobs if kind == "zjobs" else _serve_raw
        proc = ctx.Process(target=target, args=(job, cached, requests, responses, child_conn),
                           daemon=True)
        proc.start()
        child_conn.close()
        if not parent.poll(30):
            proc.kill()
            raise RuntimeError(f"{kind} processor did not start")
        req_ep, rep_ep = parent.recv()
        try:
            yield Child(proc, req_ep, rep_ep)
        finally:
            proc.terminate()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


# -- the two clients --------------------------------------------------------------------------

class RawClient:
    """The baseline client: one thread, PUSH + SUB, a window of requests in flight."""

    def __init__(self, requests: list[str], responses: list[str]) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.sub = self.context.socket(zmq.SUB)
        self.sub.rcvhwm = 100_000
        self.topic = os.urandom(16).hex()
        self.sub.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
        for ep in requests:
            self.push.connect(ep)
        for ep in responses:
            self.sub.connect(ep)
        self.counter = 0
        self._handshake(len(requests))

    def _handshake(self, processors: int) -> None:
        ponged = 0
        while ponged < processors:
            self.counter += 1
            header = {"v": 1, "id": f"p{self.counter}", "reply_to": self.topic, "ping": True}
            self.push.send_multipart([msgpack.packb(header), msgpack.packb(None)])
            if self.sub.poll(20):
                self.sub.recv_multipart()
                ponged += 1
        while self.sub.poll(50):  # late pongs
            self.sub.recv_multipart()

    def _send(self, value: Any) -> None:
        self.counter += 1
        header = {"v": 1, "id": f"r{self.counter}", "reply_to": self.topic}
        self.push.send_multipart([msgpack.packb(header), msgpack.packb(value)])

    def _recv(self) -> Any:
        _, header, body = self.sub.recv_multipart()
        msgpack.unpackb(header)
        return msgpack.unpackb(body)

    def pipelined(self, values: list[Any], window: int) -> None:
        """Send every value with at most ``window`` in flight; wait for every response."""
        sent = received = 0
        while received < len(values):
            while sent < len(values) and sent - received < window:
                self._send(values[sent])
                sent += 1
            self._recv()
            received += 1

    def call(self, value: Any) -> Any:
        """One round trip."""
        self._send(value)
        return self._recv()

    def close(self) -> None:
        self.push.close(0)
        self.sub.close(0)
        self.context.term()


class ZJobsClient:
    """zjobs' Client, with futures."""

    def __init__(self, requests: list[str], responses: list[str]) -> None:
        from zjobs import Client

        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.client = Client.connect(requests, responses, context=self.context)
        self.client.wait_ready()

    def pipelined(self, values: list[Any], window: int) -> None:
        """Submit every value with at most ``window`` in flight (as the raw loop does)."""
        futures: deque[Future[Any]] = deque()
        submit = self.client.submit
        for value in values:
            if len(futures) >= window:
                futures.popleft().result()
            futures.append(submit(value))
        for future in futures:
            future.result()

    def call(self, value: Any) -> Any:
        """One round trip."""
        return self.client.call(value)

    def close(self) -> None:
        self.client.close()
        self.context.term()


# -- measurements -----------------------------------------------------------------------------

@dataclass
class Settings:
    """How big the run is."""

    rounds: int = 3
    pipelined: int = 50_000
    window: int = 1_000
    sequential: int = 3_000
    payload_count: int = 3_000
    scaling_count: int = 3_000
    rss_requests: int = 1_000_000
    transports: tuple[str, ...] = ("tcp", "ipc")

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run of a few seconds."""
        return cls(rounds=1, pipelined=5_000, sequential=500, payload_count=300,
                   scaling_count=300, rss_requests=20_000, transports=("tcp",))


def _client(kind: str, child: Child | list[Child]) -> RawClient | ZJobsClient:
    children = child if isinstance(child, list) else [child]
    cls = RawClient if kind == "raw" else ZJobsClient
    return cls([c.requests for c in children], [c.responses for c in children])


def throughput(kind: str, job: str, transport: str, values: list[Any], window: int,
               *, cached: bool = False, processes: int = 1) -> float:
    """Requests per second with many in flight."""
    with _processors(kind, job, transport, processes, cached) as children:
        client = _client(kind, children)
        try:
            client.pipelined(values[: max(1, len(values) // 10)], window)  # warm-up
            start = time.perf_counter()
            client.pipelined(values, window)
            return len(values) / (time.perf_counter() - start)
        finally:
            client.close()


@contextmanager
def _processors(kind: str, job: str, transport: str, count: int,
                cached: bool) -> Iterator[list[Child]]:
    with processor(kind, job, transport, cached=cached) as first:
        if count == 1:
            yield [first]
            return
        with processor(kind, job, transport, cached=cached) as second:
            yield [first, second]


def latency(kind: str, transport: str, count: int) -> dict[str, float]:
    """Sequential round trips of the trivial job: p50/p90/p99 in microseconds."""
    with processor(kind, "square", transport) as child:
        client = _client(kind, child)
        try:
            for i in range(min(500, count)):
                client.call(i)
            samples = []
            for i in range(count):
                start = time.perf_counter()
                client.call(i)
                samples.append((time.perf_counter() - start) * 1e6)
        finally:
            client.close()
    samples.sort()
    return {p: samples[min(len(samples) - 1, int(len(samples) * q))]
            for p, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))}


def rss_growth(requests: int, window: int) -> dict[str, float]:
    """Processor RSS (MiB) after warm-up and after ``requests`` more requests."""
    with processor("zjobs", "square", "tcp") as child:
        client = _client("zjobs", child)
        try:
            client.pipelined(list(range(20_000)), window)
            before = child.rss_kib()
            chunk = list(range(50_000))
            done = 0
            while done < requests:
                batch = chunk[: min(len(chunk), requests - done)]
                client.pipelined(batch, window)
                done += len(batch)
            after = child.rss_kib()
        finally:
            client.close()
    return {"warm_mib": before / 1024, "after_mib": after / 1024,
            "growth_mib": (after - before) / 1024, "requests": requests}


@dataclass
class Results:
    """Everything one run measured, as written to JSON."""

    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)


def _median(fn: Callable[[], float], rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def _median_latency(kind: str, transport: str, s: Settings) -> dict[str, float]:
    runs = [latency(kind, transport, s.sequential) for _ in range(s.rounds)]
    return {p: statistics.median(r[p] for r in runs) for p in ("p50", "p90", "p99")}


def run(settings: Settings, out: Callable[[str], None] = print) -> Results:
    """Measure everything; print a table line per figure as it is measured."""
    s = settings
    results = Results(
        machine={"python": platform.python_version(), "cpus": os.cpu_count(),
                 "pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version(),
                 "platform": platform.platform()},
        settings=asdict(s),
    )

    def row(name: str, unit: str, zj: float, raw: float | None, target: str) -> None:
        ratio = zj / raw if raw else None
        results.rows.append({"figure": name, "unit": unit, "zjobs": zj, "raw": raw,
                             "ratio": ratio, "target": target})
        raw_s = f"{raw:12,.0f}" if raw is not None else f"{'':>12}"
        ratio_s = f"{ratio:6.2f}x" if ratio is not None else f"{'':>7}"
        out(f"{name:<38} {zj:12,.0f} {raw_s} {ratio_s}  {unit:<6} {target}")

    out(f"{'figure':<38} {'zjobs':>12} {'raw':>12} {'ratio':>7}  {'unit':<6} target")
    values = list(range(s.pipelined))
    for transport in s.transports:
        zj = _median(partial(throughput, "zjobs", "square", transport, values, s.window),
                     s.rounds)
        raw = _median(partial(throughput, "raw", "square", transport, values, s.window),
                      s.rounds)
        row(f"pipelined throughput, {transport}", "req/s", zj, raw, ">= 1.0x")
        zl, rl = _median_latency("zjobs", transport, s), _median_latency("raw", transport, s)
        for p, target in (("p50", "<= 1.1x"), ("p90", ""), ("p99", "<= 1.5x")):
            row(f"sequential latency {p}, {transport}", "us", zl[p], rl[p], target)

    hits = [i % 100 for i in range(s.pipelined)]  # 100 distinct requests: nearly all hits
    hit = _median(lambda: throughput("zjobs", "slow_square", "tcp", hits, s.window,
                                     cached=True), s.rounds)
    run_square = results.rows[0]["zjobs"]
    row("cache hits (GetCache) vs trivial run", "req/s", hit, run_square, ">= 2x")
    miss = _median(lambda: throughput("zjobs", "slow_square", "tcp",
                                      values[: s.scaling_count], s.window), s.rounds)
    row("cache hits vs running a 1 ms job", "req/s", hit, miss, "")

    blob = [os.urandom(64 * 1024)] * s.payload_count
    zj = _median(lambda: throughput("zjobs", "echo", "tcp", blob, 100), s.rounds)
    raw = _median(lambda: throughput("raw", "echo", "tcp", blob, 100), s.rounds)
    row("64 KiB payload echo, tcp", "req/s", zj, raw, "")

    work = list(range(s.scaling_count))
    one = _median(lambda: throughput("zjobs", "burn", "tcp", work, s.window), s.rounds)
    two = _median(lambda: throughput("zjobs", "burn", "tcp", work, s.window, processes=2),
                  s.rounds)
    row("CPU-bound: 2 processes vs 1", "req/s", two, one, ">= 1.7x")

    results.rss = rss_growth(s.rss_requests, s.window)
    out(f"processor RSS: {results.rss['warm_mib']:.1f} MiB after warm-up, "
        f"{results.rss['after_mib']:.1f} MiB after {s.rss_requests:,} requests "
        f"(growth {results.rss['growth_mib']:+.2f} MiB; target < 5 MB)")
    return results


def write_json(results: Results, path: Path) -> None:
    """Write ``results`` as JSON (to compare runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(results), indent=2))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python benchmarks/run.py [--quick] [--rounds N] [--json FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per figure (median)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    if args.rounds:
        settings.rounds = args.rounds
    results = run(settings)
    if args.json is not None:
        write_json(results, args.json)
        print(f"results written to {args.json}")
    return 0
