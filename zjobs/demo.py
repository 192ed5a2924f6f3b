"""``zjobs demo``: a small event-driven system in one process, printing what flows.

Three processors serve in threads over ``inproc://`` endpoints of a private zmq context:
``square`` feeds ``describe`` through a link (a chain of two jobs), and ``lookup`` is a
slow job with an in-memory cache. A tap receiver subscribed to every response shows each
message as it is published.

The jobs are ordinary module-level functions, so they can also be served as daemons::

    zjobs serve zjobs.demo:square --requests tcp://127.0.0.1:5555 --responses tcp://127.0.0.1:5556
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from zjobs.cache import cached
from zjobs.errors import ReceiveTimeout, ZJobsError
from zjobs.jsonvalues import to_json
from zjobs.processor import ZmqProcessor
from zjobs.protocol import PONG, Response
from zjobs.receiver import ZmqReceiver
from zjobs.sender import ZmqSender
from zjobs.testing import wait_subscribed

__all__ = ["describe", "lookup", "run_demo", "sleep", "slow_lookup", "square"]

LOOKUP_SECONDS = 0.2
CHAIN_TOPIC = "demo.chain"
OUT_TOPIC = "demo.out"
TAP_TOPIC = "demo.tap"
_WAIT_S = 10.0


def square(request: int, resources: Any) -> int:
    """The square of a number."""
    return request * request


def describe(request: int, resources: Any) -> str:
    """A number in words: ``"9 is odd"``."""
    return f"{request} is {'even' if request % 2 == 0 else 'odd'}"


def slow_lookup(request: str, resources: Any) -> dict[str, Any]:
    """A slow lookup (0.2 s): facts about a word."""
    time.sleep(LOOKUP_SECONDS)
    return {"word": request, "length": len(request), "vowels": sum(c in "aeiou" for c in request)}


lookup = cached(slow_lookup, maxsize=128)
"""``slow_lookup`` with an in-memory cache (what ``zjobs serve zjobs.demo:lookup`` serves)."""


def sleep(request: float, resources: Any) -> float:
    """Sleep ``request`` seconds (at most 60), then return it: a slow job to try stopping."""
    time.sleep(min(max(float(request), 0.0), 60.0))
    return request


def _show(value: Any) -> str:
    return json.dumps(to_json(value), ensure_ascii=False)


class _Link(threading.Thread):
    """Sends every ok response of one processor, on one topic, to another processor."""

    def __init__(self, receiver: ZmqReceiver, sender: ZmqSender, path: list[str]) -> None:
        super().__init__(name="zjobs-demo-link", daemon=True)
        self.receiver, self.sender, self.path = receiver, sender, path
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                response = self.receiver.receive(timeout=0.05)
            except ReceiveTimeout:
                continue
            if response.ok and response.id is not None:
                self.sender.send(response.value, id=response.id, reply_to=OUT_TOPIC,
                                 meta={"path": self.path})


class _Demo:
    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.closers: list[Callable[[], None]] = []
        self.sent_at: dict[Any, float] = {}

    def processor(self, job: Any, name: str) -> ZmqProcessor:
        proc = ZmqProcessor(job, name=name, context=self.context,
                            requests=f"inproc://demo-{name}-requests",
                            responses=f"inproc://demo-{name}-responses")
        self.closers.append(proc.stop)
        proc.start()
        return proc

    def own(self, closable: Any) -> Any:
        self.closers.append(closable.close)
        return closable

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.context.term()

    def send(self, sender: ZmqSender, name: str, value: Any, rid: str, reply_to: str) -> None:
        self.sent_at[rid] = time.monotonic()
        self.write(f"  -> {name:9} id={rid:4} {_show(value)}")
        sender.send(value, id=rid, reply_to=reply_to)

    def watch(self, tap: ZmqReceiver, *expected: tuple[str, str]) -> None:
        """Wait for the responses of the expected (processor, id) pairs, then print them in
        that order (the tap merges several publishers, so arrival order may differ)."""
        deadline = time.monotonic() + _WAIT_S
        seen: dict[tuple[str, Any], tuple[Response, float]] = {}
        while any(key not in seen for key in expected):
            try:
                response = tap.receive(timeout=max(0.0, deadline - time.monotonic()))
            except ReceiveTimeout:
                raise ZJobsError(f"demo: no response within {_WAIT_S}s") from None
            if response.status != PONG:
                seen[response.processor, response.id] = (response, time.monotonic())
        for key in expected:
            response, arrived = seen[key]
            took = arrived - self.sent_at[response.id]
            if response.ok:
                body = f"ok cached={str(response.cached).lower():5} {_show(response.value)}"
            else:
                error = response.error
                body = f"error {error.type}: {error.message}" if error else "error"
            path = f" meta={_show(response.meta)}" if response.meta else ""
            self.write(f"  <- {response.processor:9} id={response.id!s:4} {body}{path} "
                       f"({took * 1000:.1f} ms)")


def run_demo(write: Callable[[str], None] = print) -> None:
    """Run the demo system, writing what flows through ``write``, line by line.

    Raises:
        ZJobsError: something did not answer in time (it never should).
    """
    start = time.monotonic()
    demo = _Demo(write)
    try:
        procs = [demo.processor(square, "square"), demo.processor(describe, "describe"),
                 demo.processor(cached(slow_lookup, maxsize=128), "lookup")]
        write("zjobs demo: 3 processors serving in threads of this process, over inproc")
        for proc in procs:
            write(f"  {proc.name:9} requests={proc.endpoints.requests} "
                  f"responses={proc.endpoints.responses}")
        to_square, to_describe, to_lookup = (demo.own(proc.sender()) for proc in procs)
        tap = demo.own(ZmqReceiver([p.endpoints.responses for p in procs],
                                   context=demo.context))
        for sender in (to_square, to_describe, to_lookup):
            wait_subscribed(sender, tap, topic=TAP_TOPIC)
        link_in = demo.own(procs[0].receiver(topics=[CHAIN_TOPIC]))
        wait_subscribed(to_square, link_in, topic=CHAIN_TOPIC)
        link = _Link(link_in, to_describe, ["square", "describe"])
        link.start()
        demo.closers.append(link.stop)
        write(f"  link: ok responses of square on topic {CHAIN_TOPIC!r} -> requests "
              "of describe")

        write("\nA chain of two jobs: square, then describe (one id follows the work)")
        for n, rid in ((3, "n-1"), (4, "n-2"), (12, "n-3")):
            demo.send(to_square, "square", n, rid, CHAIN_TOPIC)
            demo.watch(tap, ("square", rid), ("describe", rid))

        write(f"\nA cached job: lookup takes {LOOKUP_SECONDS} s, then answers from its cache")
        for rid in ("c-1", "c-2"):
            demo.send(to_lookup, "lookup", "zeromq", rid, OUT_TOPIC)
            demo.watch(tap, ("lookup", rid))

        write("\nAn error is an answer too: the processor goes on serving")
        demo.send(to_square, "square", "seven", "e-1", OUT_TOPIC)
        demo.watch(tap, ("square", "e-1"))
        demo.send(to_square, "square", 7, "e-2", OUT_TOPIC)
        demo.watch(tap, ("square", "e-2"))

        write("\nCounters")
        for proc in procs:
            counts = " ".join(f"{k}={v}" for k, v in proc.counters.as_dict().items())
            write(f"  {proc.name:9} {counts}")
    finally:
        demo.close()
    write(f"\nDone in {time.monotonic() - start:.2f} s. Serve a job as a daemon next: "
          "zjobs serve zjobs.demo:square --requests tcp://127.0.0.1:5555 "
          "--responses tcp://127.0.0.1:5556")
