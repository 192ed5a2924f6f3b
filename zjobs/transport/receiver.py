"""Receiving responses: the ``McReceive`` interface and its ZeroMQ SUB implementation.

A receiver may connect to the response endpoints of several processors and subscribes
to topic prefixes ("" receives every response). Messages that are not responses of a
known status, and protocol messages on topics starting with 0x00, are skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import zmq

from zjobs.core.monitor import ProcessorMonitor
from zjobs.errors import ReceiveTimeout
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.reconnect import DEFAULT_RECONNECT, Reconnect
from zjobs.transport.sockets import (
    DEFAULT_RCVHWM,
    ClientSecurity,
    SocketPeer,
    recv_multipart,
    sub_options,
)
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC
from zjobs.wire.protocol import Response, parse_response

__all__ = ["HeartbeatReceive", "McReceive", "ZmqReceiver", "as_topic", "parse_counted", "wait_ms"]


@runtime_checkable
class McReceive(Protocol):
    """Receives the responses broadcast by one or more processors ("multi-consumer receive")."""

    def receive(self, timeout: float | None = None) -> Response:
        """Return the next response; raise :class:`ReceiveTimeout` after ``timeout`` seconds."""
        ...

    def subscribe(self, topic: str | bytes) -> None:
        """Also receive responses whose topic starts with ``topic``."""
        ...

    def close(self) -> None:
        """Release the receiver; idempotent."""
        ...


@runtime_checkable
class HeartbeatReceive(McReceive, Protocol):
    """A receiver that also reads processor heartbeats: it feeds the heartbeats (and the
    sequence number of every message) to its ``monitor``, when it has one. Clients use it
    for liveness and to see processors that came back."""

    monitor: ProcessorMonitor | None


def as_topic(topic: str | bytes) -> bytes:
    """A topic as bytes (str is UTF-8 encoded)."""
    return topic.encode() if isinstance(topic, str) else topic


def wait_ms(deadline: float | None, now: float) -> int:
    """Milliseconds left until ``deadline`` for a ZeroMQ timeout: -1 (no limit) only when
    there is no deadline, 0 once it has passed, and at least 1 while any time is left."""
    if deadline is None:
        return -1
    left = deadline - now
    # ceil() of a passed deadline would give -1, which ZeroMQ reads as "wait forever".
    return math.ceil(left * 1000) if left > 0 else 0


def parse_counted(frames: list[bytes], monitor: ProcessorMonitor) -> Response | None:
    """The response in ``frames`` or None (see :func:`~zjobs.wire.protocol.parse_response`),
    after feeding ``monitor`` with heartbeats and every sequence number, so that it counts
    the messages missed (``monitor.gaps``)."""
    if frames and frames[0] == HEARTBEAT_TOPIC:
        monitor.heartbeat(frames)
    return parse_response(frames, monitor.sequence)


class ZmqReceiver(SocketPeer[zmq.Socket[bytes]]):
    """An :class:`McReceive` over a ZeroMQ SUB socket. Use it from one thread at a time.

    Args:
        endpoints: response endpoint(s) to connect to; more with :meth:`connect`.
        topics: topic prefixes to subscribe to; ``("",)`` is everything, ``()`` nothing yet.
        context: the zmq context (the shared instance by default).
        rcvhwm: responses held unread per connection before the publisher drops for this
            receiver: the bound on its memory (see
            :data:`~zjobs.transport.sockets.DEFAULT_RCVHWM`); 0: no bound.
        security: client-side security (e.g. CURVE), applied before connecting.
        keepalive: how dead connections are dropped (TCP keepalive; see
            :class:`~zjobs.Keepalive`); None: the kernel's defaults.
        reconnect: connect timeout and reconnect interval (see
            :class:`~zjobs.transport.reconnect.Reconnect`); None: libzmq's defaults.
        monitor: fed with the heartbeats received (subscribe to
            :data:`~zjobs.wire.heartbeat.HEARTBEAT_TOPIC` to get them) and the sequence number of
            every response, so it knows which processors are alive and counts the messages
            missed (:attr:`gaps`); a new :class:`~zjobs.ProcessorMonitor` by default.
    """

    _role = "receiver"

    def __init__(
        self,
        endpoints: str | Iterable[str] | None = None,
        *,
        topics: Iterable[str | bytes] = ("",),
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        rcvhwm: int = DEFAULT_RCVHWM,
        security: ClientSecurity | None = None,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        reconnect: Reconnect | None = DEFAULT_RECONNECT,
        monitor: ProcessorMonitor | None = None,
    ) -> None:
        self.context = context or zmq.Context.instance()
        # Typed as HeartbeatReceive declares it; None only if a user sets it so.
        self.monitor: ProcessorMonitor | None = monitor or ProcessorMonitor()
        self.topics: list[bytes] = []
        self.skipped = 0
        """Messages received that were not responses (malformed, unknown status, reserved)."""
        self._rcvtimeo = -1  # the ZMQ_RCVTIMEO last set, to set it only when it changes
        sock = self.context.socket(zmq.SUB)
        super().__init__(sock)

        def options(socket: Any) -> None:
            sub_options(socket, rcvhwm=rcvhwm)
            for topic in topics:
                self.subscribe(topic)

        self._setup(endpoints, options, keepalive=keepalive, reconnect=reconnect,
                    security=security)

    def __repr__(self) -> str:
        state = "closed" if self._socket is None else "open"
        return (f"<ZmqReceiver {state} responses={self.endpoints} topics={self.topics} "
                f"gaps={self.gaps}>")

    @property
    def gaps(self) -> int:
        """Messages this receiver missed, judged by the processors' sequence numbers: the
        publisher dropped them while this receiver's queue was full (``rcvhwm``), or its
        connection dropped. Exact for a receiver subscribed to everything (``""``); one
        subscribed to some topics also counts the messages of the others."""
        return 0 if self.monitor is None else self.monitor.gaps

    def __iter__(self) -> Iterator[Response]:
        """Responses as they come, forever (until closed)."""
        while True:
            yield self.receive()

    def subscribe(self, topic: str | bytes) -> None:
        """Receive responses whose topic starts with ``topic``."""
        raw = as_topic(topic)
        with self._lock:
            self._live().setsockopt(zmq.SUBSCRIBE, raw)
            self.topics.append(raw)

    def unsubscribe(self, topic: str | bytes) -> None:
        """Undo one :meth:`subscribe` of ``topic``."""
        raw = as_topic(topic)
        with self._lock:
            self._live().setsockopt(zmq.UNSUBSCRIBE, raw)
            self.topics.remove(raw)

    def receive(self, timeout: float | None = None) -> Response:
        """Return the next response; wait at most ``timeout`` seconds (None: forever).

        Raises:
            ReceiveTimeout: nothing arrived in time.
            ClosedError: the receiver is closed, or its zmq context was terminated.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frames = self.receive_frames(deadline)
            if frames is None:
                raise ReceiveTimeout(timeout)
            response = self.parse(frames)
            if response is not None:
                return response

    def receive_frames(self, deadline: float | None) -> list[bytes] | None:
        """The next raw message (any topic), or None once ``deadline`` (monotonic s) passed.

        Raises:
            ClosedError: the receiver is closed, or its zmq context was terminated.
        """
        sock = self._live()
        # One blocking receive bounded by ZMQ_RCVTIMEO: cheaper than failing a non-blocking
        # receive and polling before receiving again. Setting the option costs more than
        # waking early, so a shorter timeout already set is kept (and the wait resumed)
        # unless it is less than half of what is wanted.
        while True:
            left_ms = wait_ms(deadline, time.monotonic())
            try:
                if left_ms == 0:
                    return recv_multipart(sock, block=False)
                current = self._rcvtimeo
                if left_ms != current and (left_ms < current or current < 0 or left_ms < 0
                                           or left_ms > 2 * current):
                    sock.setsockopt(zmq.RCVTIMEO, left_ms)
                    self._rcvtimeo = left_ms
                return recv_multipart(sock)
            except zmq.Again:
                if deadline is None or time.monotonic() >= deadline:
                    return None
            except zmq.ZMQError as exc:
                self._raise_if_unusable(exc)
                raise

    def parse(self, frames: list[bytes]) -> Response | None:
        """The response in ``frames``, or None (counted in ``skipped``) if it is not one
        (see :func:`~zjobs.wire.protocol.parse_response`); sequence numbers and heartbeats
        go to :attr:`monitor`."""
        monitor = self.monitor
        response = (parse_response(frames) if monitor is None
                    else parse_counted(frames, monitor))
        if response is None:
            self.skipped += 1
        return response
