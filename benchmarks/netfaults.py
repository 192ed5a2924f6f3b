"""Network faults between hosts, long versions: 20 s cuts, thousands of calls.

    sudo python benchmarks/netfaults.py [SCENARIO ...] [--reconnect zjobs|libzmq|both]
        [--repeat N] [--json FILE]

Plays the scenarios of ``tests/netns_scenarios.py`` (the ones ``tests/test_netfaults.py``
runs in short versions) in network namespaces: a client and two processor hosts behind a
router namespace, real ``zjobs serve`` daemons, a real client process, faults put in the
router. For each it prints calls answered, lost (no answer, whatever the error), errors by
type, jobs run twice, calls answered from a replay window, how long after the heal the
client had its connections back and the healed host ran its first call, and the healed
host's share of the calls after the heal.

Scenarios: delay_loss (50 ms each way + 5 % loss, 2,000 calls), one_of_two (host b cut
20 s under 250 calls/s), only_host_span (the only host cut 20 s, retries spanning it),
only_host_short (retries shorter than the cut), responses (responses only, cut 10 s),
flaps (10 link flaps), split (requests back 2 s before responses), short_cut (host b cut
3 s: shorter than the keepalive, so the connections survive), reconnect (one_of_two
again and again, to see how long reconnecting takes). All of them by default.
``--reconnect libzmq`` makes the client reconnect as libzmq does by itself (no connect
timeout: the kernel's SYN retries decide), for comparison with zjobs' ``Reconnect``
defaults. Needs root, iproute2 and nftables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from netns import Network, RoutedNetwork
from netns_scenarios import (
    Load,
    Outcome,
    cut_one_of_two,
    cut_only_host,
    cut_responses,
    delay_and_loss,
    link_flaps,
    split_rejoin,
)

Scenario = Callable[[RoutedNetwork, Load], Outcome]

STEADY = Load(rate=250, workers=16, timeout_s=1.0, retries=8, after_heal_s=8.0)
WIDE = Load(rate=20, workers=600, timeout_s=2.0, retries=15, after_heal_s=4.0)

SCENARIOS: dict[str, tuple[Load, Scenario]] = {
    "delay_loss": (replace(STEADY, rate=100, timeout_s=5.0, retries=2),
                   lambda rn, load: delay_and_loss(rn, load, calls=2000)),
    "one_of_two": (STEADY, lambda rn, load: cut_one_of_two(rn, load, outage_s=20)),
    "only_host_span": (WIDE, lambda rn, load: cut_only_host(rn, load, outage_s=20,
                                                            name="only_host_span")),
    "only_host_short": (replace(WIDE, timeout_s=1.0, retries=2),
                        lambda rn, load: cut_only_host(rn, load, outage_s=20,
                                                       name="only_host_short")),
    "responses": (replace(WIDE, rate=30, timeout_s=1.0), lambda rn, load: cut_responses(
        rn, load, outage_s=10)),
    "flaps": (replace(STEADY, rate=150, timeout_s=2.0, retries=4, after_heal_s=2.0),
              lambda rn, load: link_flaps(rn, load, flaps=10, down_s=0.5, up_s=1.5)),
    "split": (STEADY, lambda rn, load: split_rejoin(rn, load, outage_s=20, gap_s=2)),
    "short_cut": (STEADY, lambda rn, load: cut_one_of_two(rn, load, outage_s=3)),
    "reconnect": (replace(STEADY, after_heal_s=1.0),
                  lambda rn, load: cut_one_of_two(rn, load, outage_s=20)),
}


def play(name: str, load: Load, scenario: Scenario) -> dict[str, Any]:
    """One scenario in a network of its own (removed afterwards); its summary."""
    net = Network()
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="zjobs-netfaults-") as workdir:
            outcome = scenario(RoutedNetwork(net, Path(workdir)), load)
    finally:
        net.close()
    summary = outcome.summary()
    summary["scenario"] = name
    summary["wall_s"] = round(time.monotonic() - start, 1)
    summary["reconnect"] = "libzmq" if load.libzmq_reconnect else "zjobs"
    return summary


def line(summary: dict[str, Any]) -> str:
    keys = ("calls", "answered", "lost", "errors", "ran_twice", "replays", "resent",
            "reconnected_after_heal_s", "first_run_after_heal_s[proc-b]",
            "share_after_heal[proc-b]", "first_run_after_heal_s[proc-a]", "slowest_error_s")
    shown = ", ".join(f"{k}={summary[k]}" for k in keys if k in summary)
    return f"{summary['scenario']} (reconnect={summary['reconnect']}): {shown}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Scenarios: " + ", ".join(SCENARIOS) + ".")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help="which to play (default: all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="play each this many times (default 1; reconnect: 5)")
    parser.add_argument("--reconnect", choices=("zjobs", "libzmq", "both"), default="zjobs",
                        help="the client reconnects with zjobs' Reconnect defaults (connect "
                             "timeout 500 ms), as libzmq does alone (reconnect=None), or "
                             "each scenario both ways (default: zjobs)")
    parser.add_argument("--json", type=Path, help="also write every summary to this file")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    missing = [tool for tool in ("ip", "nft", "ss") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        print(f"needs root and {', '.join(missing) or 'iproute2, nftables'}", file=sys.stderr)
        return 2
    variants = {"zjobs": [False], "libzmq": [True], "both": [True, False]}[args.reconnect]
    results = []
    for name in args.scenarios or list(SCENARIOS):
        load, scenario = SCENARIOS[name]
        repeat = args.repeat if args.repeat != 1 or name != "reconnect" else 5
        for libzmq in variants:
            for _ in range(repeat):
                summary = play(name, replace(load, libzmq_reconnect=libzmq), scenario)
                results.append(summary)
                print(line(summary), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
