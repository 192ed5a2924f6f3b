"""A load-generating client for tests/test_netns_scale.py, run inside the client's namespace.

It connects with a DNS membership (``argv[1]`` is a JSON object of settings), keeps
``window`` calls in flight (one thread each, every call a new number N), and answers the
test's commands on stdin with one JSON line each: ``status`` (answers so far, the request
endpoints in use, the watcher's counts, a monotonic timestamp) and ``stop`` (stop issuing,
let the calls in flight finish, print every outcome, exit).

If the first reading of the name fails it prints ``{"connect_error": ...}`` and exits 3.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from typing import Any

import zjobs
from zjobs.transport.dns import DnsMembership


def main() -> int:
    args = json.loads(sys.argv[1])
    source = DnsMembership(args["requests"], args["responses"], nameservers=[args["dns"]],
                           timeout_s=args["dns_timeout_s"])
    started = time.monotonic()
    try:
        client = zjobs.Client.connect(membership=source,
                                      membership_interval_s=args["interval_s"],
                                      timeout_s=args["timeout_s"], retries=args["retries"],
                                      ready_timeout_s=60)
    except zjobs.MembershipError as exc:
        print(json.dumps({"connect_error": str(exc),
                          "seconds": time.monotonic() - started}), flush=True)
        return 3
    numbers = itertools.count()
    answers: list[int] = []
    errors: list[list[Any]] = []
    wrong: list[list[Any]] = []
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            n = next(numbers)
            try:
                value = client.call({"n": n})
            except zjobs.ZJobsError as exc:
                errors.append([n, repr(exc)])
                continue
            answers.append(n)  # list.append is atomic: no lock needed
            if value != n:
                wrong.append([n, value])

    with client:
        client.wait_ready()
        watcher = client.watcher
        assert watcher is not None
        threads = [threading.Thread(target=work, name=f"load-{i}", daemon=True)
                   for i in range(args["window"])]
        for thread in threads:
            thread.start()
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "status":
                tracker = watcher.tracker
                print(json.dumps({
                    "answered": len(answers), "at": time.monotonic(),
                    "requests": list(client.sender.endpoints),  # type: ignore[attr-defined]
                    "readings": tracker.readings, "changes": tracker.changes,
                    "failures": tracker.failures,
                    "last_error": None if tracker.last_error is None else str(tracker.last_error),
                }), flush=True)
            elif command == "stop":
                break
        stop.set()
        for thread in threads:
            thread.join(args["timeout_s"] * (args["retries"] + 1) + 30)
        issued = next(numbers)  # every number below was taken by a call (or is this one)
        print(json.dumps({"answers": answers, "errors": errors, "wrong": wrong,
                          "issued": issued, "resent": client.resent,
                          "replays": client.replays,
                          "stuck": sum(t.is_alive() for t in threads)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
