"""Sending requests: the ``MpSend`` interface and its ZeroMQ PUSH implementation.

A sender may connect to the request endpoints of several processors; libzmq then hands
each request to the next connected processor in turn (load balancing).
"""

from __future__ import annotations

import enum
import itertools
import secrets
import time
from collections.abc import Iterable
from functools import partial
from typing import Any, Final, Protocol, runtime_checkable

import zmq

from zjobs.errors import ClosedError, SendTimeout
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.reconnect import DEFAULT_RECONNECT, Reconnect
from zjobs.transport.sockets import ClientSecurity, SocketPeer, push_options, send_multipart
from zjobs.wire.protocol import Id, Meta, RequestEncoder

__all__ = ["USE_SENDER_DEFAULT", "IdGenerator", "MpSend", "UseSenderDefault", "ZmqSender"]

_SLICE_MS = 50  # longest a blocked send waits before it looks whether the sender closes


class UseSenderDefault(enum.Enum):
    """The type of :data:`USE_SENDER_DEFAULT`."""

    USE_SENDER_DEFAULT = "USE_SENDER_DEFAULT"

    def __repr__(self) -> str:
        return "zjobs.transport.sender.USE_SENDER_DEFAULT"


USE_SENDER_DEFAULT: Final = UseSenderDefault.USE_SENDER_DEFAULT
"""The default ``timeout_s`` of a send: the sender's own ``send_timeout_s`` (which may be None,
blocking), as distinct from an explicit None."""


@runtime_checkable
class MpSend(Protocol):
    """Sends requests to one or more processors ("multi-producer send").

    Everything a client passes is declared here; a sender takes all of it.
    """

    def send(
        self,
        request: Any,
        *,
        id: Id | None = None,
        reply_to: str | bytes | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
        ping: bool = False,
        timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
        dedup: bool = False,
    ) -> Id:
        """Send one request and return its id (generated when not given).

        Args:
            timeout_s: how long this send may wait for room (0: not at all; None: no
                limit); by default the sender's own limit.
            dedup: the request may be sent again with the same id (a retry): a processor
                with a replay window answers a repeat without running the job again.

        Raises:
            SendTimeout: no processor took the request within the timeout.
            ClosedError: the sender is closed.
        """
        ...

    def close(self) -> None:
        """Release the sender; idempotent."""
        ...


class IdGenerator:
    """Cheap ids unique per sender: a random prefix and a counter (``"3f9a0c1e-1a"``)."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = (prefix or secrets.token_hex(6)) + "-"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self._counter):x}"


class ZmqSender(SocketPeer[zmq.Socket[bytes]]):
    """An :class:`MpSend` over a ZeroMQ PUSH socket. Thread-safe (sends are serialized).

    Args:
        endpoints: request endpoint(s) to connect to; more can be added with :meth:`connect`.
        context: the zmq context (the shared instance by default; inproc needs the processor's).
        send_timeout_s: how long ``send`` may block when no processor can take the request
            (none connected, or all at their high-water mark); None blocks indefinitely.
        immediate: queue requests only to connections that are up (ZMQ_IMMEDIATE). Without
            it, libzmq queues requests (up to ``sndhwm``) for a processor that is not
            connected yet or has gone, and delivers them if it comes (back); with it, a
            processor that disconnects is skipped at once and ``send`` blocks (up to the
            timeout) while no processor is connected.
        linger_ms: how long queued requests may still be delivered after ``close``.
        sndhwm: requests queued per connection before ``send`` blocks.
        security: client-side security (e.g. CURVE), applied before connecting.
        keepalive: how dead connections are dropped (TCP keepalive; see
            :class:`~zjobs.Keepalive`); None: the kernel's defaults.
        reconnect: connect timeout and reconnect interval (see
            :class:`~zjobs.transport.reconnect.Reconnect`); None: libzmq's defaults.
    """

    _role = "sender"

    def __init__(
        self,
        endpoints: str | Iterable[str] | None = None,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        send_timeout_s: float | None = None,
        immediate: bool = False,
        linger_ms: int = 1000,
        sndhwm: int = 1000,
        security: ClientSecurity | None = None,
        ids: IdGenerator | None = None,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        reconnect: Reconnect | None = DEFAULT_RECONNECT,
    ) -> None:
        self.context = context or zmq.Context.instance()
        self.send_timeout_s = send_timeout_s
        self.ids = ids or IdGenerator()
        self._encoder = RequestEncoder()
        sock = self.context.socket(zmq.PUSH)
        super().__init__(sock)
        self._setup(endpoints, partial(push_options, linger_ms=linger_ms, sndhwm=sndhwm,
                                       immediate=immediate, send_timeout_s=send_timeout_s),
                    keepalive=keepalive, reconnect=reconnect, security=security)

    def __repr__(self) -> str:
        state = "closed" if self._socket is None else "open"
        return f"<ZmqSender {state} requests={self.endpoints}>"

    def send(
        self,
        request: Any,
        *,
        id: Id | None = None,
        reply_to: str | bytes | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
        ping: bool = False,
        timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
        dedup: bool = False,
    ) -> Id:
        """Encode and send one request; return its id.

        ``timeout_s`` overrides ``send_timeout_s`` for this send (0: do not wait at all).
        ``dedup`` marks a request that may be sent again with the same id (a retry): the
        processor then answers a repeat from its replay window instead of running it again.

        Raises:
            EncodeError: the request (or meta) cannot be encoded as msgpack.
            SendTimeout: no processor took it within the timeout.
            ClosedError: the sender is closed, or its zmq context was terminated.
        """
        rid = id if id is not None else self.ids()
        frames = self._encoder.frames(rid, request, reply_to, ping, deadline_ms, meta, dedup)
        self.send_frames(frames, timeout_s=timeout_s)
        return rid

    def send_frames(self, frames: list[bytes], *,
                    timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT) -> None:
        """Send already encoded request frames (for relays and tests of hostile input).

        An explicit ``timeout_s`` also bounds the wait for another thread's send to finish.
        """
        limit = self.send_timeout_s if timeout_s is USE_SENDER_DEFAULT else timeout_s
        deadline = None if limit is None else time.monotonic() + limit
        if not self._lock.acquire(timeout=-1 if limit is None else limit):
            raise SendTimeout(self.endpoints, limit)
        try:
            self._send_within(frames, deadline, limit)
        except zmq.ZMQError as exc:
            self._raise_if_unusable(exc)
            raise
        finally:
            self._lock.release()

    def _send_within(self, frames: list[bytes], deadline: float | None,
                     limit: float | None) -> None:
        sock = self._live()
        while True:
            try:
                send_multipart(sock, frames, block=False)  # the usual case: room now
                return
            except zmq.Again as exc:
                # Wait for room in slices, so that close() from another thread (which
                # needs this lock) ends a long wait within one slice.
                wait_ms = _SLICE_MS
                if deadline is not None:
                    left_ms = int((deadline - time.monotonic()) * 1000)
                    if left_ms <= 0:
                        raise SendTimeout(self.endpoints, limit) from exc
                    wait_ms = min(wait_ms, left_ms)
                if self._closing:
                    raise ClosedError("sender is closed") from exc
                sock.poll(wait_ms, zmq.POLLOUT)
