"""AsyncClient: calls processors from coroutines, correlating responses by id.

The asyncio twin of :class:`zjobs.Client`, over the same frames and the same readiness
rule: ``await client.call(x)`` for one response, ``await client.submit(x)`` for an
``asyncio.Future`` so that thousands of calls can be in flight (``asyncio.gather``).
One task reads the responses and completes the futures; timeouts are loop timers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable
from typing import Any, Self

import zmq

from zjobs.errors import CallTimeout, ClosedError, NotReady, SendTimeout
from zjobs.transport.async_receiver import AsyncZmqReceiver
from zjobs.transport.async_sender import AsyncZmqSender
from zjobs.transport.sender import IdGenerator
from zjobs.transport.sockets import ClientSecurity, endpoint_list
from zjobs.wire.protocol import PONG, Id, Meta, Response

__all__ = ["AsyncClient"]

log = logging.getLogger(__name__)


class _Pending:
    __slots__ = ("future", "timeout_s", "timer", "whole")

    def __init__(self, future: asyncio.Future[Any], timeout_s: float,
                 timer: asyncio.TimerHandle, whole: bool) -> None:
        self.future = future
        self.timeout_s = timeout_s
        self.timer = timer
        self.whole = whole  # complete with the Response itself, not its value


class AsyncClient:
    """Calls processors from asyncio: sends requests, awaits their responses.

    Build it with :meth:`connect` (ZeroMQ endpoints) or ``processor.async_client()``; it
    owns and closes its sender and receiver. Use it from one event loop.

    Args:
        sender: where requests go.
        receiver: where responses come from; the client subscribes it to its private topic.
        timeout_s: the default time a call may take before it fails with
            :class:`~zjobs.CallTimeout`.
        ready_timeout_s: how long the readiness handshake may take.
        expect_processors: how many distinct processors must answer a ping before the client
            counts as ready.
        topic: the private reply topic; random (32 hex characters) by default.
    """

    def __init__(
        self,
        sender: AsyncZmqSender,
        receiver: AsyncZmqReceiver,
        *,
        timeout_s: float = 30.0,
        ready_timeout_s: float = 10.0,
        expect_processors: int = 1,
        topic: str | None = None,
    ) -> None:
        self.sender = sender
        self.receiver = receiver
        self.timeout_s = timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.expect_processors = expect_processors
        self.topic = topic or secrets.token_hex(16)
        self.unmatched = 0
        """Responses on this client's topic that answered no pending call (late, or foreign)."""
        self._ids = IdGenerator()
        self._pending: dict[Id, _Pending] = {}
        self._ready = False
        self._ready_lock: asyncio.Lock | None = None
        self._pongs: set[Id] = set()
        self._pong_from: set[str] = set()
        self._pong_event: asyncio.Event | None = None
        self._closed = False
        self._reader: asyncio.Task[None] | None = None
        receiver.subscribe(self.topic)

    @classmethod
    def connect(
        cls,
        requests: str | Iterable[str],
        responses: str | Iterable[str],
        *,
        context: zmq.Context[Any] | None = None,
        security: ClientSecurity | None = None,
        send_timeout_s: float | None = None,
        expect_processors: int | None = None,
        **options: Any,
    ) -> AsyncClient:
        """A client over ZeroMQ, connected to processors' request and response endpoints.

        By default the readiness handshake waits for as many processors as there are
        request endpoints.
        """
        request_eps, response_eps = endpoint_list(requests), endpoint_list(responses)
        sender = AsyncZmqSender(request_eps, context=context, security=security,
                                send_timeout_s=send_timeout_s)
        try:
            receiver = AsyncZmqReceiver(response_eps, topics=(), context=context,
                                        security=security)
        except BaseException:
            sender.close()
            raise
        expected = expect_processors or max(1, len(request_eps))
        return cls(sender, receiver, expect_processors=expected, **options)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ready" if self._ready else "new"
        return (f"<AsyncClient {state} topic={self.topic} pending={len(self._pending)} "
                f"sender={self.sender!r} receiver={self.receiver!r}>")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def pending(self) -> int:
        """How many calls are waiting for a response."""
        return len(self._pending)

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    # -- readiness -----------------------------------------------------------------------

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Ping until ``expect_processors`` distinct processors answered (the slow-joiner rule).

        Awaited by the first ``call``/``submit``; await it yourself to fail early.

        Raises:
            NotReady: not enough processors answered within ``timeout_s``.
            ClosedError: the client is closed.
        """
        if self._ready:
            return
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:  # one handshake, however many calls wait for it
            if self._ready:
                return
            self._ensure_reader()
            assert self._pong_event is not None
            loop = asyncio.get_running_loop()
            limit = self.ready_timeout_s if timeout_s is None else timeout_s
            deadline = loop.time() + limit
            interval = 0.002
            while len(self._pong_from) < self.expect_processors:
                if self._closed:
                    raise ClosedError("client is closed")
                left = deadline - loop.time()
                if left <= 0:
                    raise NotReady(self.sender.endpoints, limit, len(self._pong_from),
                                   self.expect_processors)
                self._pong_event.clear()
                await self._send_ping()
                try:
                    await asyncio.wait_for(self._pong_event.wait(), min(interval, left))
                except TimeoutError:
                    pass
                interval = min(interval * 1.5, 0.1)
            self._ready = True
            self._pongs.clear()

    async def _send_ping(self) -> None:
        rid = self._ids()
        self._pongs.add(rid)
        try:
            await asyncio.wait_for(
                self.sender.send(None, id=rid, reply_to=self.topic, ping=True), 0.1)
        except (TimeoutError, SendTimeout):
            pass  # nobody takes requests yet; the handshake keeps trying until its deadline

    async def ping(self, timeout_s: float | None = None) -> float:
        """Round-trip one ping once the client is ready; return the seconds it took.

        Raises:
            NotReady: the readiness handshake failed (no processor answers).
            CallTimeout: no pong in time.
        """
        if not self._ready:
            # A ping sent before the subscription is live could be lost (slow joiner).
            await self.wait_ready(self.timeout_s if timeout_s is None else timeout_s)
        loop = asyncio.get_running_loop()
        start = loop.time()
        future = await self._send(None, timeout_s, None, None, whole=False, ping=True)
        await future
        return loop.time() - start

    # -- calls ---------------------------------------------------------------------------

    async def submit(
        self,
        request: Any,
        *,
        timeout_s: float | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
    ) -> asyncio.Future[Any]:
        """Send a request; return a future for its response value.

        The future fails with :class:`~zjobs.RemoteError` for an error response, with
        :class:`~zjobs.CallTimeout` after ``timeout_s`` (the client default when None), and
        with :class:`~zjobs.ClosedError` if the client closes first. Cancelling it forgets
        the call: a late response is ignored.

        Raises:
            EncodeError: the request cannot be encoded (nothing was sent).
            SendTimeout, NotReady, ClosedError: the request could not be sent.
        """
        if not self._ready:
            await self.wait_ready()
        return await self._send(request, timeout_s, meta, deadline_ms, whole=False)

    async def call(
        self,
        request: Any,
        *,
        timeout_s: float | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
    ) -> Any:
        """Send a request and return its response value.

        Cancelling the awaiting task cancels the call cleanly (a late response is ignored).

        Raises:
            RemoteError: the processor answered with an error (type, message, processor).
            CallTimeout: no response within ``timeout_s``.
        """
        future = await self.submit(request, timeout_s=timeout_s, meta=meta,
                                   deadline_ms=deadline_ms)
        return await future

    async def call_response(self, request: Any, *, timeout_s: float | None = None,
                            meta: Meta | None = None,
                            deadline_ms: int | None = None) -> Response:
        """Like :meth:`call`, but return the whole :class:`~zjobs.Response` (errors too)."""
        if not self._ready:
            await self.wait_ready()
        future = await self._send(request, timeout_s, meta, deadline_ms, whole=True)
        response: Response = await future
        return response

    async def _send(self, request: Any, timeout_s: float | None, meta: Meta | None,
                    deadline_ms: int | None, *, whole: bool,
                    ping: bool = False) -> asyncio.Future[Any]:
        if self._closed:
            raise ClosedError("client is closed")
        self._ensure_reader()
        loop = asyncio.get_running_loop()
        limit = self.timeout_s if timeout_s is None else timeout_s
        rid = self._ids()
        future: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(limit, self._expire, rid)
        self._pending[rid] = _Pending(future, limit, timer, whole)
        future.add_done_callback(lambda _: self._forget(rid))
        try:
            await self.sender.send(request, id=rid, reply_to=self.topic, meta=meta,
                                   deadline_ms=deadline_ms, ping=ping)
        except BaseException:
            future.cancel()  # forgets it
            raise
        return future

    def _forget(self, rid: Id) -> None:
        # Every way a call ends (answer, timeout, cancel, close) lands here: no entry leaks.
        entry = self._pending.pop(rid, None)
        if entry is not None:
            entry.timer.cancel()

    def _expire(self, rid: Id) -> None:
        entry = self._pending.get(rid)
        if entry is not None and not entry.future.done():
            entry.future.set_exception(CallTimeout(rid, entry.timeout_s))

    # -- the reader task -----------------------------------------------------------------

    def _ensure_reader(self) -> None:
        if self._reader is None:
            if self._closed:
                raise ClosedError("client is closed")
            self._pong_event = asyncio.Event()
            self._reader = asyncio.create_task(self._read(),
                                               name=f"zjobs-client-{self.topic[:8]}")

    async def _read(self) -> None:
        receive = self.receiver.receive
        while True:
            try:
                response = await receive()
            except ClosedError:
                return
            except Exception:
                log.exception("client %s: receiving failed", self.topic)
                return
            self._dispatch(response)

    def _dispatch(self, response: Response) -> None:
        rid = response.id
        if rid is None:
            self.unmatched += 1
            return
        if response.status == PONG and rid in self._pongs:
            self._pongs.discard(rid)
            self._pong_from.add(response.instance or response.processor or str(rid))
            assert self._pong_event is not None
            self._pong_event.set()
            return
        entry = self._pending.get(rid)
        if entry is None or entry.future.done():
            if response.status != PONG:  # late pongs of the handshake are expected
                self.unmatched += 1
            return
        future = entry.future
        if entry.whole:
            future.set_result(response)
        elif response.error is not None:
            try:
                response.unwrap()
            except Exception as exc:
                future.set_exception(exc)
        else:
            future.set_result(response.value)

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Fail every pending call with :class:`~zjobs.ClosedError`, stop the reader, close
        the sender and receiver. Idempotent; :meth:`aclose` also waits for the reader."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
        for rid, entry in list(self._pending.items()):
            entry.timer.cancel()
            if not entry.future.done():
                entry.future.set_exception(
                    ClosedError(f"client closed before request {rid!r} was answered"))
        self._pending.clear()
        self.sender.close()
        self.receiver.close()

    async def aclose(self) -> None:
        """Close (see :meth:`close`) and wait until the reader task has ended."""
        self.close()
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            await asyncio.wait((reader,))
