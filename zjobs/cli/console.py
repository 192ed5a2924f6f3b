"""What the client commands do at a console: responses as JSON lines, sending values one by
one, sending one value many times with a summary, and printing what processors publish.

Lines are handed to the ``write`` (stdout) and ``error`` (stderr) callables given, so this
module knows nothing of argv, signals or exit codes: ``zjobs send`` and ``zjobs listen``
(:mod:`zjobs.cli.calls`) wire it to the terminal.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from zjobs.client.sync import Client
from zjobs.errors import CallTimeout, ReceiveTimeout, RemoteError
from zjobs.transport.receiver import McReceive
from zjobs.wire.jsonvalues import to_json
from zjobs.wire.protocol import PONG, Response

__all__ = ["SendSummary", "describe_error", "json_line", "listen", "response_json",
           "send_each", "send_repeatedly"]

Write = Callable[[str], object]


def response_json(response: Response) -> dict[str, Any]:
    """A response as the JSON object printed by ``send`` and ``listen``."""
    line: dict[str, Any] = {
        "id": to_json(response.id),
        "status": response.status,
        "cached": response.cached,
        "processor": response.processor,
        "instance": response.instance,
        "meta": to_json(response.meta),
    }
    if response.error is not None:
        line["error"] = to_json(response.error.to_map())
    elif response.ok:
        line["value"] = to_json(response.value)
    return line


def json_line(value: Any) -> str:
    """``value`` as one line of JSON (UTF-8 kept as is; NaN and infinities refused)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def describe_error(response: Response) -> str:
    """Why a response is not ok, naming the request and the processor."""
    error = response.error
    kind = f"{error.type}: {error.message}" if error is not None else response.status
    return f"request {response.id!r} failed at {response.processor!r}: {kind}"


def send_each(client: Client, values: Iterable[Any], *, concurrency: int, timeout_s: float,
              write: Write, error: Write) -> bool:
    """Call with each value, at most ``concurrency`` at once, and write each response as a
    JSON line in input order; write why a call failed to ``error``.

    Returns:
        True when every response was ok. The responses of the calls already made are
        written even when ``values`` raises (e.g. on invalid input), which then propagates.
        A KeyboardInterrupt (Ctrl-C) propagates at once, leaving the calls in flight to
        be failed by closing the client.
    """
    all_ok = True
    window: deque[Future[Response]] = deque()

    def settle(future: Future[Response]) -> None:
        nonlocal all_ok
        try:
            response = future.result()
        except CallTimeout as exc:
            all_ok = False
            error(str(exc))
            return
        write(json_line(response_json(response)))
        if not response.ok:
            all_ok = False
            error(describe_error(response))

    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="zjobs-send")
    interrupted = False
    try:
        for value in values:
            if len(window) >= concurrency:
                settle(window.popleft())
            window.append(pool.submit(client.call_response, value, timeout_s=timeout_s))
        while window:
            settle(window.popleft())
    except KeyboardInterrupt:
        interrupted = True  # do not wait for calls in flight: closing the client ends them
        raise
    except BaseException:
        while window:  # ``values`` raised (invalid input): answer the calls already made
            settle(window.popleft())
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=interrupted)
    return all_ok


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


@dataclass(frozen=True, slots=True)
class SendSummary:
    """How :func:`send_repeatedly` went (so far, when it was interrupted)."""

    count: int
    """Calls that ended: answered, failed or timed out."""
    seconds: float
    latencies_s: list[float]
    """Each call's latency, sorted."""
    failures: list[BaseException]
    """What the failed calls raised (RemoteError, CallTimeout...), in the order they ended."""
    timeouts: int
    requested: int = 0
    """Calls asked for (``count`` when the run was not interrupted)."""
    sent: int = 0
    """Calls submitted."""
    interrupted: bool = False
    """True when Ctrl-C stopped the run: the summary counts what ended before."""

    @property
    def ok(self) -> bool:
        """True when no call failed and none is missing."""
        return not self.failures and not self.interrupted

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values (``--json``); a latency with no call is None."""
        def ms(q: float) -> float | None:
            value = _percentile(self.latencies_s, q)
            return None if math.isnan(value) else round(value * 1000, 3)

        return {"count": self.count, "ok": self.count - len(self.failures),
                "errors": len(self.failures) - self.timeouts, "timeouts": self.timeouts,
                "seconds": round(self.seconds, 3),
                "requests_per_s": round(self.count / self.seconds, 1) if self.seconds else None,
                "p50_ms": ms(0.5), "p99_ms": ms(0.99), "requested": self.requested,
                "sent": self.sent, "interrupted": self.interrupted}

    def line(self) -> str:
        """The summary line: counts, duration, rate and latency p50/p99 (then, when
        interrupted, ``interrupted=true`` with how many were sent and asked for)."""
        line = (f"count={self.count} ok={self.count - len(self.failures)} "
                f"errors={len(self.failures) - self.timeouts} timeouts={self.timeouts} "
                f"seconds={self.seconds:.3f} req/s={self.count / self.seconds:.1f} "
                f"p50_ms={_percentile(self.latencies_s, 0.5) * 1000:.3f} "
                f"p99_ms={_percentile(self.latencies_s, 0.99) * 1000:.3f}")
        if self.interrupted:
            line += f" interrupted=true sent={self.sent} requested={self.requested}"
        return line

    def failure(self) -> str | None:
        """How many calls failed and why the first did, or None when none failed."""
        if self.interrupted:
            return (f"interrupted: {self.count} of {self.requested} requests ended "
                    f"({self.sent} sent)")
        if not self.failures:
            return None
        first = self.failures[0]
        reason = str(first) if isinstance(first, RemoteError | CallTimeout) else repr(first)
        return f"{len(self.failures)} of {self.count} requests failed; first: {reason}"


def send_repeatedly(client: Client, value: Any, count: int, *, concurrency: int,
                    on_sent: Callable[[], object] | None = None) -> SendSummary:
    """Submit ``value`` ``count`` times with at most ``concurrency`` calls in flight, wait
    for every answer, and sum up; ``on_sent`` is called after each submit (a progress bar).

    A KeyboardInterrupt (Ctrl-C) ends the run at once: the summary then counts the calls
    that ended before it, with ``interrupted`` set (the calls in flight are left to be
    failed by closing the client).
    """
    slots = threading.Semaphore(concurrency)
    lock = threading.Lock()  # the summary of an interrupted run must be consistent
    latencies: list[float] = []
    failures: list[BaseException] = []
    timeouts = sent = 0

    def done(future: Future[Any], started: float) -> None:
        nonlocal timeouts
        try:
            exc = future.exception()
            with lock:
                latencies.append(time.monotonic() - started)
                if exc is not None:
                    failures.append(exc)
                    timeouts += isinstance(exc, CallTimeout)
        finally:
            slots.release()

    def summary(interrupted: bool) -> SendSummary:
        with lock:
            return SendSummary(len(latencies), time.monotonic() - start, sorted(latencies),
                               list(failures), timeouts, count, sent, interrupted)

    start = time.monotonic()
    try:
        for _ in range(count):
            slots.acquire()
            started = time.monotonic()
            future = client.submit(value)
            sent += 1
            future.add_done_callback(functools.partial(done, started=started))
            if on_sent is not None:
                on_sent()
        # Wait for every callback, not for the futures: a future's waiters wake up before
        # its callbacks run, so the last calls' outcomes could still be missing.
        for _ in range(concurrency):
            slots.acquire()
    except KeyboardInterrupt:
        return summary(interrupted=True)
    return summary(interrupted=False)


def listen(receiver: McReceive, write: Write, *, count: int | None = None,
           pongs: bool = False) -> None:
    """Write each response ``receiver`` gets as a JSON line, until ``count`` were written
    (None: forever). Pongs (answers to readiness pings) are left out unless ``pongs``.
    """
    seen = 0
    while count is None or seen < count:
        try:
            response = receiver.receive(timeout=1.0)
        except ReceiveTimeout:
            continue
        if response.status == PONG and not pongs:
            continue
        write(json_line(response_json(response)))
        seen += 1
