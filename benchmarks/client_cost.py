"""What the zjobs client costs per call, in CPU instructions: valgrind's count of a client
process that pipelines N calls (all submitted, then all read), or makes them one at a time
(``--how sequential``), for two values of N, the difference divided by the calls between
them (start-up and imports cancel out). The same for the benchmark's raw pyzmq + msgpack
client. Instruction counts do not move with the load of a shared machine, where timings
swing by a third.

    python benchmarks/client_cost.py [--calls 1000,4000] [--how sequential]
                                                      (needs valgrind; minutes)

The processor is the zjobs one (``harness.processor``), running natively in its own process.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import RawClient, ZJobsClient, processor

_COLLECTED = re.compile(r"Collected : (\d+)")


def client_main(kind: str, how: str, calls: int, requests: str, responses: str) -> None:
    """The measured process: ``calls`` calls through the benchmark's client of one kind,
    pipelined (the user's list comprehension of submits, then every result, for zjobs) or
    one at a time (``client.call``)."""
    client = (RawClient if kind == "raw" else ZJobsClient)([requests], [responses])
    try:
        if how == "sequential":
            for value in range(calls):
                client.call(value)
        else:
            client.all_then_read(list(range(calls)))
    finally:
        client.close()


def instructions(kind: str, how: str, calls: int, requests: str, responses: str) -> int:
    """Instructions valgrind counted for one client process."""
    with tempfile.TemporaryDirectory(prefix="zjobs-cg-") as workdir:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/cg.out",
             sys.executable, __file__, "client", kind, how, str(calls), requests, responses],
            capture_output=True, text=True, timeout=1800, check=True,
            cwd=str(Path(__file__).parent))
    found = _COLLECTED.search(out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {out.stderr[-500:]}")
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["client"]:
        kind, how, calls, requests, responses = sys.argv[2:7]
        client_main(kind, how, int(calls), requests, responses)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="1000,4000",
                        help="the two numbers of calls to measure, comma-separated")
    parser.add_argument("--how", choices=("pipelined", "sequential"), default="pipelined",
                        help="all submitted then all read, or one call at a time")
    args = parser.parse_args()
    low, high = (int(n) for n in args.calls.split(","))
    if shutil.which("valgrind") is None:
        sys.exit("client_cost: needs valgrind (Debian package valgrind)")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    with processor("zjobs", "square", "tcp") as served:
        per_call = {}
        for kind in ("raw", "zjobs"):
            counts = [instructions(kind, args.how, n, served.requests, served.responses)
                      for n in (low, high)]
            per_call[kind] = (counts[1] - counts[0]) / (high - low)
            print(f"{kind:>5} client: {per_call[kind]:>9,.0f} instructions per {args.how} "
                  "call")
    print(f"zjobs / raw: {per_call['zjobs'] / per_call['raw']:.2f}x")


if __name__ == "__main__":
    main()
