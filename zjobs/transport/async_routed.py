"""Sending through a chosen request endpoint from asyncio: :class:`AsyncRoutedSender`, the
asyncio twin of :class:`~zjobs.transport.routed.RoutedSender` (see there why)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import zmq

from zjobs.errors import ClosedError, SendTimeout
from zjobs.transport.async_sender import AsyncZmqSender
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.reconnect import DEFAULT_RECONNECT, Reconnect
from zjobs.transport.routed import RouteSet
from zjobs.transport.sender import USE_SENDER_DEFAULT, IdGenerator, UseSenderDefault
from zjobs.transport.sockets import ClientSecurity
from zjobs.wire.protocol import Id, Meta, RequestEncoder

__all__ = ["AsyncRoutedSender"]


class AsyncRoutedSender(RouteSet[AsyncZmqSender]):
    """One asyncio PUSH socket per request endpoint, sending where it is told
    (:meth:`send_via`); use it in one event loop. The options are those of
    :class:`~zjobs.transport.async_sender.AsyncZmqSender`, applied to every endpoint's socket.
    """

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
        self.ids = ids or IdGenerator()
        self._encoder = RequestEncoder()

        def make(endpoint: str) -> AsyncZmqSender:
            return AsyncZmqSender(endpoint, context=self.context,
                                  send_timeout_s=send_timeout_s, immediate=immediate,
                                  linger_ms=linger_ms, sndhwm=sndhwm, security=security,
                                  keepalive=keepalive, ids=self.ids, reconnect=reconnect)

        super().__init__(make, endpoints, send_timeout_s=send_timeout_s)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<AsyncRoutedSender {state} requests={self.endpoints}>"

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
        """Send through the endpoints in turn (the ``AsyncMpSend`` interface); return the id.

        Raises:
            EncodeError: the request cannot be encoded.
            SendTimeout: no endpoint took it within the timeout.
            ClosedError: the sender is closed.
        """
        rid = id if id is not None else self.ids()
        await self.send_via(self._in_turn(), request, id=rid,
                            reply_to=reply_to, meta=meta, deadline_ms=deadline_ms,
                            ping=ping, timeout_s=timeout_s, dedup=dedup)
        return rid

    async def send_via(
        self,
        order: Sequence[str],
        request: Any,
        *,
        id: Id,
        reply_to: str | bytes | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
        ping: bool = False,
        timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
        dedup: bool = False,
    ) -> str:
        """Send one request through the first endpoint of ``order`` with room; return the
        endpoint that took it (as :meth:`RoutedSender.send_via
        <zjobs.transport.routed.RoutedSender.send_via>`)."""
        frames = self._encoder.frames(id, request, reply_to, ping, deadline_ms, meta, dedup)
        return await self.send_frames_via(order, frames, timeout_s=timeout_s)

    async def send_frames(self, frames: list[bytes], *,
                          timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
                          ) -> None:
        """Send already encoded request frames through the endpoints in turn."""
        await self.send_frames_via(self._in_turn(), frames, timeout_s=timeout_s)

    async def send_frames_via(self, order: Sequence[str], frames: list[bytes], *,
                              timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
                              ) -> str:
        """Send encoded frames as :meth:`send_via` sends a request; return the endpoint."""
        limit = self._limit(timeout_s)
        only = self._only(order)
        if only is not None:  # one endpoint, the usual case: no generator on the way
            try:
                await only.send_frames(frames, timeout_s=limit)
                return order[0]
            except ClosedError:
                if self.closed:
                    raise  # else reset meanwhile: the tries below take its new socket
        tries = self._tries(order, limit)
        try:
            endpoint, sender, wait = next(tries)
            while True:
                refused = False
                if sender is None:
                    await asyncio.sleep(wait or 0)
                else:
                    try:
                        await sender.send_frames(frames, timeout_s=wait)
                        return endpoint or ""
                    except SendTimeout:
                        pass
                    except ClosedError:
                        if self.closed:
                            raise
                        refused = True  # reset meanwhile: its new socket comes next
                endpoint, sender, wait = tries.send(refused)
        except StopIteration:
            raise SendTimeout(list(order), limit) from None
