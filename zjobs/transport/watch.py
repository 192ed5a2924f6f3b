"""Watching a processor's request socket for senders whose connection closes.

libzmq refuses a request frame larger than the socket's ``ZMQ_MAXMSGSIZE`` by closing the
sender's connection: the request never reaches zjobs, gets no response, and the sender
(which reconnects) sees only a timeout. libzmq reports nothing but the disconnect, the
same event as a sender that closed its socket, so a :class:`DisconnectWatch` counts every
sender disconnect and logs them, at most once every ``interval_s``, naming both causes.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import zmq

__all__ = ["DisconnectWatch"]

log = logging.getLogger(__name__)

_ADDRESSES = itertools.count()
_POLL_MS = 200


class DisconnectWatch:
    """Counts the sender connections that close on a bound PULL socket, in a thread.

    Args:
        socket: the bound socket to watch (sync or asyncio; it is only configured here).
        endpoint: its endpoint, named in the log.
        max_message_size: its ``ZMQ_MAXMSGSIZE``, named in the log.
        interval_s: the least time between two log lines.
    """

    def __init__(self, socket: zmq.Socket[Any], endpoint: str, max_message_size: int, *,
                 interval_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.max_message_size = max_message_size
        self.interval_s = interval_s
        self.disconnects = 0
        """Sender connections closed so far."""
        self._socket: zmq.Socket[Any] | None = socket
        self._unreported = 0
        self._next_report = 0.0
        address = f"inproc://zjobs-watch-{id(self)}-{next(_ADDRESSES)}"
        socket.monitor(address, zmq.EVENT_DISCONNECTED | zmq.EVENT_MONITOR_STOPPED)
        # A sync socket on the same libzmq context, whatever kind the watched socket is.
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(
            socket.context.underlying)
        self._events = self._context.socket(zmq.PAIR)
        self._events.linger = 0
        self._events.connect(address)
        self._thread = threading.Thread(target=self._run, name="zjobs-watch", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<DisconnectWatch {self.endpoint} disconnects={self.disconnects}>"

    def _run(self) -> None:
        # pyzmq's monitor helpers import zmq.asyncio (so asyncio): here, not at module level,
        # so that importing zjobs imports no asyncio.
        from zmq.utils.monitor import parse_monitor_message

        events = self._events
        while True:
            if not events.poll(_POLL_MS):
                self._report(time.monotonic())
                continue
            event = parse_monitor_message(events.recv_multipart())["event"]
            if event == zmq.EVENT_MONITOR_STOPPED:
                self._report(time.monotonic(), final=True)
                return
            if event == zmq.EVENT_DISCONNECTED:
                self.disconnects += 1
                self._unreported += 1
                self._report(time.monotonic())

    def _report(self, now: float, final: bool = False) -> None:
        if not self._unreported or (now < self._next_report and not final):
            return
        log.info("request endpoint %s: %d sender connection(s) closed; a sender closes its "
                 "connection when it is done, and libzmq closes it for a request frame "
                 "larger than max_message_size=%d bytes, which then gets no response",
                 self.endpoint, self._unreported, self.max_message_size)
        self._unreported = 0
        self._next_report = now + self.interval_s

    def close(self) -> None:
        """Stop watching (call before closing the socket); idempotent."""
        socket, self._socket = self._socket, None
        if socket is None:
            return
        socket.disable_monitor()  # libzmq then sends EVENT_MONITOR_STOPPED to the thread
        self._thread.join(5.0)
        self._events.close()
