"""The client of the network-fault tests: calls processors through the public ``zjobs.Client``
API, from inside the client namespace, and prints what came back as JSON.

    python netns_driver.py '{"requests": [...], "responses": [...], "rate": 100, ...}'

``workers`` threads make calls (``call_response(n)``, n = 0, 1, 2 ...) paced at ``rate``
calls a second in all, until ``max_calls`` were made or a line ``stop`` (or the end of
standard input: the test is gone) arrives; then the calls in flight finish. It prints one
JSON object per line: ``{"event": "ready", "t": T}`` once the readiness handshake is done,
then ``{"event": "done", ...}`` with the counts (answered, errors by type, calls per
processor), the client's counters and one record per call: ``[n, start, end, processor,
error type, attempts, replay]`` (times from ``time.monotonic``, the clock every namespace
shares). Options: ``timeout_s``, ``retries``, ``send_timeout_s``, ``reconnect``
(``[connect_timeout_ms, interval_ms, max_interval_ms]``, or null for libzmq's own
reconnecting; absent: zjobs' default) and ``zmq_options`` (ZeroMQ socket options by name,
set as defaults of the client's own context, for what the client has no option for).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from typing import Any

import zmq

import zjobs


class Calls:
    """The shared schedule of calls and the record of each."""

    def __init__(self, rate: float, max_calls: int) -> None:
        self.rate = rate
        self.max_calls = max_calls
        self.stop = threading.Event()
        self.records: list[list[Any]] = []
        self._next = 0
        self._lock = threading.Lock()
        self.start = time.monotonic()

    def take(self) -> int | None:
        """The next call's number, once it is due; None when no more calls are to be made."""
        with self._lock:
            n = self._next
            if n >= self.max_calls or self.stop.is_set():
                return None
            self._next += 1
        due = self.start + n / self.rate
        if self.stop.wait(max(0.0, due - time.monotonic())):
            return None  # stopped before it was due: never made
        return n

    def add(self, record: list[Any]) -> None:
        with self._lock:
            self.records.append(record)


def work(client: zjobs.Client, calls: Calls, timeout_s: float, retries: int) -> None:
    while (n := calls.take()) is not None:
        start = time.monotonic()
        try:
            response = client.call_response(n, timeout_s=timeout_s, retries=retries)
        except zjobs.ZJobsError as exc:
            attempts = exc.attempts if isinstance(exc, zjobs.CallTimeout) else None
            calls.add([n, start, time.monotonic(), None, type(exc).__name__, attempts, False])
            continue
        error = None if response.error is None else f"Remote:{response.error.type}"
        calls.add([n, start, time.monotonic(), response.processor, error, None,
                   bool(response.replay)])


def read_commands(calls: Calls) -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    calls.stop.set()  # "stop", or the end of input: the test that started us is gone


def main(args: dict[str, Any]) -> dict[str, Any]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    for name, value in args.get("zmq_options", {}).items():
        context.setsockopt(getattr(zmq, name), value)
    options: dict[str, Any] = {}
    if "reconnect" in args:
        reconnect = args["reconnect"]
        options["reconnect"] = None if reconnect is None else zjobs.Reconnect(*reconnect)
    if args.get("send_timeout_s") is not None:
        options["send_timeout_s"] = args["send_timeout_s"]
    timeout_s, retries = float(args["timeout_s"]), int(args["retries"])
    try:
        with zjobs.Client.connect(args["requests"], args["responses"], context=context,
                                  timeout_s=timeout_s, retries=retries,
                                  ready_timeout_s=args.get("ready_timeout_s", 30.0),
                                  **options) as client:
            client.wait_ready()
            calls = Calls(float(args["rate"]), int(args["max_calls"]))
            print(json.dumps({"event": "ready", "t": calls.start}), flush=True)
            threading.Thread(target=read_commands, args=(calls,), daemon=True).start()
            workers = [threading.Thread(target=work, args=(client, calls, timeout_s, retries))
                       for _ in range(int(args["workers"]))]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            counters = {"resent": client.resent, "replays": client.replays,
                        "unmatched": client.unmatched}
            routes = client._engine.routes  # what the routes saw (not public API)
            if routes is not None:
                counters.update(suspicions=routes.suspicions, resets=routes.resets)
    finally:
        context.term()
    records = sorted(calls.records)
    errors = Counter(r[4] for r in records if r[4] is not None)
    hosts = Counter(r[3] for r in records if r[3] is not None)
    answered = sum(1 for r in records if r[3] is not None and r[4] is None)
    return {"event": "done", "calls": len(records), "answered": answered,
            "errors": dict(errors), "per_processor": dict(hosts), **counters,
            "records": records}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
