"""``zjobs demo``: a small event-driven system in one process, printing what flows.

Three processors serve in threads over ``inproc://`` endpoints of a private zmq context.
A :class:`~zjobs.Link` sends the results of ``square`` on to ``describe`` (a chain of two
jobs), called through :meth:`Pipeline.connect <zjobs.Pipeline.connect>`; a tap on
``square``'s responses shows the intermediate results, as ``zjobs listen`` would. ``lookup``
is a slow job with an in-memory cache, called with a :class:`~zjobs.Client`.

The jobs are ordinary module-level functions, so they can also be served as daemons::

    zjobs serve zjobs.demo:square --requests tcp://127.0.0.1:5555 --responses tcp://127.0.0.1:5556
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import zmq

from zjobs.compose.link import Link
from zjobs.compose.pipeline import Pipeline
from zjobs.core.cache import cached
from zjobs.errors import ReceiveTimeout, StageError, ZJobsError
from zjobs.processor.sync import ZmqProcessor
from zjobs.testing import wait_subscribed
from zjobs.transport.receiver import ZmqReceiver
from zjobs.wire.jsonvalues import to_json
from zjobs.wire.protocol import PONG, Id, Response

__all__ = ["describe", "lookup", "run_demo", "sleep", "slow_lookup", "square"]

LOOKUP_SECONDS = 0.2
CHAIN_TOPIC = "demo.chain."
"""The link forwards only work on topics under this prefix (the pipeline's topic is one)."""
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


def _line(arrow: str, response: Response, took_s: float | None = None) -> str:
    if response.ok:
        body = f"ok cached={str(response.cached).lower():5} {_show(response.value)}"
    else:
        error = response.error
        body = f"error {error.type}: {error.message}" if error else "error"
    meta = f" meta={_show(response.meta)}" if response.meta else ""
    took = f" ({took_s * 1000:.1f} ms)" if took_s is not None else ""
    return f"  {arrow} {response.processor:9} id={response.id!s} {body}{meta}{took}"


def _published(tap: ZmqReceiver, rid: Id | None) -> Response:
    """The response to ``rid`` published on the tapped endpoint (pongs are skipped)."""
    deadline = time.monotonic() + _WAIT_S
    while True:
        try:
            response = tap.receive(timeout=max(0.0, deadline - time.monotonic()))
        except ReceiveTimeout:
            raise ZJobsError(f"demo: no response to {rid!r} within {_WAIT_S}s") from None
        if response.status != PONG and response.id == rid:
            return response


def run_demo(write: Callable[[str], None] = print) -> None:
    """Run the demo system, writing what flows through ``write``, line by line.

    Raises:
        ZJobsError: something did not answer in time (it never should).
    """
    start = time.monotonic()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with contextlib.ExitStack() as stack:
            _run(stack, context, write)
    finally:
        context.term()
    write(f"\nDone in {time.monotonic() - start:.2f} s. Serve a job as a daemon next: "
          "zjobs serve zjobs.demo:square --requests tcp://127.0.0.1:5555 "
          "--responses tcp://127.0.0.1:5556")


def _run(stack: contextlib.ExitStack, context: zmq.Context[zmq.Socket[bytes]],
         write: Callable[[str], None]) -> None:
    def serve(job: Any, name: str) -> ZmqProcessor:
        return stack.enter_context(ZmqProcessor(
            job, name=name, context=context, requests=f"inproc://demo-{name}-requests",
            responses=f"inproc://demo-{name}-responses"))

    # A fresh cache each run, so the first lookup is always a miss.
    procs = [serve(square, "square"), serve(describe, "describe"),
             serve(cached(slow_lookup, maxsize=128), "lookup")]
    to_square, to_describe, to_lookup = procs
    write("zjobs demo: 3 processors serving in threads of this process, over inproc")
    for proc in procs:
        write(f"  {proc.name:9} requests={proc.endpoints.requests} "
              f"responses={proc.endpoints.responses}")

    link = stack.enter_context(Link(to_square, to_describe, name="square->describe",
                                    topic=CHAIN_TOPIC, context=context))
    write(f"  link {link.name}: square's results on topics {CHAIN_TOPIC}* -> requests of "
          "describe")
    chain = stack.enter_context(Pipeline.connect(
        to_square.endpoints.requests, to_describe.endpoints.responses,
        topic_prefix=CHAIN_TOPIC, context=context, timeout_s=_WAIT_S))
    # Intermediate results stay on square's responses, on the caller's topic: tap them.
    tap = stack.enter_context(to_square.receiver(topics=[chain.topic]))
    with to_square.sender() as probe:
        wait_subscribed(probe, tap, topic=chain.topic)

    write("  tap: square's responses on the caller's topic (intermediate results, marked ..)")

    write('\nA chain of two jobs: square, then describe (one id follows the work, meta '
          '"zjobs.path" grows)')
    for n in (3, 4, 12):
        write(f"  -> square    {_show(n)}")
        sent = time.monotonic()
        result = chain.call_response(n)
        took = time.monotonic() - sent
        write(_line("..", _published(tap, result.id)))
        write(_line("<-", result, took))

    write(f"\nA cached job: lookup takes {LOOKUP_SECONDS} s, then answers from its cache")
    with to_lookup.client(timeout_s=_WAIT_S) as client:
        for _ in range(2):
            write(f"  -> lookup    {_show('zeromq')}")
            sent = time.monotonic()
            response = client.call_response("zeromq")
            write(_line("<-", response, time.monotonic() - sent))

    write("\nAn error is an answer too: it reaches the caller naming the stage that failed, "
          "and the chain goes on serving")
    write(f"  -> square    {_show('seven')}")
    try:
        chain.call("seven")
    except StageError as exc:
        write(_line("..", _published(tap, exc.id)))
        write(f"  <- StageError stage={exc.stage} path={_show(exc.path)}: "
              f"{exc.type}: {exc.message}")
    else:
        raise ZJobsError("demo: square('seven') did not fail")
    write(f"  -> square    {_show(7)}")
    write(f"  <- describe  {_show(chain.call(7))}")

    link.stop()  # a link counts a forward after sending it: stopped, its counters are final
    write("\nCounters")
    for proc in procs:
        counts = " ".join(f"{k}={v}" for k, v in proc.counters.as_dict().items())
        write(f"  {proc.name:9} {counts}")
    counts = " ".join(f"{k}={v}" for k, v in link.counters.as_dict().items() if v)
    write(f"  {link.name} {counts}")
