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

The settings themselves, :class:`~zjobs.core.options.Keepalive`, are a processor or client
option and live with the other options in :mod:`zjobs.core.options`; this module applies
them to sockets.
"""

from __future__ import annotations

from typing import Any, Final

import zmq

from zjobs.core.options import DEFAULT_KEEPALIVE, Keepalive

__all__ = ["DEFAULT_KEEPALIVE", "Keepalive", "apply_keepalive"]

# Sockets that send application messages and never stop reading their connections (they
# receive only commands and subscriptions): the only ones where ZMTP heartbeats may go.
_SENDING: Final = frozenset({zmq.PUSH, zmq.PUB, zmq.XPUB})


def apply_keepalive(socket: zmq.Socket[Any], keepalive: Keepalive | None) -> None:
    """Set ``keepalive``'s options on ``socket`` (before it binds or connects; they apply to
    its later connections); None leaves the kernel's defaults. ZMTP heartbeats go only to a
    sending socket (PUSH, PUB)."""
    if keepalive is None:
        return
    socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
    socket.setsockopt(zmq.TCP_KEEPALIVE_IDLE, keepalive.idle_s)
    socket.setsockopt(zmq.TCP_KEEPALIVE_INTVL, keepalive.interval_s)
    socket.setsockopt(zmq.TCP_KEEPALIVE_CNT, keepalive.count)
    if keepalive.zmtp_interval_ms is not None and socket.type in _SENDING:
        socket.setsockopt(zmq.HEARTBEAT_IVL, keepalive.zmtp_interval_ms)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, keepalive.zmtp_timeout_ms)
        socket.setsockopt(zmq.HEARTBEAT_TTL, 0)  # no TTL: the reader keeps its connection
