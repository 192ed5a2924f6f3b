"""What the zjobs processor costs: a raw pyzmq client against it and against the raw
pyzmq processor of the benchmark, both running at once.

The client alternates blocks of sequential calls (and of pipelined bursts) between the two
processors, so that the load of a shared machine falls on both alike; the ratios
zjobs / raw say what the processor side costs, without the zjobs client in the way.

    python benchmarks/processor_cost.py [--transports tcp,ipc] [--blocks 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import RawClient, processor


def _quantile_us(samples_ns: list[int], q: float) -> float:
    ordered = sorted(samples_ns)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000


def measure(transport: str, blocks: int, block: int, burst: int) -> str:
    """One paired run over ``transport``; returns its summary line."""
    with processor("raw", "square", transport) as raw, \
            processor("zjobs", "square", transport) as served:
        clients = {"raw": RawClient([raw.requests], [raw.responses]),
                   "zjobs": RawClient([served.requests], [served.responses])}
        latencies: dict[str, list[int]] = {"raw": [], "zjobs": []}
        rates: dict[str, list[float]] = {"raw": [], "zjobs": []}
        clock = time.perf_counter_ns
        try:
            for client in clients.values():
                for i in range(300):  # warm up both
                    client.call(i)
            for index in range(blocks):
                order = ("raw", "zjobs") if index % 2 == 0 else ("zjobs", "raw")
                for kind in order:
                    client, out = clients[kind], latencies[kind]
                    for i in range(block):
                        started = clock()
                        client.call(i)
                        out.append(clock() - started)
                for kind in order:
                    started = clock()
                    clients[kind].all_then_read(list(range(burst)))
                    rates[kind].append(burst / ((clock() - started) / 1e9))
        finally:
            for client in clients.values():
                client.close()
    raw50, zj50 = _quantile_us(latencies["raw"], 0.5), _quantile_us(latencies["zjobs"], 0.5)
    raw99, zj99 = _quantile_us(latencies["raw"], 0.99), _quantile_us(latencies["zjobs"], 0.99)
    pipelined = statistics.median(z / r for z, r in zip(rates["zjobs"], rates["raw"],
                                                        strict=True))
    return (f"{transport}: sequential p50 raw {raw50:.1f} us, zjobs {zj50:.1f} us "
            f"(x{zj50 / raw50:.3f}); p99 raw {raw99:.1f}, zjobs {zj99:.1f} "
            f"(x{zj99 / raw99:.3f}); {burst} sent then read: zjobs/raw x{pipelined:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transports", default="tcp,ipc")
    parser.add_argument("--blocks", type=int, default=20, help="alternations per run")
    parser.add_argument("--block", type=int, default=250, help="sequential calls per block")
    parser.add_argument("--burst", type=int, default=10_000, help="pipelined calls per block")
    args = parser.parse_args()
    for transport in args.transports.split(","):
        print(measure(transport, args.blocks, args.block, args.burst), flush=True)


if __name__ == "__main__":
    main()
