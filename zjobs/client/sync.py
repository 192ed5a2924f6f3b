"""The Client: a sender plus a receiver on a private topic, correlating responses by id.

``call`` waits for one response; ``submit`` returns a ``concurrent.futures.Future`` so
that thousands of requests can be in flight at once. Sends happen in the caller's thread.

Reading: a thread that waits for a response (``call``, ``future.result()``, the
handshake) reads the socket itself, dispatching everybody's responses, so a synchronous
call costs no thread hop and a pipelined loop runs on one thread, as a hand-written loop
would. pyzmq releases the GIL around every send and receive, so two busy Python threads
would hand the GIL back and forth on every frame. A background thread reads only for
futures nobody waits on (callbacks, ``as_completed``), once no caller has read for
``_GRACE_S``, and hands the socket back as soon as a caller asks for it.

With ``retries=N`` a call is the ZeroMQ guide's Lazy Pirate: a request unanswered within
``timeout_s`` is sent again with the same id (by the reader thread, without waiting), up
to N more times; the first response completes the call and later ones are ignored, so the
caller gets exactly one result. Processors with a replay window answer a repeat they have
already run from that window instead of running the job again.
"""

from __future__ import annotations

import heapq
import inspect
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError, wait
from typing import Any, Self

import zmq

from zjobs.core.monitor import ProcessorMonitor
from zjobs.errors import (
    CallTimeout,
    ClosedError,
    NotReady,
    ProcessorsGone,
    ReceiveTimeout,
    Timeout,
    ZJobsError,
)
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.receiver import McReceive, ZmqReceiver
from zjobs.transport.sender import IdGenerator, MpSend, ZmqSender
from zjobs.transport.sockets import ClientSecurity, endpoint_list
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC
from zjobs.wire.protocol import PONG, Id, Meta, Response

__all__ = ["Client"]

log = logging.getLogger(__name__)

_TICK_S = 0.05  # longest a reader waits before checking deadlines and closing
_GRACE_S = 0.02  # the background reader steps in once no caller has read for this long
_DRAIN = 256  # responses a waiter dispatches from the queue after its own came in


# concurrent.futures' states of a future that is done (its _state values, stable since 3.2).
_SETTLED = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED"})


class _CallFuture(Future[Any]):
    """A future whose ``result()``/``exception()`` read the client's socket while waiting."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self._client = client

    @property
    def settled(self) -> bool:
        """``done()`` without taking the future's lock (a plain read of its state, for hot
        loops). True from the moment the state changes, so also inside done-callbacks."""
        return self._state in _SETTLED

    def result(self, timeout: float | None = None) -> Any:
        """The response value; reads responses itself while it waits (see the module doc)."""
        if not self.settled:
            self._client._await(self, timeout)
        # _await returned: done, or the whole timeout spent (then fail now, not wait again).
        return super().result(None if self.settled or timeout is None else 0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The call's exception, or None; reads responses itself while it waits."""
        if not self.settled:
            self._client._await(self, timeout)
        return super().exception(None if self.settled or timeout is None else 0)



class _Pending:
    __slots__ = ("attempts", "deadline_ms", "future", "meta", "request", "retries", "timeout_s",
                 "whole")

    def __init__(self, future: Future[Any], timeout_s: float, whole: bool, retries: int = 0,
                 request: Any = None, meta: Meta | None = None,
                 deadline_ms: int | None = None) -> None:
        self.future = future
        self.timeout_s = timeout_s  # per attempt
        self.whole = whole  # complete with the Response itself, not its value
        self.retries = retries  # resends left
        self.attempts = 1
        self.request = request  # kept only to be sent again
        self.meta = meta
        self.deadline_ms = deadline_ms


class Client:
    """Calls processors: sends requests, waits for their responses.

    Build it with :meth:`connect` (ZeroMQ endpoints), from a processor
    (``processor.client()``), or from any :class:`MpSend` and :class:`McReceive` pair, which
    the client then owns and closes.

    Args:
        sender: where requests go.
        receiver: where responses come from; the client subscribes it to its private topic.
        timeout_s: the default time one attempt of a call may take; after the last attempt
            its future fails with :class:`CallTimeout`.
        ready_timeout_s: how long the readiness handshake may take.
        expect_processors: how many distinct processors must answer a ping before the client
            counts as ready (load balancing over N processors needs all N subscribed).
        topic: the private reply topic; random (32 hex characters) by default.
        retries: the default number of times an unanswered request is sent again (same id)
            before the call fails; 0 sends each request once (at most once).
        liveness: when set, listen to processor heartbeats and fail the waiting calls with
            :class:`ProcessorsGone` as soon as every processor heard from has been silent
            for this many heartbeat intervals (or said it stopped). Needs a receiver with a
            ``monitor`` attribute (:class:`ZmqReceiver`).
    """

    def __init__(
        self,
        sender: MpSend,
        receiver: McReceive,
        *,
        timeout_s: float = 30.0,
        ready_timeout_s: float = 10.0,
        expect_processors: int = 1,
        topic: str | None = None,
        retries: int = 0,
        liveness: int | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must not be negative")
        self.sender = sender
        self.receiver = receiver
        self.timeout_s = timeout_s
        self.retries = retries
        self.ready_timeout_s = ready_timeout_s
        self.expect_processors = expect_processors
        self.topic = topic or secrets.token_hex(16)
        self.unmatched = 0
        """Responses on this client's topic that answered no pending call (late, or foreign)."""
        self.resent = 0
        """Requests sent again because an attempt got no answer in time."""
        self.replays = 0
        """Calls answered by a processor from its replay window (a repeat it had run)."""
        self._ids = IdGenerator()
        self._pending: dict[Id, _Pending] = {}
        self._deadlines: list[tuple[float, Id]] = []
        self._lock = threading.Lock()
        self._ready_lock = threading.Lock()
        self._ready = False
        self._pongs: dict[Id, float] = {}
        self._pong_from: set[str] = set()
        self._pong_event = threading.Event()
        self._closed = threading.Event()
        self._reader: threading.Thread | None = None
        # The receiver is read only by the holder of _pump: a caller waiting for a response,
        # or the reader thread. Reentrant, so close() may run from a done-callback.
        self._pump = threading.RLock()
        self._work = threading.Event()  # wakes the reader thread from its sleep
        self._reader_asleep = False  # waiting for _work with nothing pending
        self._wanting = 0  # callers waiting for the socket: the reader thread hands it over
        self._last_read = 0.0  # monotonic time a caller last read the socket
        # Senders that take a per-send timeout (ZmqSender) get bounded pings and resends
        # that never block the reader, and retried requests marked for the processor's
        # replay window; any other MpSend is called as it is.
        try:
            params = set(inspect.signature(sender.send).parameters)
        except (TypeError, ValueError):  # no signature to read: assume neither
            params = set()
        self._timed = "timeout_s" in params
        self._marks_dedup = "dedup" in params
        self.monitor: ProcessorMonitor | None = None
        """What the client learns from heartbeats (when ``liveness`` is set)."""
        self._next_liveness_check = 0.0
        if liveness is not None:
            if not hasattr(receiver, "monitor"):
                raise TypeError(f"liveness needs a receiver that takes a monitor, not {receiver!r}")
            monitor = getattr(receiver, "monitor", None) or ProcessorMonitor(liveness)
            monitor.liveness = liveness
            receiver.monitor = monitor
            self.monitor = monitor
            receiver.subscribe(HEARTBEAT_TOPIC)
        receiver.subscribe(self.topic)

    @classmethod
    def connect(
        cls,
        requests: str | Iterable[str],
        responses: str | Iterable[str],
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: ClientSecurity | None = None,
        send_timeout_s: float | None = None,
        expect_processors: int | None = None,
        immediate: bool = True,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        **options: Any,
    ) -> Client:
        """A client over ZeroMQ, connected to processors' request and response endpoints.

        By default the readiness handshake waits for as many processors as there are
        request endpoints.

        Args:
            send_timeout_s: how long a call may wait to queue its request when no processor
                can take it; None waits up to the call's ``timeout_s``.
            immediate: ZMQ_IMMEDIATE on the sender (the default): requests go only to
                processors whose connection is up, so a processor that died is skipped at
                once instead of collecting requests (and retries) until it comes back.
                While no processor is connected, sends wait (see ``send_timeout_s``).
            keepalive: ZMTP heartbeats on both sockets, so a dead or stalled processor's
                connections are dropped (None: off).

        Other options are those of :class:`Client`.
        """
        request_eps, response_eps = endpoint_list(requests), endpoint_list(responses)
        sender = ZmqSender(request_eps, context=context, security=security,
                           send_timeout_s=send_timeout_s, immediate=immediate,
                           keepalive=keepalive)
        try:
            receiver = ZmqReceiver(response_eps, topics=(), context=context, security=security,
                                   keepalive=keepalive)
        except BaseException:
            sender.close()
            raise
        expected = expect_processors or max(1, len(request_eps))
        try:
            return cls(sender, receiver, expect_processors=expected, **options)
        except BaseException:
            sender.close()
            receiver.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed.is_set() else "ready" if self._ready else "new"
        return (f"<Client {state} topic={self.topic} pending={len(self._pending)} "
                f"sender={self.sender!r} receiver={self.receiver!r}>")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """How many calls are waiting for a response."""
        return len(self._pending)

    # -- readiness -----------------------------------------------------------------------

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Ping until ``expect_processors`` distinct processors answered (the slow-joiner rule).

        Called by the first ``call``/``submit``; call it yourself to fail early.

        Raises:
            NotReady: not enough processors answered within ``timeout_s``.
            ClosedError: the client is closed.
        """
        with self._ready_lock:
            if self._closed.is_set():
                raise ClosedError("client is closed")
            if self._ready:
                return
            self._ensure_reader()
            limit = self.ready_timeout_s if timeout_s is None else timeout_s
            deadline = time.monotonic() + limit
            interval = 0.002
            while len(self._pong_from) < self.expect_processors:
                if self._closed.is_set():
                    raise ClosedError("client is closed")
                if time.monotonic() >= deadline:
                    raise NotReady(getattr(self.sender, "endpoints", []), limit,
                                   len(self._pong_from), self.expect_processors)
                self._pong_event.clear()
                self._send_ping(max(0.0, min(0.1, deadline - time.monotonic())))
                until = min(deadline, time.monotonic() + interval)
                if self._pump.acquire(blocking=False):
                    try:
                        while (not self._pong_event.is_set() and time.monotonic() < until
                               and self._pump_once(until)):
                            pass
                    finally:
                        self._last_read = time.monotonic()
                        self._pump.release()
                else:
                    self._pong_event.wait(interval)
                interval = min(interval * 1.5, 0.1)
            self._ready = True
            self._pongs.clear()

    def _send_ping(self, timeout_s: float) -> Id:
        rid = self._ids()
        self._pongs[rid] = time.monotonic()
        try:
            self._send(None, rid, ping=True, timeout_s=timeout_s)
        except Timeout:
            pass  # nobody takes requests yet; the handshake keeps trying until its deadline
        return rid

    def _send(self, request: Any, rid: Id, *, meta: Meta | None = None,
              deadline_ms: int | None = None, ping: bool = False,
              timeout_s: float | None = None, dedup: bool = False) -> None:
        # timeout_s None: the sender's own send timeout.
        extra: dict[str, Any] = {}
        if self._timed and timeout_s is not None:
            extra["timeout_s"] = timeout_s
        if dedup and self._marks_dedup:
            extra["dedup"] = True
        self.sender.send(request, id=rid, reply_to=self.topic, meta=meta,
                         deadline_ms=deadline_ms, ping=ping, **extra)

    def ping(self, timeout_s: float | None = None) -> float:
        """Round-trip one ping once the client is ready; return the seconds it took.

        Raises:
            NotReady: the readiness handshake failed (no processor answers).
            CallTimeout: no pong in time.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        if not self._ready:
            # A ping sent before the subscription is live could be lost (slow joiner).
            self.wait_ready(limit)
        self._ensure_reader()
        future = _CallFuture(self)
        start = time.monotonic()
        rid = self._register(_Pending(future, limit, False))
        try:
            self.sender.send(None, id=rid, reply_to=self.topic, ping=True)
        except BaseException:
            self._forget(rid)
            raise
        future.result()
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
        when None) was answered within ``timeout_s`` (likewise), and with
        :class:`ClosedError` if the client closes first. Cancelling it ignores a late response.

        Raises:
            EncodeError: the request cannot be encoded (nothing was sent).
            SendTimeout, NotReady, ClosedError: the request could not be sent.
        """
        return self._submit(request, timeout_s, meta, deadline_ms, whole=False, retries=retries)

    def _submit(self, request: Any, timeout_s: float | None, meta: Meta | None,
                deadline_ms: int | None, *, whole: bool,
                retries: int | None = None, attended: bool = False) -> _CallFuture:
        if not self._ready:
            self.wait_ready()
        future = _CallFuture(self)
        limit = self.timeout_s if timeout_s is None else timeout_s
        retries = self.retries if retries is None else retries
        pending = _Pending(future, limit, whole, retries,
                           request if retries else None, meta, deadline_ms)
        rid = self._register(pending)
        # A sender with no send timeout of its own waits at most one attempt's time.
        own = getattr(self.sender, "send_timeout_s", None)
        try:
            self._send(request, rid, meta=meta, deadline_ms=deadline_ms,
                       timeout_s=limit if own is None else None, dedup=retries > 0)
        except BaseException:
            self._forget(rid)
            raise
        if self._reader_asleep and not attended:
            # A call about to wait reads for itself; anything else may need the reader.
            self._work.set()
        return future

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
        """
        return self._submit(request, timeout_s, meta, deadline_ms, whole=False,
                            retries=retries, attended=True).result()

    def call_response(self, request: Any, *, timeout_s: float | None = None,
                      meta: Meta | None = None, retries: int | None = None) -> Response:
        """Like :meth:`call`, but return the whole :class:`Response` (error responses too)."""
        future = self._submit(request, timeout_s, meta, None, whole=True, retries=retries,
                              attended=True)
        return future.result()  # type: ignore[no-any-return]

    def _register(self, pending: _Pending) -> Id:
        if self._closed.is_set():
            raise ClosedError("client is closed")
        rid = self._ids()
        deadline = time.monotonic() + pending.timeout_s
        with self._lock:
            # Checked again under the lock: close() sets _closed before it takes the lock to
            # fail what is pending, so a call registered after that would hang forever.
            if self._closed.is_set():
                raise ClosedError("client is closed")
            self._pending[rid] = pending
            heapq.heappush(self._deadlines, (deadline, rid))
        return rid

    def _forget(self, rid: Id) -> None:
        with self._lock:
            self._pending.pop(rid, None)

    # -- the reader thread ---------------------------------------------------------------

    def _ensure_reader(self) -> None:
        if self._reader is None:
            if self._closed.is_set():
                raise ClosedError("client is closed")
            self._reader = threading.Thread(
                target=self._read, name=f"zjobs-client-{self.topic[:8]}", daemon=True)
            self._reader.start()

    def _await(self, future: _CallFuture, timeout: float | None) -> None:
        """Read responses in this thread until ``future`` is done or ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not future.settled:
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
                if future.settled and self._pending:
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
            self._dispatch(response)

    def _read(self) -> None:
        # The reader thread: reads only for futures nobody waits on (see the module doc).
        closed, work = self._closed, self._work
        while not closed.is_set():
            work.clear()
            if not self._pending and self.monitor is None:
                self._reader_asleep = True
                if not self._pending:  # checked again: a submit may have come meanwhile
                    work.wait()
                self._reader_asleep = False
                continue
            quiet = time.monotonic() - self._last_read
            if quiet < _GRACE_S or self._wanting:
                work.wait(_GRACE_S - quiet if quiet < _GRACE_S else _GRACE_S)
                continue
            if not self._pump.acquire(timeout=_GRACE_S):
                continue
            try:
                until = time.monotonic() + _TICK_S
                while (self._pump_once(until) and (self._pending or self.monitor is not None)
                       and not self._wanting and time.monotonic() < until):
                    pass
            finally:
                self._pump.release()

    def _pump_once(self, until: float) -> bool:
        """Read at most one response (waiting until ``until``), dispatch it, and do the
        housekeeping (deadlines, retries, liveness). False once the client is closed."""
        if self._closed.is_set():
            return False
        try:
            response = self.receiver.receive(self._wait_s(until))
        except ReceiveTimeout:
            response = None
        except ClosedError:
            return False
        except Exception:
            log.exception("client %s: receiving failed", self.topic)
            return False
        if response is not None:
            self._dispatch(response)
        now = time.monotonic()
        if self._deadlines and self._deadlines[0][0] <= now:
            self._expire()
        if self.monitor is not None and now >= self._next_liveness_check:
            self._next_liveness_check = now + _TICK_S
            if self._pending and self.monitor.all_gone():
                self._fail_all(lambda rid, p: ProcessorsGone(rid, p.timeout_s, p.attempts))
        return True

    def _wait_s(self, until: float) -> float:
        end = min(until, self._deadlines[0][0]) if self._deadlines else until
        return max(0.0, end - time.monotonic())

    def _dispatch(self, response: Response) -> None:
        rid = response.id
        if rid is None:
            self.unmatched += 1
            return
        if response.status == PONG and self._pongs.pop(rid, None) is not None:
            self._pong_from.add(response.instance or response.processor or str(rid))
            self._pong_event.set()
        with self._lock:
            pending = self._pending.pop(rid, None)
        if pending is None:
            if response.status != PONG:
                self.unmatched += 1
            return
        future = pending.future
        if response.replay:
            self.replays += 1
        try:
            if pending.whole:
                future.set_result(response)
            elif response.error is not None:
                try:
                    response.unwrap()
                except Exception as exc:
                    future.set_exception(exc)
            else:
                future.set_result(response.value)
        except InvalidStateError:
            pass  # the caller cancelled it

    def _expire(self) -> None:
        now = time.monotonic()
        expired: list[tuple[Id, _Pending]] = []
        again: list[tuple[Id, _Pending]] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, rid = heapq.heappop(self._deadlines)
                pending = self._pending.get(rid)
                if pending is None:
                    continue
                if pending.retries > 0 and not pending.future.done():
                    pending.retries -= 1
                    pending.attempts += 1
                    heapq.heappush(self._deadlines, (now + pending.timeout_s, rid))
                    again.append((rid, pending))
                else:
                    del self._pending[rid]
                    expired.append((rid, pending))
        for rid, pending in again:
            self.resent += 1
            try:
                # Never wait here: the reader must keep reading. An attempt that cannot be
                # queued now counts as made; the next one comes after timeout_s.
                self._send(pending.request, rid, meta=pending.meta,
                           deadline_ms=pending.deadline_ms, timeout_s=0, dedup=True)
            except Timeout:
                log.debug("client %s: no processor took retry %d of %r", self.topic,
                          pending.attempts - 1, rid)
            except ClosedError:
                return
            except ZJobsError:
                log.exception("client %s: resending %r failed", self.topic, rid)
        for rid, pending in expired:
            self._pongs.pop(rid, None)
            try:
                pending.future.set_exception(
                    CallTimeout(rid, pending.timeout_s, pending.attempts))
            except InvalidStateError:
                pass

    def _fail_all(self, error: Callable[[Id, _Pending], BaseException]) -> None:
        with self._lock:
            pending = list(self._pending.items())
            self._pending.clear()
            self._deadlines.clear()
        for rid, entry in pending:
            try:
                entry.future.set_exception(error(rid, entry))
            except InvalidStateError:
                pass

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the reader, fail every pending call with :class:`ClosedError`, close the
        sender and receiver. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._work.set()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join()
        with self._pump:  # a caller reading the receiver stops at its next look (<= a tick)
            pass
        self._fail_all(lambda rid, _: ClosedError(f"client closed before request {rid!r} "
                                                  "was answered"))
        self.sender.close()
        self.receiver.close()
