"""Connection keepalive: ZMTP heartbeats, so that dead and half-open connections are torn down.

A TCP connection whose peer vanished without closing it (a host powered off, a cable
pulled, a process stopped with SIGSTOP) looks open for a long time: a PUSH socket keeps
handing it requests, a SUB socket waits for responses that never come. With ZMTP
heartbeats (libzmq >= 4.2) each side pings the other every ``interval_ms`` and drops the
connection when no traffic came back within ``timeout_ms``; libzmq then reconnects, and a
sender with ``ZMQ_IMMEDIATE`` stops queueing to that peer at once.

This is a connection-level mechanism, independent of the processor heartbeats of
:mod:`zjobs.wire.heartbeat` (application-level messages that clients can see).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import zmq

__all__ = ["DEFAULT_KEEPALIVE", "Keepalive"]


@dataclass(frozen=True, slots=True)
class Keepalive:
    """ZMTP heartbeat settings (``ZMQ_HEARTBEAT_IVL``, ``_TIMEOUT`` and ``_TTL``), so that a
    socket drops connections to peers that vanished or stalled, instead of waiting on them.

    Attributes:
        interval_ms: how often this side pings the other.
        timeout_ms: how long this side waits for any traffic after a ping before it drops
            the connection.
        ttl_ms: how long the other side should wait for traffic from this side before it
            drops the connection (sent in the ping; libzmq rounds it down to 100 ms).
    """

    interval_ms: int = 1000
    timeout_ms: int = 5000
    ttl_ms: int = 5000

    def __post_init__(self) -> None:
        if self.interval_ms <= 0 or self.timeout_ms <= 0 or self.ttl_ms < 0:
            raise ValueError("keepalive interval and timeout must be positive")

    def apply(self, socket: zmq.Socket[bytes]) -> None:
        """Set the heartbeat options on ``socket`` (before it binds or connects)."""
        socket.setsockopt(zmq.HEARTBEAT_IVL, self.interval_ms)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, self.timeout_ms)
        socket.setsockopt(zmq.HEARTBEAT_TTL, min(self.ttl_ms, 6_553_500))


DEFAULT_KEEPALIVE: Final = Keepalive()
"""Ping every second, drop a connection silent for 5 seconds."""
