"""Reconnect latency: how soon a sender connects to a peer that becomes reachable again.

    python benchmarks/reconnect.py [--outage 10] [--rounds 3]

An unreachable host is imitated on loopback by a TCP listener whose accept queue is full
and never read: the kernel drops the SYNs sent to it, as a black-holed route does. After
``--outage`` seconds the listener is replaced by a real one on the same port ("the host
heals"), and the time until a sender's PUSH socket connects is measured, with zjobs' defaults
(:class:`zjobs.Reconnect`: 500 ms connect timeout, 100 to 400 ms between attempts) and with
libzmq's own (no connect timeout: the kernel's SYN retries decide). A second case measures
a processor that restarts (connections refused meanwhile, as on a live host).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from zjobs import Reconnect


def connected_after_heal(reconnect: Reconnect | None, outage_s: float, *,
                         black_hole: bool) -> float:
    """Seconds from the heal to the sender's connection (a new listener on the same port)."""
    filler = [socket.socket() for _ in range(3)]
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    if black_hole:
        holder.listen(0)
        for sock in filler:  # fill the accept queue: later SYNs are dropped
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
    else:
        holder.close()  # nothing listens: connects are refused
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = context.socket(zmq.PUSH)  # a sender's socket, with the options under test
    push.linger = 0
    if reconnect is not None:
        reconnect.apply(push)
    events = push.get_monitor_socket(zmq.EVENT_CONNECTED)
    pull = None
    try:
        push.connect(f"tcp://127.0.0.1:{port}")
        time.sleep(outage_s)
        for sock in [*filler, holder]:
            sock.close()
        pull = context.socket(zmq.PULL)
        pull.linger = 0
        pull.bind(f"tcp://127.0.0.1:{port}")
        healed = time.monotonic()
        if not events.poll(60_000):
            return float("inf")
        recv_monitor_message(events)
        return time.monotonic() - healed
    finally:
        for sock in [*filler, holder]:
            sock.close()
        events.close()
        push.disable_monitor()
        push.close()
        if pull is not None:
            pull.close()
        context.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=10.0, help="seconds unreachable")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for black_hole in (True, False):
        case = "black-holed host" if black_hole else "processor restart (refused)"
        for name, reconnect in (("zjobs Reconnect()", Reconnect()), ("libzmq defaults", None)):
            times = [connected_after_heal(reconnect, args.outage, black_hole=black_hole)
                     for _ in range(args.rounds)]
            print(f"{case}, {args.outage:.0f} s, {name}: connected "
                  f"{statistics.median(times):.2f} s after the heal (median; max "
                  f"{max(times):.2f} s, {args.rounds} rounds)", flush=True)


if __name__ == "__main__":
    main()
