"""Sending requests from asyncio: :class:`AsyncZmqSender`, a PUSH socket whose sends are awaited.

The same frames as :class:`zjobs.ZmqSender`; a send that cannot be queued (no processor,
or all at their high-water mark) waits without blocking the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from functools import partial
from typing import Any, Protocol, Self, runtime_checkable

import zmq
import zmq.asyncio

from zjobs.errors import ClosedError, SendTimeout
from zjobs.transport.async_receiver import cancelled_by_close
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.reconnect import DEFAULT_RECONNECT, Reconnect
from zjobs.transport.sender import USE_SENDER_DEFAULT, IdGenerator, UseSenderDefault
from zjobs.transport.sockets import ClientSecurity, SocketPeer, push_options, send_multipart
from zjobs.wire.protocol import Id, Meta, Request

__all__ = ["AsyncMpSend", "AsyncZmqSender"]


@runtime_checkable
class AsyncMpSend(Protocol):
    """Sends requests to processors from coroutines: the asyncio counterpart of
    :class:`~zjobs.MpSend`, taking the same arguments."""

    async def send(
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
        """Send one request and return its id (see :meth:`zjobs.MpSend.send`)."""
        ...

    def close(self) -> None:
        """Release the sender; idempotent."""
        ...


class AsyncZmqSender(SocketPeer[zmq.asyncio.Socket]):
    """Sends requests over a ZeroMQ PUSH socket from coroutines (use it in one event loop).

    Closing it cancels the sends still waiting; queued requests get ``linger_ms`` to leave.

    Args:
        endpoints: request endpoint(s) to connect to; more can be added with :meth:`connect`.
        context: the zmq context (the shared instance by default; inproc needs the processor's).
        send_timeout_s: how long ``send`` may wait when no processor can take the request;
            None waits indefinitely.
        immediate: queue requests only to connections that are up (ZMQ_IMMEDIATE).
        linger_ms: how long queued requests may still be delivered after ``close``.
        sndhwm: requests queued per connection before ``send`` waits.
        security: client-side security (e.g. CURVE), applied before connecting.
        keepalive: how dead connections are dropped (TCP keepalive; see
            :class:`~zjobs.Keepalive`); None: the kernel's defaults.
        ids: the id generator for requests sent without an id.
        reconnect: connect timeout and reconnect interval (see
            :class:`~zjobs.transport.reconnect.Reconnect`); None: libzmq's defaults.
    """

    _role = "sender"

    def __init__(
        self,
        endpoints: str | Iterable[str] | None = None,
        *,
        context: zmq.Context[Any] | None = None,
        send_timeout_s: float | None = None,
        immediate: bool = False,
        linger_ms: int = 1000,
        sndhwm: int = 1000,
        security: ClientSecurity | None = None,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        ids: IdGenerator | None = None,
        reconnect: Reconnect | None = DEFAULT_RECONNECT,
    ) -> None:
        self.context = context or zmq.Context.instance()
        self.send_timeout_s = send_timeout_s
        self.ids = ids or IdGenerator()
        sock = self.context.socket(zmq.PUSH, socket_class=zmq.asyncio.Socket)
        super().__init__(sock)
        self._plain: zmq.Socket[bytes] | None = None  # a non-owning sync view, for sends now
        self._waiting = 0  # awaited sends queued in pyzmq
        # No ZMQ_SNDTIMEO: send_frames applies the limit, so one send may wait longer.
        self._setup(endpoints, partial(push_options, linger_ms=linger_ms, sndhwm=sndhwm,
                                       immediate=immediate, send_timeout_s=None),
                    keepalive=keepalive, reconnect=reconnect, security=security)

    def __repr__(self) -> str:
        state = "closed" if self._socket is None else "open"
        return f"<AsyncZmqSender {state} requests={self.endpoints}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def send(
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
        ``dedup`` marks a request that may be sent again with the same id (a retry): a
        processor with a replay window answers a repeat without running the job again.

        Raises:
            EncodeError: the request (or meta) cannot be encoded as msgpack.
            SendTimeout: no processor took it within the timeout.
            ClosedError: the sender is closed, or its zmq context was terminated.
        """
        rid = id if id is not None else self.ids()
        frames = Request(rid, request, reply_to, ping, deadline_ms, meta, dedup).to_frames()
        await self.send_frames(frames, timeout_s=timeout_s)
        return rid

    async def _awaited(self, send: Awaitable[Any]) -> None:
        self._waiting += 1
        try:
            await send
        finally:
            self._waiting -= 1

    def _at_once(self, sock: zmq.asyncio.Socket) -> zmq.Socket[bytes]:
        if self._plain is None:
            self._plain = zmq.Socket.shadow(sock.underlying)
        return self._plain

    async def send_frames(self, frames: list[bytes], *,
                          timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
                          ) -> None:
        """Send already encoded request frames (``timeout_s`` as for :meth:`send`)."""
        limit = self.send_timeout_s if timeout_s is USE_SENDER_DEFAULT else timeout_s
        try:
            sock = self._live()
            if not self._waiting:
                # The usual case, room now: at once on the plain view, without pyzmq's
                # future and asyncio.wait_for's task per send (gather over 100,000 calls
                # made both per call). Only while no awaited send of ours is queued in
                # pyzmq, so that none is overtaken or left waiting for an event it missed.
                try:
                    send_multipart(self._at_once(sock), frames, block=False)
                    return
                except zmq.Again:
                    if limit is not None and limit <= 0:
                        raise
            if limit is None:
                await self._awaited(sock.send_multipart(frames))
            elif limit <= 0:
                # At once, on a plain view of the same socket: pyzmq queues an asyncio send
                # behind one still pending (or cancelled and not yet removed), NOBLOCK or
                # not, and such a send would wait for room for ever.
                send_multipart(self._at_once(sock), frames, block=False)
            else:
                # pyzmq never sends a message whose send was cancelled before it went out.
                await self._awaited(asyncio.wait_for(sock.send_multipart(frames), limit))
        except (zmq.Again, TimeoutError) as exc:
            raise SendTimeout(self.endpoints, limit) from exc
        except asyncio.CancelledError:
            if cancelled_by_close(self._socket is None):
                raise ClosedError("sender is closed") from None
            raise
        except zmq.ZMQError as exc:
            self._raise_if_unusable(exc)
            raise
