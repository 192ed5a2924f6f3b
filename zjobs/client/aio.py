"""AsyncClient: calls processors from coroutines, a thin asyncio driver over the call engine.

The asyncio twin of :class:`zjobs.Client`, over the same frames and the same engine
(:class:`zjobs.core.engine.CallEngine`), so the same guarantees: readiness per processor,
retries with the same id, liveness, processors seen coming back, one error per call.
``await client.call(x)`` for one response, ``await client.submit(x)`` for an
``asyncio.Future`` so that thousands of calls can be in flight (``asyncio.gather``).
One task reads the responses, completes the futures and does the housekeeping.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, Final, Self

import zmq

from zjobs.client.base import BaseClient
from zjobs.core import tracing
from zjobs.core.batching import DEFAULT_BATCH_SIZE, Emit, MapFlow, Send
from zjobs.core.coalescing import Group
from zjobs.core.engine import Call, CallEngine, Completion, completions
from zjobs.core.monitor import ProcessorMonitor
from zjobs.core.options import ClientOptions, build_client_options, expecting
from zjobs.core.routing import Route
from zjobs.errors import ClosedError, NotReady, ReceiveTimeout, SendTimeout, Timeout
from zjobs.transport.async_receiver import AsyncZmqReceiver
from zjobs.transport.async_routed import AsyncRoutedSender
from zjobs.transport.async_sender import AsyncZmqSender
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.reconnect import DEFAULT_RECONNECT, Reconnect
from zjobs.transport.sender import IdGenerator
from zjobs.transport.sockets import ClientSecurity, change_endpoints, endpoint_list
from zjobs.wire.batch import Batch
from zjobs.wire.codec import encode
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC
from zjobs.wire.protocol import PONG, Id, Meta, Response

__all__ = ["AsyncClient"]

log = logging.getLogger(__name__)

_TICK_S: Final = 0.05  # longest the reader waits before checking deadlines and liveness


async def _outcome(future: asyncio.Future[Any] | Exception) -> Any:
    # A map's value: the result, or the error object (a send that raised is one already).
    if isinstance(future, Exception):
        return future
    try:
        return await future
    except Exception as exc:
        return exc


def _give_up(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_exception(TimeoutError())


class AsyncClient(BaseClient):
    """Calls processors from asyncio: sends requests, awaits their responses.

    Build it with :meth:`connect` (ZeroMQ endpoints) or ``processor.async_client()``; it
    owns and closes its sender and receiver. Use it from one event loop. The options are
    those of :class:`zjobs.Client`, with the same meaning.

    Args:
        sender: where requests go.
        receiver: where responses come from; the client subscribes it to its private topic
            and to heartbeats.
        options: how the client calls (:class:`~zjobs.ClientOptions`, as for
            :class:`zjobs.Client`); its fields may be given as keywords instead, or with it
            (keywords override its fields).
        topic: the private reply topic; random (32 hex characters) by default.

    Raises:
        TypeError: a keyword is not a client option, or ``options`` and keywords were
            both given.
        OptionsError: an option's value cannot be used (each named).
    """

    def __init__(
        self,
        sender: AsyncZmqSender | AsyncRoutedSender,
        receiver: AsyncZmqReceiver,
        *,
        options: ClientOptions | None = None,
        topic: str | None = None,
        **keywords: Any,
    ) -> None:
        options = expecting(build_client_options(options, keywords, "AsyncClient"), 1)
        liveness = options.liveness
        monitor = receiver.monitor or ProcessorMonitor(liveness or 3)
        if liveness is not None:
            monitor.liveness = liveness
        receiver.monitor = monitor
        self._options = options
        self.sender = sender
        self.receiver = receiver
        self.ready_timeout_s = options.ready_timeout_s
        self.send_timeout_s = options.send_timeout_s
        self.topic = topic or secrets.token_hex(16)
        self.monitor = monitor
        """What the client learns from heartbeats."""
        # A routed sender lets the engine choose each call's endpoint (zjobs.core.routing).
        self._routed = sender if isinstance(sender, AsyncRoutedSender) else None
        self._engine = CallEngine(ids=IdGenerator(), clock=self._now, options=options,
                                  monitor=monitor, routes=None if self._routed is None
                                  else self._routed.endpoints)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flushes: set[asyncio.Task[None]] = set()  # sends of held calls under way
        self._ready_lock: asyncio.Lock | None = None
        self._pong: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None
        # Calls waiting for room (max_in_flight), woken one per call that ends, in order.
        self._room: deque[asyncio.Future[None]] = deque()
        receiver.subscribe(HEARTBEAT_TOPIC)
        receiver.subscribe(self.topic)

    @classmethod
    def connect(
        cls,
        requests: str | Iterable[str],
        responses: str | Iterable[str],
        *,
        context: zmq.Context[Any] | None = None,
        security: ClientSecurity | None = None,
        immediate: bool = True,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        reconnect: Reconnect | None = DEFAULT_RECONNECT,
        topic: str | None = None,
        options: ClientOptions | None = None,
        **keywords: Any,
    ) -> AsyncClient:
        """A client over ZeroMQ, connected to processors' request and response endpoints.

        Unless ``expect_processors`` is given, the readiness handshake waits for as many
        processors as there are request endpoints. ``immediate``, ``keepalive`` and
        ``reconnect`` are those of :meth:`zjobs.Client.connect`; ``options`` (or its fields
        as keywords) and ``topic`` those of :class:`AsyncClient`.
        """
        chosen = build_client_options(options, keywords, "AsyncClient.connect")
        request_eps, response_eps = endpoint_list(requests), endpoint_list(responses)
        sender = AsyncRoutedSender(request_eps, context=context, security=security,
                                   immediate=immediate, keepalive=keepalive,
                                   reconnect=reconnect)
        try:
            receiver = AsyncZmqReceiver(response_eps, topics=(), context=context,
                                        security=security, keepalive=keepalive,
                                        reconnect=reconnect)
        except BaseException:
            sender.close()
            raise
        try:
            return cls(sender, receiver, topic=topic,
                       options=expecting(chosen, max(1, len(request_eps))))
        except BaseException:
            sender.close()
            receiver.close()
            raise

    def __repr__(self) -> str:
        return (f"<AsyncClient {self._state()} topic={self.topic} pending={self.pending} "
                f"sender={self.sender!r} receiver={self.receiver!r}>")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else asyncio.get_running_loop().time()

    # -- membership ----------------------------------------------------------------------

    def update_endpoints(self, requests: Iterable[str], responses: Iterable[str]) -> None:
        """Use these processors from now on (see :meth:`zjobs.Client.update_endpoints`).
        Call it from the client's event loop.

        Raises:
            ConnectError: an endpoint is malformed.
        """
        wanted_requests, wanted_responses = endpoint_list(requests), endpoint_list(responses)
        change_endpoints(self.receiver, wanted_responses)
        before = set(self.sender.endpoints)
        change_endpoints(self.sender, wanted_requests)
        engine = self._engine
        for endpoint in before - set(wanted_requests):
            engine.remove_route(endpoint)
        for endpoint in set(wanted_requests) - before:
            engine.add_route(endpoint)
        engine.expect(max(1, len(wanted_requests)))

    # -- readiness -----------------------------------------------------------------------

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Ping until ``expect_processors`` distinct processors answered (the slow-joiner rule).

        Awaited by the first ``call``/``submit``; await it yourself to fail early.

        Raises:
            NotReady: not enough processors answered within ``timeout_s``.
            ClosedError: the client is closed.
        """
        engine = self._engine
        engine.check_open()
        if engine.ready:
            return
        self._ensure_reader()
        assert self._ready_lock is not None and self._pong is not None
        async with self._ready_lock:  # one handshake, however many calls wait for it
            limit = self.ready_timeout_s if timeout_s is None else timeout_s
            deadline = self._now() + limit
            while not engine.ready:
                engine.check_open()
                left = deadline - self._now()
                if left <= 0:
                    raise NotReady(self.sender.endpoints, limit, engine.confirmed,
                                   engine.expect_processors)
                self._pong.clear()
                if engine.ping_due():
                    await self._send_ping(min(0.1, left))
                try:
                    await asyncio.wait_for(self._pong.wait(), min(0.005, left))
                except TimeoutError:
                    pass

    async def _send_ping(self, timeout_s: float) -> None:
        rid = self._engine.readiness_ping()
        try:
            await self.sender.send(None, id=rid, reply_to=self.topic, ping=True,
                                   timeout_s=timeout_s)
        except Timeout:
            pass  # nobody takes requests yet; the handshake keeps trying until its deadline

    async def ping(self, timeout_s: float | None = None) -> float:
        """Round-trip one ping once the client is ready; return the seconds it took.

        Raises:
            NotReady: the readiness handshake failed (no processor answers).
            CallTimeout: no pong in time.
            SendTimeout: no processor took the ping in time.
        """
        limit = self._engine.timeout_s if timeout_s is None else timeout_s
        if not self._engine.ready:
            # A ping sent before the subscription is live could be lost (slow joiner).
            await self.wait_ready(limit)
        start = self._now()
        future = await self._start(None, limit, None, None, whole=True, retries=0, ping=True)
        await future
        return self._now() - start

    # -- calls ---------------------------------------------------------------------------

    async def submit(
        self,
        request: Any,
        *,
        timeout_s: float | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
        retries: int | None = None,
    ) -> asyncio.Future[Any]:
        """Send a request; return a future for its response value.

        The future fails as :meth:`zjobs.Client.submit`'s does (:class:`~zjobs.RemoteError`,
        :class:`~zjobs.CallTimeout` after its attempts, :class:`~zjobs.ProcessorsGone`,
        :class:`~zjobs.ClosedError`). Cancelling it forgets the call: a late response is
        ignored.

        Raises:
            EncodeError: the request cannot be encoded (nothing was sent).
            SendTimeout: no processor took the request in time and it has no retries left.
            NotReady, ClosedError, ValueError: as :meth:`zjobs.Client.submit`.
        """
        return await self._start(request, timeout_s, meta, deadline_ms, whole=False,
                                 retries=retries)

    async def call(
        self,
        request: Any,
        *,
        timeout_s: float | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
        retries: int | None = None,
    ) -> Any:
        """Send a request and return its response value.

        Cancelling the awaiting task cancels the call cleanly (a late response is ignored).

        Raises:
            RemoteError: the processor answered with an error (type, message, processor).
            CallTimeout: no response to any attempt (its ``attempts`` says how many).
            ProcessorsGone: (with ``liveness``) every processor stopped heartbeating.
            SendTimeout, NotReady, ClosedError, EncodeError, ValueError: as :meth:`submit`.
        """
        future = await self._start(request, timeout_s, meta, deadline_ms, whole=False,
                                   retries=retries)
        return await future

    async def call_response(self, request: Any, *, timeout_s: float | None = None,
                            meta: Meta | None = None, deadline_ms: int | None = None,
                            retries: int | None = None) -> Response:
        """Like :meth:`call`, but return the whole :class:`~zjobs.Response` (errors too)."""
        future = await self._start(request, timeout_s, meta, deadline_ms, whole=True,
                                   retries=retries)
        response: Response = await future
        return response

    async def _start(self, request: Any, timeout_s: float | None, meta: Meta | None,
                     deadline_ms: int | None, *, whole: bool, retries: int | None,
                     ping: bool = False, alone: bool = False) -> asyncio.Future[Any]:
        engine = self._engine
        if not engine.ready:
            await self.wait_ready()
        if engine.full:
            await self._wait_for_room(engine.timeout_s if timeout_s is None else timeout_s)
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        meta = meta if ping else tracing.traced_call(meta, future)  # observability: keep
        if (not alone and meta is None and deadline_ms is None and not whole and not ping
                and type(request) is not Batch and engine.holds(timeout_s, retries)):
            # Held back to travel with others in one batch (zjobs.core.coalescing); what
            # this turn of the loop holds goes at the end of it, at the latest.
            held = engine.hold(encode(request), future, timeout_s, retries)
            if not held:
                await self._flush()
            elif held == 1:
                loop.call_soon(self._flush_soon)
            return future
        call = engine.start(request, future, timeout_s=timeout_s, retries=retries, meta=meta,
                            deadline_ms=deadline_ms, whole=whole, ping=ping)
        future.add_done_callback(lambda _: engine.forget(call))
        wait_s = self.send_timeout_s
        try:
            await self._send(call, engine.order(call), call.dedup,
                             call.timeout_s if wait_s is None else min(wait_s, call.timeout_s))
        except Timeout:
            if not engine.undelivered(call):
                future.cancel()
                raise
        except BaseException:
            future.cancel()  # forgets it
            raise
        return future

    async def _flush(self) -> None:
        """Send the calls held back, as one batch; a send that fails fails those calls."""
        engine = self._engine
        call = engine.take_held(self._refused)
        if call is not None:
            wait_s = self.send_timeout_s
            await self._attempt(call, engine.order(call), call.timeout_s if wait_s is None
                                else min(wait_s, call.timeout_s))

    def _flush_soon(self) -> None:
        if self._engine.held:
            self._later(self._flush())

    def _later(self, send: Coroutine[Any, Any, None]) -> None:
        # A send nobody awaits; kept referenced until done (asyncio keeps tasks weakly).
        task = asyncio.ensure_future(send)
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def _refused(self, group: Group) -> None:
        # A processor without the batch extension refused a coalesced batch: its calls go
        # again one per message, and calls are no longer coalesced.
        log.info("client %s: a processor refused a batch of %d calls; sending them one "
                 "by one, and no longer coalescing", self.topic, len(group.handles))
        engine = self._engine
        for call in engine.refused(group):
            self._later(self._attempt(call, engine.order(call), 0))

    async def _attempt(self, call: Call, order: tuple[str, ...], wait_s: float) -> None:
        # Send an attempt nobody waits on to raise: what stops it fails the call instead.
        try:
            await self._send(call, order, call.dedup, wait_s)
        except Timeout as exc:
            if not self._engine.undelivered(call):
                completions(((call.handle, None, exc),))
        except Exception as exc:
            self._engine.forget(call)
            completions(((call.handle, None, exc),))

    async def _wait_for_room(self, timeout_s: float) -> None:
        # max_in_flight requests awaiting an answer: queue up until the reader ends one
        # (calls end by themselves at their deadlines, so this wait is bounded too). One
        # waiter is woken per call that ends: waking them all would have each answer wake
        # thousands.
        engine = self._engine
        if engine.held:
            await self._flush()
        deadline = self._now() + timeout_s
        loop = self._loop or asyncio.get_running_loop()
        while engine.full:
            engine.check_open()
            left = deadline - self._now()
            if left <= 0:
                raise SendTimeout(self.sender.endpoints, timeout_s)
            # One future and one timer per waiter (asyncio.wait_for would add a task's
            # worth of objects per waiter, and thousands wait in a gather).
            turn: asyncio.Future[None] = loop.create_future()
            timer = loop.call_later(left, _give_up, turn)
            self._room.append(turn)
            try:
                await turn
            except TimeoutError:
                pass  # checked at the top: full still means SendTimeout
            finally:
                timer.cancel()

    def _make_room(self) -> None:
        # Wake as many waiting calls as there is room for now (skipping those that gave up).
        engine = self._engine
        room = (engine.max_in_flight or 0) - len(engine.pending)
        while self._room and room > 0:
            turn = self._room.popleft()
            if not turn.done():
                turn.set_result(None)
                room -= 1

    # -- many calls: map ----------------------------------------------------------------

    def map(
        self,
        values: Iterable[Any],
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
        return_exceptions: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        window: int | None = None,
    ) -> AsyncIterator[Any]:
        """Call the processors with every value; an async iterator over the results, in
        input order (``async for result in client.map(values)``).

        The same flow as :meth:`zjobs.Client.map`, with the same arguments: it streams,
        batches when every processor advertised the extension, and a failed value fails
        only its own result (raised when it is reached, or yielded as the error object
        with ``return_exceptions``).

        Raises:
            ValueError: bad ``timeout_s``, ``retries``, ``batch_size`` or ``window`` (at once).
        """
        flow = self._map_flow(values, timeout_s, retries, batch_size, window)
        return self._map(flow, timeout_s, retries, return_exceptions)

    async def _map(self, flow: MapFlow, timeout_s: float | None, retries: int | None,
                   return_exceptions: bool) -> AsyncIterator[Any]:
        if not self._engine.ready:
            await self.wait_ready()
        actions = flow.actions()
        reply: Any = None
        try:
            while True:
                try:
                    action = actions.send(reply)
                except StopIteration:
                    return
                if isinstance(action, Emit):
                    reply = None
                    for outcome in action.outcomes:
                        if (action.failed and isinstance(outcome, BaseException)
                                and not return_exceptions):
                            raise outcome
                        yield outcome
                elif isinstance(action, Send):
                    chunk = action.chunk
                    if chunk.batch is not None:
                        reply = await self._map_submit(chunk.batch, timeout_s, retries)
                    else:
                        reply = [await self._map_submit(value, timeout_s, retries)
                                 for value in chunk.values]
                else:
                    handle = action.handle
                    reply = ([await _outcome(h) for h in handle] if isinstance(handle, list)
                             else await _outcome(handle))
        finally:
            actions.close()
            for handle in flow.outstanding():
                for future in handle if isinstance(handle, list) else (handle,):
                    if isinstance(future, asyncio.Future):
                        future.cancel()

    async def _map_submit(self, value: Any, timeout_s: float | None,
                          retries: int | None) -> asyncio.Future[Any] | Exception:
        try:
            # One message per value: a map batches by itself, or was asked not to.
            return await self._start(value, timeout_s, None, None, whole=False,
                                     retries=retries, alone=True)
        except Exception as exc:  # this value's outcome (e.g. EncodeError, SendTimeout)
            return exc

    # -- the reader task -----------------------------------------------------------------

    def _ensure_reader(self) -> None:
        if self._reader is None:
            self._engine.check_open()
            self._loop = asyncio.get_running_loop()
            self._ready_lock = asyncio.Lock()
            self._pong = asyncio.Event()
            self._reader = asyncio.create_task(self._read(),
                                               name=f"zjobs-client-{self.topic[:8]}")
            self._reader.add_done_callback(self._reader_ended)

    def _reader_ended(self, task: asyncio.Task[None]) -> None:
        # A reader that died of a bug must not leave every call to its timeout: the calls
        # waiting, and every new one, get what killed it.
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        log.error("client %s: its reader failed: %r", self.topic, error)
        completions(self._engine.fail(error))

    async def _read(self) -> None:
        engine = self._engine
        receive = self.receiver.receive
        while not engine.closed:
            deadline = engine.next_deadline()
            wait_s = _TICK_S if deadline is None else min(_TICK_S, deadline - self._now())
            try:
                response = await receive(max(0.0, wait_s))
            except ReceiveTimeout:
                response = None
            except ClosedError:
                return
            except Exception as exc:
                # The receiver failed for good: fail every call now and every new one,
                # instead of leaving them to time out one by one.
                log.error("client %s: receiving failed, failing its calls: %r", self.topic,
                          exc)
                completions(engine.fail(exc))
                return
            if response is not None:
                done = engine.receive(response)
                if done is not None:
                    completions((done,))
                    if self._room:
                        self._make_room()
                elif response.status == PONG and self._pong is not None:
                    self._pong.set()
            try:
                await self._housekeeping()
            except ClosedError:
                return

    async def _housekeeping(self) -> None:
        engine = self._engine
        failed: list[Completion] = []
        deadline = engine.next_deadline()
        if deadline is not None and deadline <= self._now():
            again, failed = engine.expire()
            for call in again:
                failed += await self._resend(call)
        failed += engine.check_liveness()
        completions(failed)
        if failed and self._room:
            self._make_room()
        if engine.ready and engine.ping_due():
            await self._send_ping(0)
        upkeep = engine.upkeep()
        if upkeep is not None:
            await self._upkeep(*upkeep)

    async def _send(self, call: Call, order: tuple[str, ...], dedup: bool,
                    timeout_s: float) -> None:
        """Send ``call``'s current attempt: through the endpoints of ``order`` (the engine's
        choice, best first), or as the sender chooses without routes."""
        routed = self._routed
        if routed is None or not order:
            await self.sender.send(call.request, id=call.id, reply_to=self.topic,
                                   meta=call.meta, deadline_ms=call.deadline_ms,
                                   ping=call.ping, dedup=dedup, timeout_s=timeout_s)
            return
        used = await routed.send_via(order, call.request, id=call.id, reply_to=self.topic,
                                     meta=call.meta, deadline_ms=call.deadline_ms,
                                     ping=call.ping, dedup=dedup, timeout_s=timeout_s)
        if used != order[0]:
            self._engine.sent(call, used)

    async def _upkeep(self, probes: list[tuple[Route, Id]], resets: list[str]) -> None:
        # Routes out of rotation: drop the connections of those whose processor went silent,
        # and probe each through itself, without waiting (see zjobs.core.routing).
        routed = self._routed
        assert routed is not None
        for endpoint in resets:
            log.info("client %s: no answer and no heartbeat through %s; reconnecting it",
                     self.topic, endpoint)
            routed.reset(endpoint)
        for route, rid in probes:
            try:
                await routed.send_via((route.endpoint,), None, id=rid, reply_to=self.topic,
                                      ping=True, timeout_s=0)
                queued = True
            except Timeout:
                queued = False
            except ClosedError:
                return
            self._engine.probe_sent(route, rid, queued)

    async def _resend(self, call: Call) -> list[Completion]:
        # Never wait here: the reader must keep reading. An attempt that cannot be queued
        # now counts as made; the next one comes after timeout_s.
        try:
            await self._send(call, self._engine.order(call), True, 0)
        except Timeout:
            call.undelivered += 1
        except ClosedError:
            pass  # closing: close() fails the call
        except Exception as exc:
            return self._engine.resend_failed(call, exc)
        return []

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Fail every pending call with :class:`~zjobs.ClosedError`, stop the reader, close
        the sender and receiver. Idempotent; :meth:`aclose` also waits for the reader."""
        engine = self._engine
        if engine.closed:
            return
        completions(engine.close())
        while self._room:  # calls waiting for room find the client closed
            turn = self._room.popleft()
            if not turn.done():
                turn.set_result(None)
        for task in list(self._flushes):
            task.cancel()  # their calls failed above
        if self._reader is not None:
            self._reader.cancel()
        self.sender.close()
        self.receiver.close()

    async def aclose(self) -> None:
        """Close (see :meth:`close`) and wait until the reader task has ended."""
        self.close()
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            await asyncio.wait((reader,))
