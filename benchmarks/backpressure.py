"""Backpressure numbers: memory held by bounded queues when a peer is absent or stalled.

    python benchmarks/backpressure.py

1. A sender with no processor: 64 KiB requests offered for a few seconds, with ZMQ_IMMEDIATE
   and without (a plain PUSH socket queues up to its high-water mark for an absent peer).
2. A processor daemon (``zjobs serve``, default PUB high-water mark) with one subscriber
   stopped by SIGSTOP: a client makes 300,000 small calls; the processor's RSS is read
   before and after. The README's "Reliability and delivery guarantees" quotes the output.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zjobs import Client, SendTimeout, ZmqSender

LISTENING = re.compile(r"^listening requests=(\S+) responses=(\S+) name=(\S+)(?: instance=\S+)?$")
KIB = 1024


def rss_kib(pid: int | None = None) -> int:
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def absent_processor(immediate: bool, seconds: float = 3.0) -> str:
    # An ipc path nobody binds: no processor at all (a just-closed tcp port may be reused).
    dead = f"ipc://{tempfile.mkdtemp(prefix='zjb-')}/nobody"
    payload = bytes(64 * KIB)
    with ZmqSender(dead, immediate=immediate, send_timeout_s=0.1, linger_ms=0) as sender:
        before = rss_kib()
        offered = queued = 0
        start = time.monotonic()
        timed = time.monotonic()
        try:
            sender.send(payload)  # the first one waits for send_timeout_s if it must
            queued += 1
        except SendTimeout:
            pass
        timed = time.monotonic() - timed
        while time.monotonic() - start < seconds:
            offered += 1
            try:
                sender.send(payload, timeout_s=0)
                queued += 1
            except SendTimeout:
                pass
        growth = rss_kib() - before
    kind = "IMMEDIATE" if immediate else "plain PUSH (sndhwm 1000)"
    return (f"no processor, {kind}: {offered:,} x 64 KiB offered in {seconds:.0f} s, "
            f"{queued} queued, first send returned after {timed:.2f} s, "
            f"RSS growth {growth / KIB:.1f} MiB")


def stalled_subscriber(calls: int = 300_000) -> str:
    script = Path(sys.executable).with_name("zjobs")
    daemon = subprocess.Popen(
        [str(script), "serve", "zjobs.demo:square", "--requests", "tcp://127.0.0.1:*",
         "--responses", "tcp://127.0.0.1:*", "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True)
    code = ("import sys, zmq\ns = zmq.Context().socket(zmq.SUB)\n"
            "s.setsockopt(zmq.SUBSCRIBE, b'')\ns.connect(sys.argv[1])\ns.recv_multipart()\n"
            "print('subscribed', flush=True)\nimport time; time.sleep(3600)\n")
    stalled = None
    try:
        assert daemon.stdout is not None
        match = LISTENING.match(daemon.stdout.readline().strip())
        assert match is not None
        requests, responses = match.group(1), match.group(2)
        stalled = subprocess.Popen([sys.executable, "-c", code, responses],
                                   stdout=subprocess.PIPE, text=True)
        assert stalled.stdout is not None and stalled.stdout.readline().strip() == "subscribed"
        os.kill(stalled.pid, signal.SIGSTOP)
        with Client.connect(requests, responses, timeout_s=60) as client:
            client.call(1)
            before = rss_kib(daemon.pid)
            for start in range(0, calls, 10_000):
                futures = [client.submit(n) for n in range(start, start + 10_000)]
                for future in futures:
                    future.result()
            after = rss_kib(daemon.pid)
        return (f"stalled subscriber, default PUB sndhwm (100,000): {calls:,} responses "
                f"published, processor RSS {before / KIB:.1f} -> {after / KIB:.1f} MiB")
    finally:
        if stalled is not None:
            os.kill(stalled.pid, signal.SIGKILL)
            stalled.wait()
            if stalled.stdout is not None:
                stalled.stdout.close()
        daemon.terminate()
        daemon.wait(30)
        if daemon.stdout is not None:
            daemon.stdout.close()


def main() -> None:
    print(absent_processor(immediate=True))
    print(absent_processor(immediate=False))
    print(stalled_subscriber())


def _usage() -> None:
    """Answer --help with this file's description; the example takes no options."""
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


if __name__ == "__main__":
    _usage()
    main()
