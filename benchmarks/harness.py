"""The zjobs benchmark: zjobs against a hand-written pyzmq + msgpack loop, in one run.

Both sides use the same topology (PUSH -> PULL, PUB -> SUB), the same message layout
(a msgpack header map and a msgpack body) and a processor in a separate process, so the
ratios zjobs / raw say what the framework costs or gains. Every figure with a target says
whether it was met; the six targets of the performance issue are listed at the end. Run it
with ``python benchmarks/run.py`` or ``zjobs bench`` (from a source checkout: this file is not
part of the installed package); ``--quick`` for a smoke run,
``--long`` for the 10,000,000-call memory run.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing as mp
import os
import platform
import re
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
from typing import Any, Final

import msgpack
import zmq

__all__ = ["Results", "Settings", "main", "met", "run", "write_json"]


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
    pub.sndhwm = 1_000_000  # before bind: applies to later connections; room for 200,000 answers
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
        target = _serve_raw if kind == "raw" else _serve_zjobs
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


# -- the clients -----------------------------------------------------------------------------

TIMEOUT_S = 120.0
"""The zjobs clients' call timeout: generous (200,000 calls in flight on a busy machine take
a while), and a call that times out is counted as lost, and shown, rather than raised."""


def _rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc (0 where /proc is missing)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RawClient:
    """The baseline client: one thread, PUSH + SUB, a window of requests in flight."""

    def __init__(self, requests: list[str], responses: list[str]) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.sub = self.context.socket(zmq.SUB)
        self.sub.rcvhwm = 1_000_000  # sending all before reading any leaves every answer queued
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
        if not self.sub.poll(30_000):
            raise RuntimeError("raw client: no answer within 30 s (lost?)")
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

    def all_then_read(self, values: list[Any]) -> None:
        """Send every value, then read every response."""
        for value in values:
            self._send(value)
        for _ in values:
            self._recv()

    def call(self, value: Any) -> Any:
        """One round trip."""
        self._send(value)
        return self._recv()

    def close(self) -> None:
        self.push.close(0)
        self.sub.close(0)
        self.context.term()


class ZJobsClient:
    """zjobs' Client, as a user writes it."""

    def __init__(self, requests: list[str], responses: list[str], **options: Any) -> None:
        from zjobs import Client

        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        # A generous timeout: 200,000 calls in flight on a busy machine take minutes.
        options.setdefault("timeout_s", TIMEOUT_S)
        self.client = Client.connect(requests, responses, context=self.context, **options)
        self.client.wait_ready()
        self.lost = 0
        """Calls that got no answer (CallTimeout)."""

    def _result(self, future: Future[Any]) -> Any:
        from zjobs import CallTimeout

        try:
            return future.result()
        except CallTimeout:
            self.lost += 1
            return None

    def pipelined(self, values: list[Any], window: int) -> None:
        """Submit every value with at most ``window`` in flight (as the raw loop does)."""
        futures: deque[Future[Any]] = deque()
        submit = self.client.submit
        for value in values:
            if len(futures) >= window:
                self._result(futures.popleft())
            futures.append(submit(value))
        for future in futures:
            self._result(future)

    def all_then_read(self, values: list[Any]) -> None:
        """The user's idiom: a list comprehension of futures, then every result."""
        submit = self.client.submit
        futures = [submit(value) for value in values]
        for future in futures:
            self._result(future)

    def call(self, value: Any) -> Any:
        """One round trip, as the issue's sequential target writes it: ``client.call``."""
        from zjobs import CallTimeout

        try:
            return self.client.call(value)
        except CallTimeout:
            self.lost += 1
            return None

    def map_sum(self, values: Any) -> int:
        """``sum(client.map(values))``: batches when the processor takes them (a value
        that failed is counted in :attr:`lost` instead)."""
        total = 0
        for value in self.client.map(values, return_exceptions=True):
            if isinstance(value, BaseException):
                self.lost += 1
            else:
                total += value
        return total

    def close(self) -> None:
        self.client.close()
        self.context.term()


async def _raw_async(requests: str, responses: str, count: int) -> float:
    # The asyncio baseline: zmq.asyncio sockets, one task sending every request while
    # another reads every response.
    import zmq.asyncio

    context = zmq.asyncio.Context()
    push, sub = context.socket(zmq.PUSH), context.socket(zmq.SUB)
    sub.rcvhwm = 1_000_000
    topic = os.urandom(16).hex()
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    push.connect(requests)
    sub.connect(responses)
    try:
        n = 0
        while True:  # readiness
            n += 1
            await push.send_multipart([msgpack.packb({"v": 1, "id": f"p{n}", "reply_to": topic,
                                                      "ping": True}), msgpack.packb(None)])
            if await sub.poll(20):
                await sub.recv_multipart()
                break
        while await sub.poll(50):
            await sub.recv_multipart()

        async def read() -> None:
            for _ in range(count):
                _, header, body = await asyncio.wait_for(sub.recv_multipart(), 30)
                msgpack.unpackb(header)
                msgpack.unpackb(body)

        start = time.perf_counter()
        reader = asyncio.create_task(read())
        for i in range(count):
            header = {"v": 1, "id": f"r{i}", "reply_to": topic}
            await push.send_multipart([msgpack.packb(header), msgpack.packb(i)])
        await reader
        return count / (time.perf_counter() - start)
    finally:
        push.close(0)
        sub.close(0)
        context.term()


async def _zjobs_async(requests: str, responses: str, count: int, how: str,
                       lost: list[int]) -> float:
    # AsyncClient as a user writes it: gather over call(), or async for over map().
    import zmq.asyncio

    from zjobs.aio import AsyncClient

    context = zmq.asyncio.Context()
    try:
        async with AsyncClient.connect(requests, responses, context=context,
                                       timeout_s=TIMEOUT_S) as client:
            await client.wait_ready()
            start = time.perf_counter()
            results: list[Any]
            if how == "gather":
                results = await asyncio.gather(*(client.call(i) for i in range(count)),
                                               return_exceptions=True)
            else:
                results = [value async for value in client.map(range(count),
                                                                 return_exceptions=True)]
            elapsed = time.perf_counter() - start
        failed = sum(isinstance(value, BaseException) for value in results)
        lost.append(failed)
        if not failed and sum(results) != sum(i * i for i in range(count)):
            raise RuntimeError(f"async {how}: wrong results")
        return count / elapsed
    finally:
        context.term()


# -- measurements -----------------------------------------------------------------------------

@dataclass
class Settings:
    """How big the run is."""

    rounds: int = 3
    pipelined: int = 200_000
    """Requests of the list-comprehension figure (all submitted, then all read)."""
    window_count: int = 50_000
    """Requests of the windowed figures."""
    window: int = 1_000
    sequential: int = 3_000
    async_count: int = 100_000
    map_count: int = 1_000_000
    payload_count: int = 3_000
    scaling_count: int = 3_000
    rss_in_flight: int = 200_000
    rss_requests: int = 1_000_000
    """Calls of the memory-growth run (--long: 10,000,000)."""
    transports: tuple[str, ...] = ("tcp", "ipc")

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run of a few seconds."""
        return cls(rounds=1, pipelined=5_000, window_count=5_000, sequential=500,
                   async_count=5_000, map_count=50_000, payload_count=300, scaling_count=300,
                   rss_in_flight=10_000, rss_requests=20_000, transports=("tcp",))


def _client(kind: str, child: Child | list[Child]) -> RawClient | ZJobsClient:
    # kind: "raw", "zjobs", or "zjobs-alone" (zjobs sending one message per call: coalesce=0)
    children = child if isinstance(child, list) else [child]
    requests, responses = [c.requests for c in children], [c.responses for c in children]
    if kind == "raw":
        return RawClient(requests, responses)
    return ZJobsClient(requests, responses, **({"coalesce": 0} if kind == "zjobs-alone"
                                               else {}))


def throughput(kind: str, job: str, transport: str, values: list[Any], window: int | None,
               *, cached: bool = False, processes: int = 1,
               lost: list[int] | None = None) -> float:
    """Requests per second with many in flight: at most ``window``, or (None) all of them
    sent before any is read. Calls without an answer are appended to ``lost``."""
    with _processors(kind, job, transport, processes, cached) as children:
        client = _client(kind, children)

        def once(batch: list[Any]) -> None:
            if window is None:
                client.all_then_read(batch)
            else:
                client.pipelined(batch, window)

        try:
            once(values[: max(1, len(values) // 10)])  # warm-up
            start = time.perf_counter()
            once(values)
            return len(values) / (time.perf_counter() - start)
        finally:
            if lost is not None and isinstance(client, ZJobsClient):
                lost.append(client.lost)
            client.close()


def map_throughput(count: int, lost: list[int]) -> float:
    """Values per second of ``sum(client.map(range(count)))`` (the trivial job, tcp)."""
    with processor("zjobs", "square", "tcp") as child:
        client = ZJobsClient([child.requests], [child.responses])
        try:
            client.map_sum(range(max(1, count // 10)))  # warm-up
            start = time.perf_counter()
            total = client.map_sum(range(count))
            elapsed = time.perf_counter() - start
        finally:
            lost.append(client.lost)
            client.close()
    if not client.lost and total != sum(i * i for i in range(count)):
        raise RuntimeError("map: wrong results")
    return count / elapsed


def async_throughput(kind: str, how: str, count: int, lost: list[int] | None = None) -> float:
    """Calls per second from asyncio, tcp: zjobs ``how`` ("gather" or "map"), or the raw
    zmq.asyncio loop."""
    with processor(kind, "square", "tcp") as child:
        if kind == "raw":
            return asyncio.run(_raw_async(child.requests, child.responses, count))
        return asyncio.run(_zjobs_async(child.requests, child.responses, count, how,
                                        [] if lost is None else lost))


@contextmanager
def _processors(kind: str, job: str, transport: str, count: int,
                cached: bool) -> Iterator[list[Child]]:
    with processor(kind, job, transport, cached=cached) as first:
        if count == 1:
            yield [first]
            return
        with processor(kind, job, transport, cached=cached) as second:
            yield [first, second]


_BLOCK: Final = 100  # sequential calls of one kind before the other kind's turn


def latency(transport: str, count: int) -> dict[str, dict[str, float]]:
    """Sequential round trips of the trivial job, zjobs and raw side by side: each kind's
    processor and client run at once and take turns in blocks of calls, so that a change
    in the machine's load meets both alike. p50/p90/p99 in microseconds, per kind."""
    with processor("zjobs", "square", transport) as zchild, \
            processor("raw", "square", transport) as rchild:
        clients = {"zjobs": _client("zjobs", zchild), "raw": _client("raw", rchild)}
        samples: dict[str, list[float]] = {kind: [] for kind in clients}
        try:
            for client in clients.values():
                for i in range(min(500, count)):
                    client.call(i)
            for first in range(0, count, _BLOCK):
                for kind, client in clients.items():
                    taken = samples[kind]
                    for i in range(first, min(count, first + _BLOCK)):
                        start = time.perf_counter()
                        client.call(i)
                        taken.append((time.perf_counter() - start) * 1e6)
        finally:
            for client in clients.values():
                client.close()
    out = {}
    for kind, taken in samples.items():
        taken.sort()
        out[kind] = {p: taken[min(len(taken) - 1, int(len(taken) * q))]
                     for p, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))}
    return out


def _measure_memory(requests: str, responses: str, processor_pid: int, in_flight: int,
                    calls: int, window: int, conn: Any) -> None:
    # In a fresh process, so that memory other figures freed does not hide what this uses;
    # without the client's cap on calls in flight, so that all of them are.
    client = ZJobsClient([requests], [responses], max_in_flight=None)
    try:
        client.pipelined(list(range(2_000)), window)
        gc.collect()
        before = _rss_kib()
        submit = client.client.submit
        futures = [submit(i) for i in range(in_flight)]
        held = _rss_kib()
        for future in futures:
            future.result()
        del futures
        gc.collect()
        chunk = list(range(min(calls, 50_000)))
        client.pipelined(chunk, window)  # warm: the steady state before counting growth
        gc.collect()
        warm, processor_warm = _rss_kib(), _rss_kib(processor_pid)
        done = 0
        while done < calls:
            part = chunk[: min(len(chunk), calls - done)]
            client.pipelined(part, window)
            done += len(part)
        gc.collect()
        after, processor_after = _rss_kib(), _rss_kib(processor_pid)
    finally:
        client.close()
    conn.send({"per_call_bytes": (held - before) * 1024 / in_flight, "in_flight": in_flight,
               "client_warm_mib": warm / 1024, "client_after_mib": after / 1024,
               "client_growth_mib": (after - warm) / 1024,
               "processor_warm_mib": processor_warm / 1024,
               "processor_after_mib": processor_after / 1024,
               "processor_growth_mib": (processor_after - processor_warm) / 1024,
               "requests": calls})
    conn.close()


def memory(in_flight: int, calls: int, window: int) -> dict[str, float]:
    """Client RSS per call while ``in_flight`` calls are outstanding, and client and
    processor RSS growth (MiB) over ``calls`` more calls after a warm-up."""
    with processor("zjobs", "square", "tcp") as child:
        ctx = mp.get_context("spawn")
        parent, child_conn = ctx.Pipe()
        proc = ctx.Process(target=_measure_memory,
                           args=(child.requests, child.responses, child.process.pid,
                                 in_flight, calls, window, child_conn), daemon=True)
        proc.start()
        child_conn.close()
        try:
            result: dict[str, float] = parent.recv()
        except EOFError as exc:
            raise RuntimeError("the memory measurement process failed") from exc
        finally:
            proc.join(60)
    return result


@dataclass
class Results:
    """Everything one run measured, as written to JSON."""

    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)


_TARGET = re.compile(r"^(>=|<=) ([0-9.]+)( ?x| MiB| B)$")


def met(target: str, zjobs: float, ratio: float | None) -> bool | None:
    """Whether a figure meets its target: ``">= 1.0x"``/``"<= 1.3x"`` bound the ratio,
    ``"<= 1024 B"``/``"<= 5 MiB"`` the zjobs figure itself; None without a target."""
    match = _TARGET.match(target)
    if match is None:
        return None
    op, bound, unit = match.group(1), float(match.group(2)), match.group(3).strip()
    value = ratio if unit == "x" else zjobs
    if value is None:
        return None
    return value >= bound if op == ">=" else value <= bound


def _median(fn: Callable[[], float], rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def _median_latency(transport: str, s: Settings) -> dict[str, dict[str, float]]:
    runs = [latency(transport, s.sequential) for _ in range(s.rounds)]
    return {kind: {p: statistics.median(r[kind][p] for r in runs)
                   for p in ("p50", "p90", "p99")} for kind in ("zjobs", "raw")}


def run(settings: Settings, out: Callable[[str], None] = print) -> Results:
    """Measure everything; print a table line per figure as it is measured, then the six
    targets with met or missed."""
    s = settings
    results = Results(
        machine={"python": platform.python_version(), "cpus": os.cpu_count(),
                 "pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version(),
                 "platform": platform.platform()},
        settings=asdict(s),
    )

    def row(name: str, unit: str, zj: float, raw: float | None, target: str = "",
            issue: int | None = None, lost: list[int] | None = None) -> None:
        # issue: the number of the performance issue's target this figure measures; lost:
        # zjobs calls that got no answer (a figure with any is missed, whatever its speed).
        ratio = zj / raw if raw else None
        verdict = met(target, zj, ratio)
        missing = sum(lost or ())
        if missing and verdict is not None:
            verdict = False
        results.rows.append({"figure": name, "unit": unit, "zjobs": zj, "raw": raw,
                             "ratio": ratio, "target": target, "met": verdict,
                             "issue_target": issue, "lost": missing})
        raw_s = f"{raw:12,.0f}" if raw is not None else f"{'':>12}"
        ratio_s = f"{ratio:7.2f}x" if ratio is not None else f"{'':>8}"
        word = {True: "met", False: "MISSED", None: ""}[verdict]
        note = f" ({missing:,} calls got no answer)" if missing else ""
        out(f"{name:<64} {zj:12,.1f} {raw_s} {ratio_s}  {unit:<7} {target:<10} {word}{note}")

    out(f"{'figure':<64} {'zjobs':>12} {'raw':>12} {'ratio':>8}  {'unit':<7} target")
    rate = "req/s"
    big, values = list(range(s.pipelined)), list(range(s.window_count))
    windowed: dict[str, float] = {}
    for transport in s.transports:
        lost: list[int] = []
        zj = _median(partial(throughput, "zjobs", "square", transport, big, None, lost=lost),
                     s.rounds)
        raw = _median(partial(throughput, "raw", "square", transport, big, None), s.rounds)
        row(f"list comprehension of {s.pipelined:,} submits, {transport}", rate, zj, raw,
            ">= 1.0x", 1, lost)
        lost = []
        alone = _median(partial(throughput, "zjobs-alone", "square", transport, big, None,
                                lost=lost), s.rounds)
        row("  the same, one message per call (coalesce=0)", rate, alone, raw, "", None,
            lost)
        lost = []
        zj = _median(partial(throughput, "zjobs", "square", transport, values, s.window,
                             lost=lost), s.rounds)
        raw = _median(partial(throughput, "raw", "square", transport, values, s.window),
                      s.rounds)
        windowed[transport] = raw
        row(f"pipelined, {s.window:,} in flight, {transport}", rate, zj, raw, ">= 1.0x", 2,
            lost)
        paired = _median_latency(transport, s)
        zl, rl = paired["zjobs"], paired["raw"]
        for p, target in (("p50", "<= 1.05x"), ("p90", ""), ("p99", "<= 1.3x")):
            row(f"sequential latency {p}, {transport}", "us", zl[p], rl[p], target,
                3 if target else None)

    raw_async = _median(partial(async_throughput, "raw", "", s.async_count), s.rounds)
    lost = []
    gather = _median(partial(async_throughput, "zjobs", "gather", s.async_count, lost),
                     s.rounds)
    row("asyncio gather of call() vs raw zmq.asyncio", rate, gather, raw_async, ">= 0.8x", 4,
        lost)
    lost = []
    amap = _median(partial(async_throughput, "zjobs", "map", s.async_count, lost), s.rounds)
    row("asyncio map vs raw zmq.asyncio", rate, amap, raw_async, ">= 0.8x", 4, lost)

    lost = []
    mapped = _median(partial(map_throughput, s.map_count, lost), s.rounds)
    first = s.transports[0]
    row(f"sum(client.map(range({s.map_count:,}))) vs raw per-message loop, {first}",
        "items/s", mapped, windowed[first], ">= 10x", 6, lost)

    hits = [i % 100 for i in range(s.window_count)]  # 100 distinct requests: nearly all hits
    hit = _median(lambda: throughput("zjobs", "slow_square", "tcp", hits, s.window,
                                     cached=True), s.rounds)
    run_square = next(r["zjobs"] for r in results.rows
                      if r["figure"].startswith(f"pipelined, {s.window:,} in flight"))
    row("cache hits (GetCache) vs trivial run", rate, hit, run_square, ">= 2x")
    miss = _median(lambda: throughput("zjobs", "slow_square", "tcp",
                                      values[: s.scaling_count], s.window), s.rounds)
    row("cache hits vs running a 1 ms job", rate, hit, miss)

    blob = [os.urandom(64 * 1024)] * s.payload_count
    zj = _median(lambda: throughput("zjobs", "echo", "tcp", blob, 100), s.rounds)
    raw = _median(lambda: throughput("raw", "echo", "tcp", blob, 100), s.rounds)
    row("64 KiB payload echo, tcp", rate, zj, raw)

    work = list(range(s.scaling_count))
    one = _median(lambda: throughput("zjobs", "burn", "tcp", work, s.window), s.rounds)
    two = _median(lambda: throughput("zjobs", "burn", "tcp", work, s.window, processes=2),
                  s.rounds)
    row("CPU-bound: 2 processes vs 1", rate, two, one, ">= 1.7x")

    results.rss = rss = memory(s.rss_in_flight, s.rss_requests, s.window)
    row(f"client RSS per call in flight ({s.rss_in_flight:,} in flight)", "bytes",
        rss["per_call_bytes"], None, "<= 1024 B", 5)
    row(f"client RSS growth over the memory run ({s.rss_requests:,} calls)", "MiB",
        rss["client_growth_mib"], None, "<= 5 MiB", 5)
    row(f"processor RSS growth over the memory run ({s.rss_requests:,} calls)", "MiB",
        rss["processor_growth_mib"], None, "<= 5 MiB", 5)

    out("")
    out("the six targets of the performance issue:")
    for r in sorted((r for r in results.rows if r["issue_target"]),
                    key=lambda r: r["issue_target"]):
        word = "met" if r["met"] else "missed"
        value = (f"{r['ratio']:.2f}x" if r["ratio"] is not None
                 else f"{r['zjobs']:,.1f} {r['unit']}")
        out(f"  {r['issue_target']}. {r['figure']}: {value} (target {r['target']}): {word}")
    return results


def write_json(results: Results, path: Path) -> None:
    """Write ``results`` as JSON (to compare runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(results), indent=2))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python benchmarks/run.py [--quick] [--long] [--rounds N]
    [--json FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--long", action="store_true",
                        help="the memory run over 10,000,000 calls (instead of 1,000,000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per figure (median)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    if args.long:
        settings.rss_requests = 10_000_000
    if args.rounds:
        settings.rounds = args.rounds
    results = run(settings)
    if args.json is not None:
        write_json(results, args.json)
        print(f"results written to {args.json}")
    return 0
