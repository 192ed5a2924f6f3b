"""Sending requests from asyncio: :class:`AsyncZmqSender`, a PUSH socket whose sends are awaited.

The same frames as :class:`zjobs.ZmqSender`; a send that cannot be queued (no processor,
or all at their high-water mark) waits without blocking the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import partial
from typing import Any, Self

import zmq
import zmq.asyncio

from zjobs.errors import ClosedError, SendTimeout
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.sender import USE_SENDER_DEFAULT, IdGenerator, UseSenderDefault
from zjobs.transport.sockets import ClientSecurity, SocketPeer, push_options
from zjobs.wire.protocol import Id, Meta, Request

__all__ = ["AsyncZmqSender"]


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
        keepalive: ZMTP heartbeats that drop dead or half-open connections (None: off).
        ids: the id generator for requests sent without an id.
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
    ) -> None:
        self.context = context or zmq.Context.instance()
        self.send_timeout_s = send_timeout_s
        self.ids = ids or IdGenerator()
        sock = self.context.socket(zmq.PUSH, socket_class=zmq.asyncio.Socket)
        super().__init__(sock)
        self._setup(endpoints, partial(push_options, linger_ms=linger_ms, sndhwm=sndhwm,
                                       immediate=immediate, send_timeout_s=send_timeout_s),
                    keepalive=keepalive, security=security)

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
        dedup: bool = False,
        timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
    ) -> Id:
        """Encode and send one request; return its id.

        ``dedup`` marks a request that may be sent again with the same id (a retry): a
        processor with a replay window answers a repeat without running the job again.
        ``timeout_s`` overrides ``send_timeout_s`` for this send (0: do not wait at all).

        Raises:
            EncodeError: the request (or meta) cannot be encoded as msgpack.
            SendTimeout: no processor took it within the timeout.
            ClosedError: the sender is closed.
        """
        rid = id if id is not None else self.ids()
        frames = Request(rid, request, reply_to, ping, deadline_ms, meta, dedup).to_frames()
        await self.send_frames(frames, timeout_s=timeout_s)
        return rid

    async def send_frames(self, frames: list[bytes], *,
                          timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT
                          ) -> None:
        """Send already encoded request frames (waiting at most ``timeout_s``)."""
        limit = self.send_timeout_s if timeout_s is USE_SENDER_DEFAULT else timeout_s
        try:
            # pyzmq tries the send at once and returns a done future when there was room.
            sent = self._live().send_multipart(frames)
            if timeout_s is USE_SENDER_DEFAULT or limit is None:
                await sent  # the socket's own SNDTIMEO (send_timeout_s) applies
            else:
                await asyncio.wait_for(sent, limit)
        except (zmq.Again, TimeoutError) as exc:
            raise SendTimeout(self.endpoints, limit) from exc
        except zmq.ZMQError as exc:
            if exc.errno == zmq.ENOTSOCK or self._socket is None:
                raise ClosedError("sender is closed") from exc
            raise
