"""How connecting sockets (senders, receivers) re-make a connection that dropped.

libzmq reconnects by itself, but without a connect timeout one attempt lasts as long as the
kernel retries its SYN (1 s, then 2, 4, 8 s... over a minute in all): a peer host that
comes back during an attempt is noticed only at the next retry, seconds later, the longer
the outage the later. With ``ZMQ_CONNECT_TIMEOUT`` an unanswered attempt is abandoned
after ``connect_timeout_ms`` and a fresh one starts ``interval_ms`` later (backing off to
``max_interval_ms``), so a peer is reconnected within about ``connect_timeout_ms +
max_interval_ms`` (under 1 s with the defaults) of becoming reachable, whatever the outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import zmq

__all__ = ["DEFAULT_RECONNECT", "Reconnect"]


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Connect timeout and reconnect interval of a connecting socket.

    The cost of short values: a socket whose peer is gone tries again every
    ``max_interval_ms`` (about 4 attempts a second with the defaults, each one SYN or one
    refused connect), and a peer further away than ``connect_timeout_ms`` (one round trip,
    plus the accept) can never be reached: raise it for links slower than that.

    Attributes:
        connect_timeout_ms: give up a TCP connect not answered within this
            (``ZMQ_CONNECT_TIMEOUT``).
        interval_ms: wait before the first reconnect attempt (``ZMQ_RECONNECT_IVL``); libzmq
            adds up to as much again at random, so peers do not all retry at once.
        max_interval_ms: the wait doubles per failed attempt up to this
            (``ZMQ_RECONNECT_IVL_MAX``); equal to ``interval_ms``: no backoff.
    """

    connect_timeout_ms: int = 500
    interval_ms: int = 100
    max_interval_ms: int = 200

    def __post_init__(self) -> None:
        if self.connect_timeout_ms <= 0 or self.interval_ms <= 0:
            raise ValueError("reconnect connect_timeout_ms and interval_ms must be positive")
        if self.max_interval_ms < self.interval_ms:
            raise ValueError("reconnect max_interval_ms must be at least interval_ms")

    def apply(self, socket: zmq.Socket[Any]) -> None:
        """Set the options on ``socket`` (before it connects)."""
        socket.setsockopt(zmq.CONNECT_TIMEOUT, self.connect_timeout_ms)
        socket.setsockopt(zmq.RECONNECT_IVL, self.interval_ms)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, self.max_interval_ms)


DEFAULT_RECONNECT: Final = Reconnect()
"""Abandon a connect after 0.5 s; retry after 0.1 s, backing off to 0.2 s (plus jitter)."""
