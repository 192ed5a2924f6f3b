"""The Client: calls processors from threads, a thin driver over the call engine.

Every decision about a call (ids, deadlines, retries, readiness, liveness, dispatch) is
:class:`zjobs.core.engine.CallEngine`'s; this module only sends, reads and waits.

Reading: a thread that waits for a response (``call``, ``future.result()``, the
handshake) reads the socket itself, dispatching everybody's responses, so a synchronous
call costs no thread hop and a pipelined loop runs on one thread, as a hand-written loop
would. pyzmq releases the GIL around every send and receive, so two busy Python threads
would hand the GIL back and forth on every frame. A background thread reads only for
futures nobody waits on (callbacks, ``as_completed``) and for retries, once no caller has
read for ``_GRACE_S``, and hands the socket back as soon as a caller asks for it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, InvalidStateError, wait
from typing import Any, Final, Self

import zmq

from zjobs.client.base import BaseClient
from zjobs.client.watcher import DEFAULT_INTERVAL_S, MembershipWatcher
from zjobs.core import tracing
from zjobs.core.batching import DEFAULT_BATCH_SIZE, Emit, MapFlow, Send
from zjobs.core.coalescing import Group
from zjobs.core.engine import Call, CallEngine, Completion, completions
from zjobs.core.membership import Members, Membership
from zjobs.core.monitor import ProcessorMonitor
from zjobs.core.options import ClientOptions, build_client_options, expecting
from zjobs.core.routing import Route
from zjobs.errors import ClosedError, NotReady, ReceiveTimeout, SendTimeout, Timeout, ZJobsError
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.receiver import HeartbeatReceive, McReceive, ZmqReceiver
from zjobs.transport.reconnect import DEFAULT_RECONNECT, Reconnect
from zjobs.transport.routed import RoutedSender
from zjobs.transport.sender import IdGenerator, MpSend
from zjobs.transport.sockets import ClientSecurity, SocketPeer, endpoint_list
from zjobs.wire.batch import Batch
from zjobs.wire.codec import encode
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC
from zjobs.wire.protocol import Id, Meta, Response

__all__ = ["Client"]

log = logging.getLogger(__name__)

_TICK_S: Final = 0.05  # longest a reader waits before checking deadlines and closing
_GRACE_S: Final = 0.02  # the background reader steps in once no caller read for this long
_DRAIN: Final = 256  # responses a waiter dispatches from the queue after its own came in
_READ_EVERY: Final = 64  # submits between two looks at the answers already in
_IDLE_LOOK_S: Final = 0.2  # an idle client looks at its socket this often (heartbeats)

# concurrent.futures' states of a future (its _state values, stable since 3.2).
_PENDING: Final = "PENDING"
_FINISHED: Final = "FINISHED"
_SETTLED: Final = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", _FINISHED})


_NEVER: Final = float("inf")


class _Change:
    """A membership change waiting for the holder of the receiver to apply it."""

    __slots__ = ("done", "error", "requests", "responses")

    def __init__(self, requests: set[str], responses: set[str]) -> None:
        self.requests = requests
        self.responses = responses
        self.done = threading.Event()
        self.error: ZJobsError | None = None


class _CallFuture(Future[Any]):
    """A ``concurrent.futures.Future`` made for one call: ``result()``/``exception()`` read
    the client's socket while waiting, and it is light.

    ``Future()`` builds a ``Condition`` over an ``RLock`` that a client's own waiters never
    use (they read the socket instead of sleeping): that alone cost about half of a
    pipelined call. Here state changes take a plain lock, and the condition, over that same
    lock, is built the first time something needs it (``wait()``, ``as_completed()``, a
    blocked ``cancel()``...), so every ``Future`` API still works.
    """

    def __init__(self, client: Client) -> None:
        # Future.__init__ is not called: it would build the Condition this class defers.
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future[Any]], object]] = []
        self._lock = _allocate_lock()
        self._cond: threading.Condition | None = None
        self._client = client

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        # What Future's own methods lock and wait on.
        if self._cond is None:
            with self._lock:
                if self._cond is None:
                    self._cond = threading.Condition(self._lock)
        return self._cond

    @property
    def settled(self) -> bool:
        """``done()`` without taking the future's lock (a plain read of its state, for hot
        loops). True from the moment the state changes, so also inside done-callbacks."""
        return self._state in _SETTLED

    def done(self) -> bool:
        """True once the call completed or was cancelled."""
        return self._state in _SETTLED

    def result(self, timeout: float | None = None) -> Any:
        """The response value; reads responses itself while it waits (see the module doc)."""
        if self._state == _FINISHED and self._exception is None:
            return self._result
        if not self.settled:
            self._client._await(self, timeout)
        if self._state == _FINISHED and self._exception is None:
            return self._result  # answered while reading: no Condition needed
        # _await returned: done, or the whole timeout spent (then fail now, not wait again).
        return super().result(None if self.settled or timeout is None else 0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The call's exception, or None; reads responses itself while it waits."""
        if self._state == _FINISHED:
            return self._exception
        if not self.settled:
            self._client._await(self, timeout)
        if self._state == _FINISHED:
            return self._exception
        return super().exception(None if self.settled or timeout is None else 0)

    def set_result(self, result: Any) -> None:
        """Complete with a value (the client does; not for users)."""
        self._settle(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        """Complete with an error (the client does; not for users)."""
        self._settle(None, exception)

    def _settle(self, result: Any, exception: BaseException | None) -> None:
        with self._lock:
            if self._state in _SETTLED:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result, self._exception = result, exception
            self._state = _FINISHED
            for waiter in self._waiters:
                if exception is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            if self._cond is not None:
                self._cond.notify_all()
        for callback in self._done_callbacks:
            try:
                callback(self)
            except Exception:  # as Future does: one callback's failure stops no other
                log.exception("client: a done-callback of %r raised", self)


def _outcome(future: Future[Any] | Exception) -> Any:
    # A map's value: the result, or the error object (a send that raised is one already).
    if isinstance(future, Exception):
        return future
    try:
        return future.result()
    except Exception as exc:
        return exc


class Client(BaseClient):
    """Calls processors: sends requests, waits for their responses.

    Build it with :meth:`connect` (ZeroMQ endpoints), from a processor
    (``processor.client()``), or from any :class:`MpSend` and :class:`McReceive` pair, which
    the client then owns and closes.

    Args:
        sender: where requests go.
        receiver: where responses come from; the client subscribes it to its private topic
            (and, when it reads heartbeats, to the heartbeat topic).
        options: how the client calls (:class:`~zjobs.ClientOptions`: ``timeout_s``,
            ``ready_timeout_s``, ``expect_processors`` (1 when None), ``retries``,
            ``liveness``, ``send_timeout_s``, ``max_in_flight``, ``coalesce``). Its fields
            may be given as keywords instead (``timeout_s=5, retries=2``), or with it
            (keywords override its fields, as for processors).
        topic: the private reply topic; random (32 hex characters) by default.

    ``liveness`` needs a receiver that reads heartbeats
    (:class:`~zjobs.transport.receiver.HeartbeatReceive`, as :class:`ZmqReceiver`).

    Raises:
        TypeError: a keyword is not a client option, ``options`` and keywords were both
            given, or ``liveness`` with a receiver that reads no heartbeats.
        OptionsError: an option's value cannot be used (each named).
    """

    def __init__(
        self,
        sender: MpSend,
        receiver: McReceive,
        *,
        options: ClientOptions | None = None,
        topic: str | None = None,
        **keywords: Any,
    ) -> None:
        options = expecting(build_client_options(options, keywords, "Client"), 1)
        liveness = options.liveness
        monitor: ProcessorMonitor | None = None
        if isinstance(receiver, HeartbeatReceive):
            monitor = receiver.monitor or ProcessorMonitor(liveness or 3)
            if liveness is not None:
                monitor.liveness = liveness
            receiver.monitor = monitor
        elif liveness is not None:
            raise TypeError(f"liveness needs a receiver that reads heartbeats, not {receiver!r}")
        self._options = options
        self.sender = sender
        self.receiver = receiver
        self.ready_timeout_s = options.ready_timeout_s
        self.send_timeout_s = options.send_timeout_s
        self.topic = topic or secrets.token_hex(16)
        self.monitor = monitor
        """What the client learns from heartbeats (None with a receiver that reads none)."""
        # A routed sender lets the engine choose each call's endpoint (zjobs.core.routing).
        self._routed = sender if isinstance(sender, RoutedSender) else None
        self._engine = CallEngine(ids=IdGenerator(), clock=time.monotonic, options=options,
                                  monitor=monitor, routes=None if self._routed is None
                                  else self._routed.endpoints)
        self._lock = threading.Lock()  # guards the engine
        self._ready_lock = threading.Lock()
        self._pong = threading.Event()
        self._closed = threading.Event()
        self._reader: threading.Thread | None = None
        # The receiver is read only by the holder of _pump: a caller waiting for a response,
        # or the reader thread. Reentrant, so close() may run from a done-callback.
        self._pump = threading.RLock()
        self._work = threading.Event()  # wakes the reader thread from its sleep
        self._reader_asleep = False  # waiting for _work with nothing pending
        self._wanting = 0  # callers waiting for the socket: the reader thread hands it over
        self._attended = 0  # threads in call(), call_response() or ping(), reading for it
        self._last_read = 0.0  # monotonic time a caller last read the socket
        self._submitted = 0
        # Membership changes (see update_endpoints), applied by the holder of _pump.
        self._changes: list[_Change] = []
        self._draining: dict[str, float] = {}  # removed response endpoints: until when kept
        self._drain_at = _NEVER
        self.watcher: MembershipWatcher | None = None
        """The watcher of ``connect(membership=...)``, closed with the client."""
        if monitor is not None:
            receiver.subscribe(HEARTBEAT_TOPIC)
        receiver.subscribe(self.topic)

    @classmethod
    def connect(
        cls,
        requests: str | Iterable[str] = (),
        responses: str | Iterable[str] = (),
        *,
        membership: Membership | None = None,
        membership_interval_s: float = DEFAULT_INTERVAL_S,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: ClientSecurity | None = None,
        immediate: bool = True,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        reconnect: Reconnect | None = DEFAULT_RECONNECT,
        topic: str | None = None,
        options: ClientOptions | None = None,
        **keywords: Any,
    ) -> Client:
        """A client over ZeroMQ, connected to processors' request and response endpoints.

        Unless ``expect_processors`` is given, the readiness handshake waits for as many
        processors as there are request endpoints.

        Args:
            membership: instead of ``requests`` and ``responses``, a source of them that is
                read now and then every ``membership_interval_s`` seconds, in a thread;
                each change is applied with :meth:`update_endpoints`. A first reading that
                fails raises :class:`~zjobs.errors.MembershipError`; later ones keep the
                last known set.
            immediate: ZMQ_IMMEDIATE on the sender (the default): requests go only to
                processors whose connection is up, so a processor that died is skipped at
                once instead of collecting requests (and retries) until it comes back.
                While no processor is connected, sends wait (see ``send_timeout_s``).
            keepalive: TCP keepalive on both sockets, so a vanished host's connections
                are dropped (None: off; see :class:`~zjobs.Keepalive`).
            reconnect: connect timeout and reconnect interval of both sockets, so a
                healed host is used again quickly (None: libzmq's defaults).

        ``options`` (or its fields as keywords), ``topic`` and what they raise are those of
        :class:`Client`.
        """
        chosen = build_client_options(options, keywords, "Client.connect")
        first: Members | None = None
        if membership is not None:
            if endpoint_list(requests) or endpoint_list(responses):
                raise ValueError("give endpoints or a membership, not both")
            first = membership.members()
            requests, responses = first.requests, first.responses
        request_eps, response_eps = endpoint_list(requests), endpoint_list(responses)
        sender = RoutedSender(request_eps, context=context, security=security,
                              immediate=immediate, keepalive=keepalive,
                              reconnect=reconnect)
        try:
            receiver = ZmqReceiver(response_eps, topics=(), context=context, security=security,
                                   keepalive=keepalive, reconnect=reconnect)
        except BaseException:
            sender.close()
            raise
        try:
            client = cls(sender, receiver, topic=topic,
                         options=expecting(chosen, max(1, len(request_eps))))
        except BaseException:
            sender.close()
            receiver.close()
            raise
        if membership is not None and first is not None:
            client.watcher = MembershipWatcher(
                membership, lambda m: client.update_endpoints(m.requests, m.responses),
                interval_s=membership_interval_s, current=first)
        return client

    def __repr__(self) -> str:
        return (f"<Client {self._state()} topic={self.topic} pending={self.pending} "
                f"sender={self.sender!r} receiver={self.receiver!r}>")

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closed.is_set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- readiness -----------------------------------------------------------------------

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Ping until ``expect_processors`` distinct processors answered (the slow-joiner rule).

        Called by the first ``call``/``submit``; call it yourself to fail early.

        Raises:
            NotReady: not enough processors answered within ``timeout_s``.
            ClosedError: the client is closed.
        """
        engine = self._engine
        engine.check_open()
        with self._ready_lock:
            limit = self.ready_timeout_s if timeout_s is None else timeout_s
            deadline = time.monotonic() + limit
            self._ensure_reader()
            while not engine.ready:
                engine.check_open()
                now = time.monotonic()
                if now >= deadline:
                    raise NotReady(self._endpoints(), limit, engine.confirmed,
                                   engine.expect_processors)
                self._pong.clear()
                with self._lock:
                    due = engine.ping_due()
                if due:
                    self._send_ping(max(0.0, min(0.1, deadline - now)))
                until = min(deadline, time.monotonic() + 0.005)
                if self._pump.acquire(blocking=False):
                    try:
                        while (not self._pong.is_set() and time.monotonic() < until
                               and self._pump_once(until)):
                            pass
                    finally:
                        self._last_read = time.monotonic()
                        self._pump.release()
                else:
                    self._pong.wait(until - time.monotonic())

    def _endpoints(self) -> list[str]:
        sender = self.sender
        return list(sender.endpoints) if isinstance(sender, (SocketPeer, RoutedSender)) else []

    def _send_ping(self, timeout_s: float) -> None:
        with self._lock:
            rid = self._engine.readiness_ping()
        try:
            self.sender.send(None, id=rid, reply_to=self.topic, ping=True, timeout_s=timeout_s)
        except Timeout:
            pass  # nobody takes requests yet; the handshake keeps trying until its deadline

    def ping(self, timeout_s: float | None = None) -> float:
        """Round-trip one ping once the client is ready; return the seconds it took.

        Raises:
            NotReady: the readiness handshake failed (no processor answers).
            CallTimeout: no pong in time.
            SendTimeout: no processor took the ping in time.
        """
        limit = self._engine.timeout_s if timeout_s is None else timeout_s
        if not self._engine.ready:
            # A ping sent before the subscription is live could be lost (slow joiner).
            self.wait_ready(limit)
        start = time.monotonic()
        self._attend(self._start(None, limit, None, None, whole=True, retries=0, ping=True,
                                 attended=True))
        return time.monotonic() - start

    # -- calls ---------------------------------------------------------------------------

    def submit(
        self,
        request: Any,
        *,
        timeout_s: float | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
        retries: int | None = None,
    ) -> Future[Any]:
        """Send a request; return a future for its response value.

        The future fails with :class:`RemoteError` for an error response, with
        :class:`CallTimeout` when none of its attempts (1 + ``retries``, the client default
        when None) was answered within ``timeout_s`` each (also when no processor took
        them: ``undelivered`` says how many), with :class:`ProcessorsGone` (liveness), and
        with :class:`ClosedError` if the client closes first. Cancelling it ignores a late
        response.

        Raises:
            EncodeError: the request cannot be encoded (nothing was sent).
            SendTimeout: no processor took the request in time and it has no retries left.
            NotReady: the readiness handshake failed.
            ClosedError: the client is closed.
            ValueError: ``timeout_s`` not positive or ``retries`` negative.
        """
        return self._start(request, timeout_s, meta, deadline_ms, whole=False, retries=retries)

    def call(
        self,
        request: Any,
        *,
        timeout_s: float | None = None,
        meta: Meta | None = None,
        deadline_ms: int | None = None,
        retries: int | None = None,
    ) -> Any:
        """Send a request and return its response value.

        Raises:
            RemoteError: the processor answered with an error (type, message, processor).
            CallTimeout: no response to any attempt (its ``attempts`` says how many).
            ProcessorsGone: (with ``liveness``) every processor stopped heartbeating.
            SendTimeout, NotReady, ClosedError, EncodeError, ValueError: as :meth:`submit`.
        """
        return self._attend(self._start(request, timeout_s, meta, deadline_ms, whole=False,
                                        retries=retries, attended=True))

    def call_response(self, request: Any, *, timeout_s: float | None = None,
                      meta: Meta | None = None, retries: int | None = None) -> Response:
        """Like :meth:`call`, but return the whole :class:`Response` (error responses too)."""
        response: Response = self._attend(self._start(request, timeout_s, meta, None,
                                                      whole=True, retries=retries,
                                                      attended=True))
        return response

    def _attend(self, future: _CallFuture) -> Any:
        # Wait for the result in this thread. Meanwhile its call is one the reader thread
        # need not read for: with every pending call attended so, it stays asleep instead
        # of waking every _GRACE_S to take the GIL beside a sequential caller.
        with self._lock:
            self._attended += 1
        try:
            return future.result()
        finally:
            with self._lock:
                self._attended -= 1

    def _start(self, request: Any, timeout_s: float | None, meta: Meta | None,
               deadline_ms: int | None, *, whole: bool, retries: int | None = None,
               ping: bool = False, attended: bool = False, alone: bool = False) -> _CallFuture:
        engine = self._engine
        if not engine.ready:
            self.wait_ready()
        if engine.full:
            self._wait_for_room(engine.timeout_s if timeout_s is None else timeout_s)
        future = _CallFuture(self)
        meta = meta if ping else tracing.traced_call(meta, future)  # observability: keep
        with self._lock:
            if (not attended and not alone and meta is None and deadline_ms is None and not whole
                    and type(request) is not Batch and engine.holds(timeout_s, retries)):
                # Held back to travel with others in one batch (zjobs.core.coalescing).
                held = engine.hold(encode(request), future, timeout_s, retries)
                call = None
            else:
                call = engine.start(request, future, timeout_s=timeout_s, retries=retries,
                                    meta=meta, deadline_ms=deadline_ms, whole=whole,
                                    ping=ping)
                order = engine.order(call)
        if call is None:
            if not held or engine.held_due() <= time.monotonic():
                self._flush()
            elif held == 1 and self._reader_asleep:
                self._work.set()  # it sends what is held if nobody waits
            return future
        wait_s = self.send_timeout_s
        try:
            self._send(call, order, call.dedup, call.timeout_s if wait_s is None
                       else min(wait_s, call.timeout_s))
        except Timeout:
            with self._lock:
                goes_on = engine.undelivered(call)
            if not goes_on:
                raise
            attended = False  # the reader makes the next attempt when this one's time is up
        except BaseException:
            with self._lock:
                engine.forget(call)
            raise
        if attended:
            return future  # it reads for itself at once
        self._submitted += 1
        if self._submitted % _READ_EVERY == 0 and self._pump.acquire(blocking=False):
            # A burst of submits reads the answers already in on its own thread now and
            # then, so the reader thread is not woken to read beside it (two busy threads
            # hand the GIL back and forth on every frame).
            try:
                self._drain()
            finally:
                self._last_read = time.monotonic()
                self._pump.release()
        if self._reader_asleep:
            self._work.set()  # futures nobody waits on may need the reader
        return future

    def _flush(self) -> None:
        """Send the calls held back, as one batch; a send that fails fails those calls."""
        with self._lock:
            call = self._engine.take_held(self._refused)
            if call is None:
                return
            order = self._engine.order(call)
        wait_s = self.send_timeout_s
        self._attempt(call, order, call.timeout_s if wait_s is None
                      else min(wait_s, call.timeout_s))

    def _refused(self, group: Group) -> None:
        # A processor without the batch extension refused a coalesced batch: its calls go
        # again one per message, and calls are no longer coalesced.
        log.info("client %s: a processor refused a batch of %d calls; sending them one "
                 "by one, and no longer coalescing", self.topic, len(group.handles))
        with self._lock:
            calls = [(call, self._engine.order(call)) for call in self._engine.refused(group)]
        for call, order in calls:
            self._attempt(call, order, 0)

    def _attempt(self, call: Call, order: tuple[str, ...], wait_s: float) -> None:
        # Send an attempt nobody waits on to raise: what stops it fails the call instead.
        try:
            self._send(call, order, call.dedup, wait_s)
        except Timeout as exc:
            with self._lock:
                goes_on = self._engine.undelivered(call)
            if not goes_on:
                completions(((call.handle, None, exc),))
            elif self._reader_asleep:
                self._work.set()  # the reader makes the next attempt
        except Exception as exc:
            with self._lock:
                self._engine.forget(call)
            completions(((call.handle, None, exc),))

    def _wait_for_room(self, timeout_s: float) -> None:
        # max_in_flight requests awaiting an answer: read answers (or wait for whoever
        # reads) until one ends; calls end by themselves at their deadlines, so this wait
        # is bounded too.
        deadline = time.monotonic() + timeout_s
        engine = self._engine
        if engine.held:
            self._flush()
        while engine.full:
            engine.check_open()
            left = deadline - time.monotonic()
            if left <= 0:
                raise SendTimeout(self._endpoints(), timeout_s)
            with self._lock:
                oldest = next(iter(engine.pending.values()), None)
            if oldest is not None and isinstance(oldest.handle, _CallFuture):
                self._await(oldest.handle, min(left, _TICK_S))
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
    ) -> Iterator[Any]:
        """Call the processors with every value; iterate over the results in input order.

        It streams: values are read a chunk at a time and at most ``window`` are in flight,
        so memory stays bounded for an input of any length. When every processor the client
        is ready with advertised the batch extension, up to ``batch_size`` values travel in
        one message (a batch); otherwise one message per value. A batch refused by a
        processor (one without the extension joined later) is sent again one value per
        message, and batching stops for the rest of the map.

        Example::

            total = sum(client.map(range(1_000_000)))

        Args:
            values: the request values; any iterable, read lazily.
            timeout_s: the time one attempt of a message (a batch, or one value) may take.
            retries: attempts after the first, per message, with the same id (a batch is
                sent again whole, and answered from the replay window if it already ran).
            return_exceptions: yield a failed value's error object in its place, instead of
                raising it when its result is reached (which ends the iteration).
            batch_size: most values in one batch (fewer if a processor takes fewer).
            window: most values in flight (default: four batches, at least 1,000).

        Raises (when the result is reached, unless ``return_exceptions``):
            RemoteError: the job failed for that value (its own error; other values are
                unaffected), or the processor refused it.
            CallTimeout, ProcessorsGone, SendTimeout, ClosedError, EncodeError: that value's
                message failed so.
            NotReady: the readiness handshake failed (raised by the first ``next``).
            ValueError: bad ``timeout_s``, ``retries``, ``batch_size`` or ``window`` (at once).
        """
        flow = self._map_flow(values, timeout_s, retries, batch_size, window)
        return self._map(flow, timeout_s, retries, return_exceptions)

    def _batch_size(self, wanted: int) -> int:
        with self._lock:  # the engine is read by the reader thread too
            return self._engine.batch_size(wanted)

    def _map(self, flow: MapFlow, timeout_s: float | None, retries: int | None,
             return_exceptions: bool) -> Iterator[Any]:
        if not self._engine.ready:
            self.wait_ready()
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
                    if not action.failed:
                        yield from action.outcomes
                        continue
                    for outcome in action.outcomes:
                        if isinstance(outcome, BaseException) and not return_exceptions:
                            raise outcome
                        yield outcome
                elif isinstance(action, Send):
                    chunk = action.chunk
                    if chunk.batch is not None:
                        reply = self._map_submit(chunk.batch, timeout_s, retries)
                    else:
                        reply = [self._map_submit(value, timeout_s, retries)
                                 for value in chunk.values]
                else:
                    handle = action.handle
                    reply = ([_outcome(h) for h in handle] if isinstance(handle, list)
                             else _outcome(handle))
        finally:
            actions.close()
            for handle in flow.outstanding():
                for future in handle if isinstance(handle, list) else (handle,):
                    if isinstance(future, Future):
                        future.cancel()

    def _map_submit(self, value: Any, timeout_s: float | None,
                    retries: int | None) -> Future[Any] | Exception:
        try:
            # One message per value: a map batches by itself, or was asked not to.
            return self._start(value, timeout_s, None, None, whole=False, retries=retries,
                               alone=True)
        except Exception as exc:  # this value's outcome (e.g. EncodeError, SendTimeout)
            return exc

    # -- reading -------------------------------------------------------------------------

    def _ensure_reader(self) -> None:
        if self._reader is None:
            self._engine.check_open()
            reader = threading.Thread(
                target=self._read, name=f"zjobs-client-{self.topic[:8]}", daemon=True)
            reader.start()
            self._reader = reader  # only once started: close() joins what it finds here

    def _await(self, future: _CallFuture, timeout: float | None) -> None:
        """Read responses in this thread until ``future`` is done or ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        engine = self._engine
        while not future.settled:
            if engine.held:
                self._flush()  # whoever waits sends what is held
                continue
            left = _TICK_S if deadline is None else min(_TICK_S, deadline - time.monotonic())
            if left <= 0:
                return
            if self._closed.is_set():
                wait([future], left)  # close() fails it
                continue
            if not self._pump.acquire(blocking=False):
                with self._lock:
                    self._wanting += 1  # the reader thread hands the socket over
                try:
                    got = self._pump.acquire(timeout=left)
                finally:
                    with self._lock:
                        self._wanting -= 1
                if not got:
                    continue
            try:
                until = time.monotonic() + left
                while (not future.settled and self._pump_once(until)
                       and time.monotonic() < until):
                    pass
                if future.settled and self._engine.pending:
                    self._drain()  # the next waiters find their answers already in
            finally:
                self._last_read = time.monotonic()
                self._pump.release()

    def _drain(self) -> None:
        # Dispatch the responses already queued, without waiting for more.
        receive = self.receiver.receive
        for _ in range(_DRAIN):
            try:
                response = receive(0)
            except (ReceiveTimeout, ClosedError):
                return
            except Exception as exc:
                self._broken(exc)
                return
            self._dispatch(response)

    def _read(self) -> None:
        try:
            self._read_loop()
        except Exception as exc:  # a bug must not leave every call to its timeout
            self._broken(exc)

    def _read_loop(self) -> None:
        # The reader thread: reads only for futures nobody waits on (see the module doc).
        closed, work, engine = self._closed, self._work, self._engine
        while not closed.is_set() and engine.broken is None:
            work.clear()
            if engine.held:
                due = engine.held_due() - time.monotonic()
                if due <= 0:
                    self._flush()  # nobody waited for these: they go after linger_s
                elif not engine.pending:
                    work.wait(min(due, _GRACE_S))
                    continue
            if len(engine.pending) <= self._attended and not engine.held:
                # Nothing pending that no thread waits for: only look now and then, without
                # waiting on the socket, at what came meanwhile (heartbeats: processors
                # that came back). A reader blocked in a receive would answer a sequential
                # caller's calls itself, a thread hop per call.
                self._reader_asleep = True
                woken = (work.wait(_IDLE_LOOK_S) if len(engine.pending) <= self._attended
                         else True)
                self._reader_asleep = False
                if not woken and not engine.pending and self._pump.acquire(blocking=False):
                    try:
                        self._drain()
                        self._housekeeping()
                    finally:
                        self._pump.release()
                continue
            quiet = time.monotonic() - self._last_read
            if quiet < _GRACE_S or self._wanting:
                pause = _GRACE_S - quiet if quiet < _GRACE_S else _GRACE_S
                if engine.held:
                    pause = min(pause, max(0.0, engine.held_due() - time.monotonic()))
                work.wait(pause)
                continue
            if not self._pump.acquire(timeout=_GRACE_S):
                continue
            try:
                until = time.monotonic() + _TICK_S
                while (self._pump_once(until) and engine.pending and not engine.held
                       and not self._wanting and time.monotonic() < until):
                    pass
            finally:
                self._pump.release()

    def _pump_once(self, until: float) -> bool:
        """Do the housekeeping (deadlines, retries, liveness, pings to processors that came
        back), then read at most one response (waiting until ``until`` at most) and
        dispatch it. False once the client is closed or its receiver failed.

        The housekeeping comes first, while a request is on its way, so that nothing but
        the dispatch stands between a response and its caller; when it completed calls
        itself, nothing is read (the caller's may be one of them)."""
        engine = self._engine
        if self._closed.is_set() or engine.broken is not None:
            return False
        if self._changes or self._drain_at <= time.monotonic():
            self._apply_changes(time.monotonic())
        if self._housekeeping():
            return True
        next_deadline = engine.next_deadline()
        end = until if next_deadline is None else min(until, next_deadline)
        if engine.held:
            end = min(end, engine.held_due())
        try:
            response: Response | None = self.receiver.receive(max(0.0, end - time.monotonic()))
        except ReceiveTimeout:
            response = None
        except ClosedError:
            return False
        except Exception as exc:
            self._broken(exc)
            return False
        if response is not None:
            self._dispatch(response)
        return True

    def _dispatch(self, response: Response) -> None:
        with self._lock:
            done = self._engine.receive(response)
        if done is not None:
            completions((done,))
        elif response.status == "pong":
            self._pong.set()

    def _housekeeping(self) -> bool:
        # Deadlines, retries, liveness and pings; True when it completed some call.
        engine = self._engine
        deadline = engine.next_deadline()
        failed: list[Completion] = []
        again: list[tuple[Call, tuple[str, ...]]] = []
        with self._lock:
            if deadline is not None and deadline <= time.monotonic():
                expired, failed = engine.expire()
                again = [(call, engine.order(call)) for call in expired]
            failed += engine.check_liveness()
            ping = engine.ready and engine.ping_due()
            upkeep = engine.upkeep()
        for call, order in again:
            failed += self._resend(call, order)
        completions(failed)
        if ping:
            self._send_ping(0)
        if upkeep is not None:
            self._upkeep(*upkeep)
        return bool(failed)

    def _send(self, call: Call, order: tuple[str, ...], dedup: bool,
              timeout_s: float) -> None:
        """Send ``call``'s current attempt: through the endpoints of ``order`` (the engine's
        choice, best first), or as the sender chooses without routes."""
        routed = self._routed
        if routed is None or not order:
            self.sender.send(call.request, id=call.id, reply_to=self.topic, meta=call.meta,
                             deadline_ms=call.deadline_ms, ping=call.ping, dedup=dedup,
                             timeout_s=timeout_s)
            return
        used = routed.send_via(order, call.request, id=call.id, reply_to=self.topic,
                               meta=call.meta, deadline_ms=call.deadline_ms, ping=call.ping,
                               dedup=dedup, timeout_s=timeout_s)
        if used != order[0]:
            with self._lock:
                self._engine.sent(call, used)

    def _upkeep(self, probes: list[tuple[Route, Id]], resets: list[str]) -> None:
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
                routed.send_via((route.endpoint,), None, id=rid, reply_to=self.topic,
                                ping=True, timeout_s=0)
                queued = True
            except Timeout:
                queued = False
            except ClosedError:
                return
            with self._lock:
                self._engine.probe_sent(route, rid, queued)

    def _resend(self, call: Call, order: tuple[str, ...]) -> list[Completion]:
        # Never wait here: the reader must keep reading. An attempt that cannot be queued
        # now counts as made; the next one comes after timeout_s.
        try:
            self._send(call, order, True, 0)
        except Timeout:
            call.undelivered += 1
        except ClosedError:
            pass  # closing: close() fails the call
        except Exception as exc:
            with self._lock:
                return self._engine.resend_failed(call, exc)
        return []

    def _broken(self, exc: Exception) -> None:
        # The receiver failed for good: every waiting call and every new one gets the error
        # at once, instead of a reader logging the same failure in a loop.
        log.error("client %s: receiving failed, failing its calls: %r", self.topic, exc)
        with self._lock:
            failed = self._engine.fail(exc)
        completions(failed)

    # -- membership ----------------------------------------------------------------------

    def update_endpoints(self, requests: Iterable[str], responses: Iterable[str]) -> None:
        """Make the processors at these endpoints the ones this client talks to.

        New response endpoints are subscribed before new request endpoints are connected,
        so that the first answers of a new processor find the subscription (best effort:
        ZeroMQ cannot tell when a subscription reached a publisher). A removed request
        endpoint gets no new requests at once; a removed response endpoint stays
        subscribed for one ``timeout_s`` more, so the calls in flight there are answered,
        or else retried elsewhere by the usual retries. Needs the client of
        :meth:`connect` (ZeroMQ sender and receiver).

        Raises:
            ConnectError: an endpoint is malformed (the others are applied).
            ClosedError: the client is closed.
            TypeError: the sender or receiver does not connect to endpoints.
        """
        if not isinstance(self.sender, (SocketPeer, RoutedSender)) or not isinstance(
                self.receiver, SocketPeer):
            raise TypeError(f"update_endpoints needs ZeroMQ sockets, not {self.sender!r}, "
                            f"{self.receiver!r}")
        change = _Change(set(requests), set(responses))
        with self._lock:
            self._changes.append(change)
            # Readiness counts the processors visible now; new ones are pinged once heard.
            self._engine.expect(max(1, len(change.requests)))
        # Whoever reads the receiver applies it (the SUB socket is not thread-safe): a caller
        # or the reader thread at its next look (<= a tick), or this thread if none does.
        while not change.done.is_set():
            if self._closed.is_set():
                raise ClosedError("client is closed")
            if self._pump.acquire(timeout=_TICK_S):
                try:
                    self._apply_changes(time.monotonic())
                finally:
                    self._pump.release()
        if change.error is not None:
            raise change.error

    def _apply_changes(self, now: float) -> None:
        # Holds _pump. The sender's connect/disconnect take its own lock against sends.
        sender, receiver = self.sender, self.receiver
        assert isinstance(sender, (SocketPeer, RoutedSender))
        assert isinstance(receiver, SocketPeer)
        with self._lock:
            changes, self._changes = self._changes, []
        for change in changes:
            try:
                for endpoint in sorted(change.responses - set(receiver.endpoints)):
                    receiver.connect(endpoint)
                for endpoint in change.responses:
                    self._draining.pop(endpoint, None)
                for endpoint in set(receiver.endpoints) - change.responses:
                    self._draining.setdefault(endpoint, now + self.timeout_s)
                for endpoint in sorted(change.requests - set(sender.endpoints)):
                    sender.connect(endpoint)
                    with self._lock:
                        self._engine.add_route(endpoint)
                for endpoint in sorted(set(sender.endpoints) - change.requests):
                    with self._lock:
                        self._engine.remove_route(endpoint)
                    sender.disconnect(endpoint)
            except ZJobsError as exc:
                change.error = exc
            finally:
                change.done.set()
        for endpoint, until in list(self._draining.items()):
            if until <= now:
                del self._draining[endpoint]
                receiver.disconnect(endpoint)
        self._drain_at = min(self._draining.values(), default=_NEVER)

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the reader, fail every pending call with :class:`ClosedError`, close the
        sender and receiver. Idempotent."""
        if self._closed.is_set():
            return
        if self.watcher is not None:
            self.watcher.close()
        self._closed.set()
        self._work.set()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join()
        with self._pump:  # a caller reading the receiver stops at its next look (<= a tick)
            pass
        with self._lock:
            failed = self._engine.close()
        completions(failed)
        self.sender.close()
        self.receiver.close()
