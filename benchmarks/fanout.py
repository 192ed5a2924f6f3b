"""Topology numbers: what every subscriber of a processor's PUB socket costs the processor.

    python benchmarks/fanout.py                 # about a minute
    python benchmarks/fanout.py --requests 5000 --idle 0,100 --full 0,1   # a smoke run

One processor (a ``ProcessorProcess`` echoing ``--size`` bytes) answers one pipelined
client (500 calls in flight), while
other subscribers are connected to its PUB socket over tcp:

* ``--idle N``: N subscribers on topics of their own (what N other idle clients are: a
  private reply topic plus the heartbeat topic). ZeroMQ filters on the publisher, so
  they receive nothing but heartbeats; what they cost is the topic matching per response.
* ``--full N``: N subscribers to every response (``""``: what ``zjobs listen``, a link or
  a dashboard is); each costs the processor a copy of every response.

For each setting it prints the calls per second and the processor's CPU time per call
(``utime + stime`` from /proc, so the I/O thread's work is included). The README's
"Across hosts" section quotes a run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import secrets
import time
from multiprocessing.connection import Connection
from pathlib import Path

import zmq

import zjobs
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC

WINDOW = 500  # calls in flight


def echo(request: bytes, resources: object) -> bytes:
    """The job: answer the request itself, so the response's size is the request's."""
    return request


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subscribers(endpoint: str, idle: int, full: int, pipe: Connection) -> None:
    """The other subscribers, in a process of their own: connect, confirm each one gets a
    heartbeat (its subscription is live), report, then read until told to stop."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    context.max_sockets = idle + full + 16
    sockets = []
    for i in range(idle + full):
        sock = context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 0  # never let a full subscriber drop: the processor sends everything
        sock.setsockopt(zmq.SUBSCRIBE, b"" if i >= idle else secrets.token_hex(16).encode())
        sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        sock.connect(endpoint)
        sockets.append(sock)
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    waiting = set(range(len(sockets)))
    live = False
    received = 0
    while True:
        for sock, _ in poller.poll(100):
            while True:
                try:
                    sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received += 1
            waiting.discard(sockets.index(sock))
        if not waiting and not live:
            pipe.send("live")
            live = True
        if pipe.poll(0):
            pipe.recv()
            break
    pipe.send(received)
    for sock in sockets:
        sock.close()
    context.term()


def measure(requests: int, idle: int, full: int, size: int) -> dict[str, float]:
    payload = bytes(size)
    # A trivial job: all the cost measured is the per-message work.
    with zjobs.ProcessorProcess("fanout:echo", requests="tcp://127.0.0.1:*",
                                responses="tcp://127.0.0.1:*",
                                app_dir=str(Path(__file__).resolve().parent)) as child:
        pid = child.pid
        assert pid is not None
        ours, theirs = multiprocessing.Pipe()
        others = multiprocessing.get_context("spawn").Process(
            target=subscribers, args=(child.connect_endpoints.responses, idle, full, theirs))
        others.start()
        if ours.poll(120):
            assert ours.recv() == "live"
        with child.client(timeout_s=60) as client:
            client.wait_ready()
            for future in [client.submit(payload) for _ in range(WINDOW)]:
                future.result()  # warm up
            before, start = cpu_s(pid), time.perf_counter()
            pending = []
            for _ in range(requests):
                pending.append(client.submit(payload))
                if len(pending) >= WINDOW:
                    pending.pop(0).result()
            for future in pending:
                future.result()
            seconds, cpu = time.perf_counter() - start, cpu_s(pid) - before
        ours.send("stop")
        received = ours.recv() if ours.poll(60) else -1
        others.join(60)
    return {"idle": idle, "full": full, "size": size, "calls_per_s": requests / seconds,
            "processor_cpu_us_per_call": cpu / requests * 1e6,
            "processor_cpu_percent": cpu / seconds * 100, "others_received": received}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="calls per setting")
    parser.add_argument("--idle", default="0,100,1000",
                        help="numbers of idle subscribers (own topics), comma-separated")
    parser.add_argument("--size", type=int, default=1024, help="bytes per request and response")
    parser.add_argument("--full", default="1,4,16,64",
                        help="numbers of subscribers to everything, comma-separated "
                             "(each setting with no idle ones)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    settings = [(int(n), 0) for n in args.idle.split(",") if n]
    settings += [(0, int(n)) for n in args.full.split(",") if n]
    results = []
    print(f"{'idle':>6} {'full':>5} {'calls/s':>9} {'proc µs/call':>13} {'proc CPU':>9}")
    for idle, full in settings:
        row = measure(args.requests, idle, full, args.size)
        results.append(row)
        print(f"{idle:>6} {full:>5} {row['calls_per_s']:>9,.0f} "
              f"{row['processor_cpu_us_per_call']:>13.1f} {row['processor_cpu_percent']:>8.0f}%",
              flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
