"""Sending through a chosen request endpoint: one PUSH socket per endpoint.

A single PUSH socket connected to several processors hands each request to the next
connection with room, and cannot be told which one to use or to avoid. A client that
judges each processor by its own answers (:mod:`zjobs.core.routing`) needs that choice,
so :class:`RoutedSender` keeps one :class:`~zjobs.transport.sender.ZmqSender` per
endpoint, and :meth:`RoutedSender.send_via` takes the endpoints to try, best first: it
sends through the first with room now, and when none has any it waits for room on the
first, trying the others between short waits (the balancing a single PUSH socket does).
:mod:`zjobs.transport.async_routed` is the same for asyncio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

import zmq

from zjobs.errors import ClosedError, SendTimeout
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.reconnect import DEFAULT_RECONNECT, Reconnect
from zjobs.transport.sender import (
    USE_SENDER_DEFAULT,
    IdGenerator,
    UseSenderDefault,
    ZmqSender,
)
from zjobs.transport.sockets import ClientSecurity, endpoint_list
from zjobs.wire.protocol import Id, Meta, RequestEncoder

__all__ = ["RouteSet", "RoutedSender"]

WAIT_SLICE_S: Final = 0.02
"""While no endpoint has room, how long a send waits on the first before trying the others
again."""


class _Closable(Protocol):
    def close(self, *, linger_ms: int | None = None) -> None: ...


T = TypeVar("T", bound=_Closable)


class RouteSet(Generic[T]):
    """The per-endpoint senders of a routed sender, sync or asyncio: made, dropped and
    reset by endpoint, in the order they were connected."""

    def __init__(self, make: Callable[[str], T], endpoints: str | Iterable[str] | None,
                 *, send_timeout_s: float | None) -> None:
        self._make = make
        self.send_timeout_s = send_timeout_s
        self._senders: dict[str, T] = {}
        self._turn = 0
        self._lock = threading.Lock()
        self._closed = False
        try:
            for endpoint in endpoint_list(endpoints):
                self.connect(endpoint)
        except BaseException:
            self.close()
            raise

    @property
    def endpoints(self) -> list[str]:
        """The request endpoints connected, in the order they were added."""
        return list(self._senders)

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    def __enter__(self) -> RouteSet[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _in_turn(self) -> list[str]:
        # Every endpoint, starting from the next in turn (sends without a chosen route).
        endpoints = self.endpoints
        self._turn += 1
        start = self._turn % max(1, len(endpoints))
        return endpoints[start:] + endpoints[:start]

    def _limit(self, timeout_s: float | UseSenderDefault | None) -> float | None:
        return self.send_timeout_s if timeout_s is USE_SENDER_DEFAULT else timeout_s

    def _sender(self, endpoint: str) -> T | None:
        sender = self._senders.get(endpoint)
        if sender is None and self._closed:
            raise ClosedError("sender is closed")
        return sender

    def _only(self, order: Sequence[str]) -> T | None:
        # The sender of a one-endpoint send, tried with the whole limit (as _tries would).
        return self._senders.get(order[0]) if len(order) == 1 else None

    def _tries(self, order: Sequence[str], limit: float | None
               ) -> Generator[tuple[str | None, T | None, float | None], bool, None]:
        """The sends of one message, for a sync or an asyncio driver: yields (endpoint,
        sender, timeout) to try, or (None, None, seconds) to sleep; is sent whether the
        try was refused for good (a reset socket, True) or only lacked room (False); ends
        when the message must fail with :class:`SendTimeout`.

        One endpoint: its sender with the whole limit (once more if it was reset meanwhile).
        Several: each in order at once; while none has room, the first for a short wait,
        then each at once again, until the limit.
        """
        if len(order) == 1:  # the usual case: one processor, or a probe
            for _ in range(2):
                sender = self._sender(order[0])
                if sender is None or not (yield order[0], sender, limit):
                    return
            return
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            first: tuple[str, T] | None = None
            for endpoint in order:
                sender = self._sender(endpoint)
                if sender is not None:
                    first = first or (endpoint, sender)
                    yield endpoint, sender, 0
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            wait = WAIT_SLICE_S if left is None else min(WAIT_SLICE_S, left)
            if first is None:
                yield None, None, wait
            else:
                yield first[0], first[1], wait

    def connect(self, endpoint: str) -> None:
        """Add a request endpoint (its own socket).

        Raises:
            ConnectError: libzmq refused the endpoint.
            ClosedError: already closed.
        """
        with self._lock:
            if self._closed:
                raise ClosedError("sender is closed")
            if endpoint not in self._senders:
                self._senders[endpoint] = self._make(endpoint)

    def disconnect(self, endpoint: str) -> None:
        """Stop sending to ``endpoint``; what is queued for it still gets the linger time.
        An endpoint not connected is ignored."""
        with self._lock:
            sender = self._senders.pop(endpoint, None)
        if sender is not None:
            sender.close()

    def reset(self, endpoint: str) -> None:
        """Drop ``endpoint``'s connection with everything queued in it, and connect afresh
        (a route whose processor went silent: see :mod:`zjobs.core.routing`)."""
        with self._lock:
            old = self._senders.get(endpoint)
            if old is None or self._closed:
                return
            self._senders[endpoint] = self._make(endpoint)
        old.close(linger_ms=0)

    def close(self) -> None:
        """Close every endpoint's socket; idempotent."""
        with self._lock:
            self._closed = True
            senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            sender.close()


class RoutedSender(RouteSet[ZmqSender]):
    """An :class:`~zjobs.transport.sender.MpSend` with one PUSH socket per request endpoint,
    sending where it is told (:meth:`send_via`). Thread-safe. The options are those of
    :class:`~zjobs.transport.sender.ZmqSender`, applied to every endpoint's socket.
    """

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
        self.ids = ids or IdGenerator()
        self._encoder = RequestEncoder()

        def make(endpoint: str) -> ZmqSender:
            return ZmqSender(endpoint, context=self.context, send_timeout_s=send_timeout_s,
                             immediate=immediate, linger_ms=linger_ms, sndhwm=sndhwm,
                             security=security, ids=self.ids, keepalive=keepalive,
                             reconnect=reconnect)

        super().__init__(make, endpoints, send_timeout_s=send_timeout_s)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<RoutedSender {state} requests={self.endpoints}>"

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
        """Send through the endpoints in turn (the :class:`MpSend` interface); return the id.

        Raises:
            EncodeError: the request cannot be encoded.
            SendTimeout: no endpoint took it within the timeout.
            ClosedError: the sender is closed.
        """
        rid = id if id is not None else self.ids()
        self.send_via(self._in_turn(), request, id=rid,
                      reply_to=reply_to, meta=meta, deadline_ms=deadline_ms, ping=ping,
                      timeout_s=timeout_s, dedup=dedup)
        return rid

    def send_via(
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
        endpoint that took it. Endpoints not connected (any more) are skipped.

        Raises:
            EncodeError: the request cannot be encoded.
            SendTimeout: none took it within the timeout (at once when ``order`` is empty).
            ClosedError: the sender is closed.
        """
        frames = self._encoder.frames(id, request, reply_to, ping, deadline_ms, meta, dedup)
        return self.send_frames_via(order, frames, timeout_s=timeout_s)

    def send_frames(self, frames: list[bytes], *,
                    timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT) -> None:
        """Send already encoded request frames through the endpoints in turn (for relays
        and tests of hostile input)."""
        self.send_frames_via(self._in_turn(), frames, timeout_s=timeout_s)

    def send_frames_via(self, order: Sequence[str], frames: list[bytes], *,
                        timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
                        ) -> str:
        """Send encoded frames as :meth:`send_via` sends a request; return the endpoint."""
        limit = self._limit(timeout_s)
        only = self._only(order)
        if only is not None:  # one endpoint, the usual case: no generator on the way
            try:
                only.send_frames(frames, timeout_s=limit)
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
                    time.sleep(wait or 0)
                else:
                    try:
                        sender.send_frames(frames, timeout_s=wait)
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
