"""Three daemons of one job, each a separate process with its own endpoints, and one client
load-balancing over them: every request is answered, each process serves a share.

Run: python examples/daemons/three_daemons.py
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import zjobs

HERE = Path(__file__).resolve().parent


def main() -> None:
    children = [zjobs.ProcessorProcess("jobs:whoami", name=f"whoami-{i}", app_dir=str(HERE))
                for i in range(3)]
    try:
        for child in children:  # start the three in parallel, then wait for each
            child.launch()
        for child in children:
            child.wait_started()
            print(child)
        requests = [child.connect_endpoints.requests for child in children]
        responses = [child.connect_endpoints.responses for child in children]
        # The readiness handshake waits until all three processors answered a ping.
        with zjobs.Client.connect(requests, responses) as client:
            futures = [client.submit(n) for n in range(3000)]
            answers = [future.result() for future in futures]
        assert [answer["request"] for answer in answers] == list(range(3000))
        by_pid = Counter(answer["pid"] for answer in answers)
        print(f"3000 requests answered; served per process: {dict(by_pid)}")
    finally:
        for child in children:  # SIGTERM: each finishes its job in progress, then exits 0
            child.stop()
    for child in children:
        print(f"{child.name}: exit status {child.exitcode}, counters {child.counters}")


def _usage() -> None:
    """Answer --help with this file's description; the example takes no options."""
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


if __name__ == "__main__":  # required: child processes are spawned, re-importing this file
    _usage()
    main()
