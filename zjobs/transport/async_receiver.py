"""Receiving responses in asyncio: :class:`AsyncZmqReceiver`, a SUB socket read with ``await``.

It skips what :class:`zjobs.ZmqReceiver` skips (non-responses, unknown statuses, protocol
messages on topics starting with 0x00) and supports ``async for``::

    async with AsyncZmqReceiver(processor.connect_endpoints.responses) as receiver:
        async for response in receiver:
            print(response.id, response.value)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol, Self, cast, runtime_checkable

import zmq
import zmq.asyncio

from zjobs.core.monitor import ProcessorMonitor
from zjobs.errors import ClosedError, ReceiveTimeout
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.receiver import as_topic, parse_counted
from zjobs.transport.reconnect import DEFAULT_RECONNECT, Reconnect
from zjobs.transport.sockets import DEFAULT_RCVHWM, ClientSecurity, SocketPeer, sub_options
from zjobs.wire.protocol import Response, parse_response

__all__ = ["AsyncMcReceive", "AsyncZmqReceiver", "recv_nowait"]


@runtime_checkable
class AsyncMcReceive(Protocol):
    """Receives the responses broadcast by processors, from coroutines: the asyncio
    counterpart of :class:`~zjobs.McReceive`."""

    async def receive(self, timeout: float | None = None) -> Response:
        """Return the next response; raise :class:`ReceiveTimeout` after ``timeout`` seconds."""
        ...

    def subscribe(self, topic: str | bytes) -> None:
        """Also receive responses whose topic starts with ``topic``."""
        ...

    def close(self) -> None:
        """Release the receiver; idempotent."""
        ...


def recv_nowait(sock: zmq.asyncio.Socket) -> list[bytes] | None:
    """The next message already queued on ``sock``, or None (without waiting)."""
    # pyzmq completes a non-blocking receive at once, so no await is needed.
    future = sock.recv_multipart(zmq.NOBLOCK)
    assert isinstance(future, asyncio.Future)
    try:
        return cast("list[bytes]", future.result())
    except zmq.Again:
        return None


def cancelled_by_close(closed: bool) -> bool:
    """True when a CancelledError just caught came from closing a socket, not from our task.

    pyzmq cancels the pending futures of a socket it closes; the task awaiting one was not
    itself cancelled and should see a :class:`ClosedError` instead.
    """
    task = asyncio.current_task()
    return closed and (task is None or task.cancelling() == 0)


class AsyncZmqReceiver(SocketPeer[zmq.asyncio.Socket]):
    """Receives responses over a ZeroMQ SUB socket from coroutines (use it in one event loop).

    Closing it ends a receive still waiting with :class:`~zjobs.errors.ClosedError`.

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
        monitor: fed with heartbeats and sequence numbers, as for :class:`~zjobs.ZmqReceiver`;
            a new :class:`~zjobs.ProcessorMonitor` by default.
    """

    _role = "receiver"

    def __init__(
        self,
        endpoints: str | Iterable[str] | None = None,
        *,
        topics: Iterable[str | bytes] = ("",),
        context: zmq.Context[Any] | None = None,
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
        self._plain: zmq.Socket[bytes] | None = None  # a non-owning sync view
        sock = self.context.socket(zmq.SUB, socket_class=zmq.asyncio.Socket)
        super().__init__(sock)

        def options(socket: Any) -> None:
            sub_options(socket, rcvhwm=rcvhwm)
            for topic in topics:
                self.subscribe(topic)

        self._setup(endpoints, options, keepalive=keepalive, reconnect=reconnect,
                    security=security)

    def __repr__(self) -> str:
        state = "closed" if self._socket is None else "open"
        return (f"<AsyncZmqReceiver {state} responses={self.endpoints} topics={self.topics} "
                f"gaps={self.gaps}>")

    @property
    def gaps(self) -> int:
        """Messages this receiver missed, judged by sequence numbers (as
        :attr:`zjobs.ZmqReceiver.gaps`)."""
        return 0 if self.monitor is None else self.monitor.gaps

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Response:
        """The next response; the iteration ends when the receiver is closed."""
        try:
            return await self.receive()
        except ClosedError:
            raise StopAsyncIteration from None

    def subscribe(self, topic: str | bytes) -> None:
        """Receive responses whose topic starts with ``topic``."""
        raw = as_topic(topic)
        self._live().setsockopt(zmq.SUBSCRIBE, raw)
        self.topics.append(raw)

    def unsubscribe(self, topic: str | bytes) -> None:
        """Undo one :meth:`subscribe` of ``topic``."""
        raw = as_topic(topic)
        self._live().setsockopt(zmq.UNSUBSCRIBE, raw)
        self.topics.remove(raw)

    async def receive(self, timeout: float | None = None) -> Response:
        """Return the next response; wait at most ``timeout`` seconds (None: forever).

        Raises:
            ReceiveTimeout: nothing arrived in time.
            ClosedError: the receiver is (or got) closed, or its zmq context was terminated
                (pyzmq does not wake a receive already waiting when the context terminates:
                that one ends at its timeout, and the next raises this).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            frames = await self.receive_frames(deadline)
            if frames is None:
                raise ReceiveTimeout(timeout)
            response = self.parse(frames)
            if response is not None:
                return response

    async def receive_frames(self, deadline: float | None) -> list[bytes] | None:
        """The next raw message (any topic), or None once ``deadline`` (loop time) passed."""
        sock = self._live()
        try:
            # What is queued already, on a plain view of the socket: no future per message
            # (pyzmq makes one even for a non-blocking receive). This reader is the only
            # one, so no receive of pyzmq's is pending to be overtaken.
            if self._plain is None:
                self._plain = zmq.Socket.shadow(sock.underlying)
            while True:
                try:
                    return self._plain.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    pass
                try:
                    if deadline is None:
                        return await sock.recv_multipart()
                    wait_s = deadline - asyncio.get_running_loop().time()
                    if wait_s <= 0:
                        return None
                    try:
                        return await asyncio.wait_for(sock.recv_multipart(), wait_s)
                    except TimeoutError:
                        return None
                except zmq.Again:
                    # The rest of a message whose connection was dropped while it was
                    # being read (a disconnected endpoint): libzmq ends it there.
                    continue
        except asyncio.CancelledError:
            if cancelled_by_close(self._socket is None):
                raise ClosedError("receiver is closed") from None
            raise
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
