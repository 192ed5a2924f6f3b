"""Why async jobs: a job that awaits 100 ms of I/O, served at concurrency 1 and 100.

    python benchmarks/bench_async.py            # about 8 seconds
    python benchmarks/bench_async.py --full     # concurrency 1 on all 1,000 requests: ~100 s

The job is ``await asyncio.sleep(0.1)`` (standing in for a database or HTTP call). An
:class:`~zjobs.aio.AsyncZmqProcessor` serves it in its own thread and event loop; an
:class:`~zjobs.aio.AsyncClient` sends all requests at once with ``asyncio.gather`` and
waits for every answer. Each row is one run with a fresh processor over TCP on loopback.

At concurrency 1 the requests queue behind each other, 100 ms each: 1,000 of them take
100 s, so by default that row measures only ``--small`` requests (50) and the speed-up is
the ratio of the measured throughputs (requests per second), which does not depend on the
count. ``--full`` measures all ``--requests`` at concurrency 1 as well. A last row serves
the same wait as a *sync* job (``time.sleep``) in a pool of 100 threads (``threads=True``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from zjobs.aio import AsyncZmqProcessor


def make_jobs(io_s: float) -> tuple[Any, Any]:
    async def awaits_io(request: Any, resources: Any) -> Any:
        await asyncio.sleep(io_s)
        return request

    def blocks_on_io(request: Any, resources: Any) -> Any:
        time.sleep(io_s)
        return request

    return awaits_io, blocks_on_io


async def call_all(processor: AsyncZmqProcessor, count: int) -> float:
    async with processor.async_client(timeout_s=3600) as client:
        await client.wait_ready()
        start = time.perf_counter()
        results = await asyncio.gather(*(client.call(i) for i in range(count)))
        elapsed = time.perf_counter() - start
    if results != list(range(count)):
        raise SystemExit("lost or mismatched responses")
    return elapsed


def measure(job: Any, count: int, concurrency: int, threads: bool = False) -> float:
    """Seconds to answer ``count`` requests sent at once."""
    with AsyncZmqProcessor(job, concurrency=concurrency, threads=threads) as processor:
        return asyncio.run(call_all(processor, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per run")
    parser.add_argument("--small", type=int, default=50,
                        help="requests measured at concurrency 1 unless --full")
    parser.add_argument("--concurrency", type=int, default=100, help="the high concurrency")
    parser.add_argument("--io-ms", type=float, default=100.0, help="I/O wait of each job")
    parser.add_argument("--full", action="store_true",
                        help="measure all --requests at concurrency 1 too (slow)")
    args = parser.parse_args()
    io_s = args.io_ms / 1000
    awaits_io, blocks_on_io = make_jobs(io_s)
    slow_count = args.requests if args.full else min(args.small, args.requests)

    rows: list[tuple[str, int, int, float]] = []
    for label, job, count, concurrency, threads in (
        ("async job", awaits_io, slow_count, 1, False),
        ("async job", awaits_io, args.requests, args.concurrency, False),
        ("sync job in threads", blocks_on_io, args.requests, args.concurrency, True),
    ):
        elapsed = measure(job, count, concurrency, threads)
        rows.append((label, concurrency, count, elapsed))

    print(f"job waits {args.io_ms:g} ms of I/O per request; all requests sent at once\n")
    print(f"{'job':<20} {'concurrency':>11} {'requests':>9} {'seconds':>9} {'req/s':>9}"
          f" {'ideal req/s':>12}")
    for label, concurrency, count, elapsed in rows:
        ideal = concurrency / io_s
        print(f"{label:<20} {concurrency:>11} {count:>9} {elapsed:>9.2f} "
              f"{count / elapsed:>9.1f} {ideal:>12.1f}")
    (_, _, slow_n, slow_t), (_, _, fast_n, fast_t) = rows[0], rows[1]
    slow_rate, fast_rate = slow_n / slow_t, fast_n / fast_t
    print()
    if slow_n < args.requests:
        print(f"concurrency 1 on {args.requests} requests would take about "
              f"{args.requests / slow_rate:.0f} s (measured on {slow_n}; --full to run it)")
    print(f"speed-up of throughput, concurrency {args.concurrency} vs 1: "
          f"{fast_rate / slow_rate:.1f}x")


if __name__ == "__main__":
    main()
