"""MpSend and McReceive: fire requests from one sender, watch every response from two receivers.

Also load balancing: one sender connected to two processors, libzmq round-robins.

Run: python examples/senders_receivers.py
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import zjobs
from zjobs.testing import wait_subscribed


def double(request: int, resources: Any) -> int:
    return request * 2


def main() -> None:
    with zjobs.ZmqProcessor(double, name="left") as left, \
            zjobs.ZmqProcessor(double, name="right") as right:
        sender = zjobs.ZmqSender([left.connect_endpoints.requests,
                                  right.connect_endpoints.requests])
        watchers = [zjobs.ZmqReceiver([left.connect_endpoints.responses,
                                       right.connect_endpoints.responses], topics=["demo"])
                    for _ in range(2)]
        with sender, watchers[0], watchers[1]:
            # Never sleep-and-hope: probe each subscription with pings until a pong comes back.
            for processor in (left, right):
                with processor.sender() as probe:
                    for watcher in watchers:
                        wait_subscribed(probe, watcher, topic="demo")
            ids = [sender.send(n, reply_to="demo") for n in range(10)]
            for watcher in watchers:
                seen: list[zjobs.Response] = []
                while len(seen) < len(ids):
                    response = watcher.receive(timeout=5)
                    if response.ok:  # late pongs of the probes share the topic
                        seen.append(response)
                print("watcher got", sorted(r.value for r in seen),
                      "from", dict(Counter(r.processor for r in seen)))


def _usage() -> None:
    """Answer --help with this file's description; the example takes no options."""
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


if __name__ == "__main__":
    _usage()
    main()
