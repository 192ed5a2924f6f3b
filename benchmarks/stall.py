"""A stalled receiver: a ``ZmqReceiver`` stops reading while a flood is published, then resumes.

    python benchmarks/stall.py [--seconds 30] [--messages 300000]

The publisher is a processor's PUB socket (:class:`zjobs.transport.sockets.ProcessorSockets`
with the default options) numbered by a :class:`zjobs.transport.publisher.Publisher`. The
receiver runs in a child process (this script, run with ``child``) with default options and
a :class:`zjobs.ProcessorMonitor`: it takes one message, stops reading, and stays stalled
for ``--seconds`` after the flood is over (longer than any keepalive timeout), with its
queue full. Then it reads everything, up to an end marker, and reports. Reported: whether
the child lived and exited 0 (before the fix, libzmq aborted it with SIGABRT:
``Assertion failed: _input_stopped``), messages received, messages missed as counted from
``seq`` gaps (received + gaps must cover every number from the first to the last), and its
resident memory before and at the end of the stall. Exit status 1 if the child did not
exit 0 or a message is unaccounted for. ``tests/test_reliability_stall.py`` runs an 8-second
version in CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

END = "end"


@dataclass(frozen=True)
class StallResult:
    """What a stall run observed."""

    stall_s: float
    published: int
    exit_code: int | None
    """The child's exit status (negative: killed by that signal; None: did not end)."""
    received: int = 0
    gaps: int = 0
    first_seq: int = 0
    last_seq: int = 0
    rss_before_kib: int = 0
    rss_stalled_kib: int = 0
    rss_after_kib: int = 0

    @property
    def accounted(self) -> bool:
        """Every sequence number from the first to the last was received or counted missed."""
        return self.received + self.gaps == self.last_seq - self.first_seq + 1

    def summary(self) -> str:
        return (f"receiver stalled {self.stall_s:.0f} s after {self.published} messages "
                f"published: exit code {self.exit_code}, {self.received} received, "
                f"{self.gaps} counted missed (seq {self.first_seq}..{self.last_seq}, all "
                f"accounted: {self.accounted}); RSS {self.rss_before_kib} -> "
                f"{self.rss_stalled_kib} KiB stalled, {self.rss_after_kib} KiB after")


def rss_kib() -> int:
    """This process's resident memory, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def run_stall(stall_s: float = 30.0, messages: int = 300_000) -> StallResult:
    """Publish ``messages`` to a stalled child receiver, keep it stalled ``stall_s`` more."""
    import zmq

    from zjobs.transport.keepalive import DEFAULT_KEEPALIVE
    from zjobs.transport.publisher import Publisher
    from zjobs.transport.sockets import DEFAULT_MAX_MESSAGE_SIZE, ProcessorSockets
    from zjobs.wire.protocol import Response

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sockets = ProcessorSockets(context, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                               max_message_size=DEFAULT_MAX_MESSAGE_SIZE, linger_ms=0,
                               rcvhwm=1000, sndhwm=1000, keepalive=DEFAULT_KEEPALIVE,
                               security=None)
    assert sockets.pub is not None
    publisher = Publisher(sockets.pub, name="stall", instance="stall-1",
                          heartbeat_interval_s=None)

    def publish(n: int, value: Any) -> None:
        publisher.publish(Response(f"r{n}", "ok", value, processor="stall", topic=b"stall",
                                   instance="stall-1").to_frames())

    flag = Path(tempfile.mkdtemp(prefix="zj-stall-")) / "flooded"
    child = subprocess.Popen(
        [sys.executable, __file__, "child", sockets.responses, str(flag), str(stall_s)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    lines: list[str] = []
    try:
        # Probes until the child has one: its subscription is in place, and it stops reading.
        out = child.stdout
        reader = threading.Thread(target=lambda: lines.extend(line.strip() for line in out),
                                  daemon=True)
        reader.start()
        n = 0
        deadline = time.monotonic() + 60
        while not lines and child.poll() is None and time.monotonic() < deadline:
            publish(n, "probe")
            n += 1
            time.sleep(0.02)
        for _ in range(messages):
            publish(n, n)
            n += 1
        flag.touch()
        deadline = time.monotonic() + stall_s + 120
        # Nothing more until the child has read its backlog: what arrives after a resume is
        # read from a quiet connection (the crash needed exactly that).
        while ("drained" not in lines and child.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
        # The end marker, until the child has read one (a PUB may drop any single one).
        while child.poll() is None and time.monotonic() < deadline:
            publish(n, END)
            n += 1
            time.sleep(0.05)
        if child.poll() is None:
            child.kill()
        child.wait(30)
        reader.join(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        publisher.close()
        sockets.close()
        context.term()
        flag.unlink(missing_ok=True)
        flag.parent.rmdir()
    report: dict[str, Any] = {}
    for line in lines:
        if line.startswith("{"):
            report = json.loads(line)
    return StallResult(stall_s=stall_s, published=n, exit_code=child.returncode, **report)


def child_main(endpoint: str, flag: str, stall_s: float) -> None:
    """The stalled receiver: one message, a stall until ``flag`` exists plus ``stall_s``
    seconds, then everything up to the end marker; JSON on stdout."""
    from zjobs import ProcessorMonitor, ReceiveTimeout, ZmqReceiver

    monitor = ProcessorMonitor()
    with ZmqReceiver(endpoint, monitor=monitor) as receiver:
        first = receiver.receive(timeout=60)
        rss_before = rss_kib()
        print("subscribed", flush=True)
        flooded = Path(flag)
        while not flooded.exists():  # stalled: this process reads nothing
            time.sleep(0.05)
        time.sleep(stall_s)
        rss_stalled = rss_kib()
        received, last = 1, first
        while True:  # the backlog, until the connection is quiet for a second
            try:
                last = receiver.receive(timeout=1.0)
            except ReceiveTimeout:
                break
            received += 1
        print("drained", flush=True)
        while last.value != END:
            last = receiver.receive(timeout=60)
            received += 1
        report = {"received": received, "gaps": monitor.gaps, "first_seq": first.seq,
                  "last_seq": last.seq, "rss_before_kib": rss_before,
                  "rss_stalled_kib": rss_stalled, "rss_after_kib": rss_kib()}
    print(json.dumps(report), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        endpoint, flag, stall_s = sys.argv[2:5]
        child_main(endpoint, flag, float(stall_s))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="how long the receiver stays stalled after the flood")
    parser.add_argument("--messages", type=int, default=300_000,
                        help="messages published while it is stalled")
    args = parser.parse_args()
    result = run_stall(args.seconds, args.messages)
    print(result.summary())
    if result.exit_code != 0 or not result.accounted:
        sys.exit(1)


if __name__ == "__main__":
    main()
