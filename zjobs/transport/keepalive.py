"""Connection keepalive: dead peers are found by TCP keepalive, never by a timer that a busy
reader can trip.

A TCP connection whose peer host vanished without closing it (powered off, cable pulled,
route gone) looks open for a long time: a SUB socket waits for responses that never come.
With TCP keepalive the kernel probes an idle connection and drops it when the peer's kernel
stops answering; libzmq then reconnects (see :mod:`zjobs.transport.reconnect`).

Why not ZMTP heartbeats (``ZMQ_HEARTBEAT_IVL``)? libzmq stops reading a connection while
the socket's queue is at its high-water mark, so it cannot see the peer's PONG either:
the side that pinged times the connection out after ``ZMQ_HEARTBEAT_TIMEOUT``, the peer
does the same after the ``ZMQ_HEARTBEAT_TTL`` it was told, and everything queued on that
connection is lost. A processor working through a backlog, or a client slow to read its
responses, is not dead, yet that is exactly when its queues are full. On a receiving
socket it is worse: when the socket resumes reading after such a drop, libzmq (4.3.5, the
version pyzmq ships) can abort the whole process with ``Assertion failed: _input_stopped
(src/stream_engine_base.cpp)`` (zeromq/libzmq#3937). A kernel answers TCP keepalive probes
however busy (or stopped) the process above it is, so keepalive cuts only dead peers.

A peer that is alive but stopped (SIGSTOP, a hung process) is found by the processor
heartbeats of :mod:`zjobs.wire.heartbeat` (``Client(liveness=...)``), which say what is
wrong without dropping anything. ``zmtp_interval_ms`` still offers ZMTP heartbeats for a
sender that prefers a fast cut of a stalled peer to its queued requests (see there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import zmq

__all__ = ["DEFAULT_KEEPALIVE", "Keepalive"]

# Sockets that send application messages and never stop reading their connections (they
# receive only commands and subscriptions): the only ones where ZMTP heartbeats may go.
_SENDING: Final = frozenset({zmq.PUSH, zmq.PUB, zmq.XPUB})


@dataclass(frozen=True, slots=True)
class Keepalive:
    """How a socket notices dead connections (TCP keepalive), and optionally stalled peers
    (ZMTP heartbeats on sending sockets).

    With the defaults, a connection that carried nothing for ``idle_s`` is probed every
    ``interval_s`` and dropped after ``count`` unanswered probes: a vanished peer host is
    noticed within ``idle_s + interval_s * count`` = 10 s of silence. A peer that is only
    slow, or whose process is stopped, still answers (its kernel does), so its connection
    and everything queued on it are kept.

    Attributes:
        idle_s: seconds without traffic before the first probe (``ZMQ_TCP_KEEPALIVE_IDLE``).
        interval_s: seconds between probes (``ZMQ_TCP_KEEPALIVE_INTVL``).
        count: unanswered probes that drop the connection (``ZMQ_TCP_KEEPALIVE_CNT``).
        zmtp_interval_ms: ZMTP heartbeats every this many ms on sending sockets (PUSH, PUB);
            None (the default): none. Such a socket drops a connection whose peer has not
            read its PING within ``zmtp_timeout_ms``: a stopped peer, but also one merely
            busy (its queue full), and whatever was queued for it is lost (retries resend
            requests; a subscriber loses responses). Receiving sockets (SUB, PULL) never get
            them, nor do peers get a TTL, since a reader whose reading paused would cut its
            own connection and could abort the process (see the module docstring).
        zmtp_timeout_ms: how long a sending socket waits for its peer to answer a PING.
    """

    idle_s: int = 5
    interval_s: int = 1
    count: int = 5
    zmtp_interval_ms: int | None = None
    zmtp_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        if self.idle_s <= 0 or self.interval_s <= 0 or self.count <= 0:
            raise ValueError("keepalive idle_s, interval_s and count must be positive")
        if (self.zmtp_interval_ms is not None and self.zmtp_interval_ms <= 0) \
                or self.zmtp_timeout_ms <= 0:
            raise ValueError("keepalive zmtp_interval_ms and zmtp_timeout_ms must be positive")

    def apply(self, socket: zmq.Socket[Any]) -> None:
        """Set the options on ``socket`` (before it binds or connects; they apply to its
        later connections). ZMTP heartbeats go only to a sending socket (PUSH, PUB)."""
        socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
        socket.setsockopt(zmq.TCP_KEEPALIVE_IDLE, self.idle_s)
        socket.setsockopt(zmq.TCP_KEEPALIVE_INTVL, self.interval_s)
        socket.setsockopt(zmq.TCP_KEEPALIVE_CNT, self.count)
        if self.zmtp_interval_ms is not None and socket.type in _SENDING:
            socket.setsockopt(zmq.HEARTBEAT_IVL, self.zmtp_interval_ms)
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, self.zmtp_timeout_ms)
            socket.setsockopt(zmq.HEARTBEAT_TTL, 0)  # no TTL: the reader keeps its connection


DEFAULT_KEEPALIVE: Final = Keepalive()
"""TCP keepalive: probe after 5 s of silence, every second, drop after 5 unanswered probes;
no ZMTP heartbeats."""
