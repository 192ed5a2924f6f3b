"""The call engine: every decision a client makes about its calls, written once.

Pending calls and their ids, per-attempt deadlines, retries and resends, the readiness
handshake (pongs per processor instance), processors seen coming back, liveness from
heartbeats, the choice of request endpoint per call (:mod:`zjobs.core.routing`), dispatch
of responses and failing everything on close all live here. The
engine knows nothing of sockets, threads or event loops: a driver (:class:`zjobs.Client`
with threads, :class:`zjobs.AsyncClient` with asyncio) feeds it events (a call started,
its send failed, a response came, time passed, the client closed) and carries out what it
returns (send these again, complete these handles with these outcomes). Tested alone
with a fake clock.

Completions are returned, never run here: the driver completes them outside its lock, so
a done-callback may call the client again.

Deadlines are kept per distinct timeout in FIFO order (a call registered later with the
same timeout expires later), so registering and expiring cost O(1) with no heap; answered
calls leave their queue lazily and the queues are compacted when they hold far more
entries than calls pending, which keeps memory proportional to the calls in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import InvalidStateError
from typing import Any, Final, Protocol

from zjobs.core.batching import batch_limit
from zjobs.core.coalescing import (
    BATCH_ANSWER_BYTES,
    BATCH_RUN_S,
    DEFAULT_LINGER_S,
    PACE_WINDOW_S,
    Group,
    Held,
)
from zjobs.core.monitor import ProcessorMonitor
from zjobs.core.options import DEFAULT_MAX_IN_FLIGHT, ClientOptions, check_call_options
from zjobs.core.routing import Route, Routes
from zjobs.errors import CallTimeout, ClosedError, ProcessorsGone, RemoteError, ZJobsError
from zjobs.wire.codec import decode
from zjobs.wire.protocol import PONG, Id, Meta, Response

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "Call", "CallEngine", "Completion", "Handle"]

_LIVENESS_EVERY_S: Final = 0.05
_PING_FIRST_S: Final = 0.002
_PING_MAX_S: Final = 0.1
_COMPACT_EVERY: Final = 1024
_UNKNOWN_INTERVAL_S: Final = 1.0  # a processor's heartbeat interval before one is heard
_DEFAULT_OPTIONS: Final = ClientOptions()


class Handle(Protocol):
    """What a driver gives the engine to complete a call: a future of either kind
    (``concurrent.futures.Future`` and ``asyncio.Future`` both fit)."""

    def set_result(self, result: Any, /) -> None:
        """Complete with a value."""
        ...

    def set_exception(self, exception: BaseException, /) -> None:
        """Complete with an error."""
        ...

    def done(self) -> bool:
        """True once completed or cancelled."""
        ...


Completion = tuple[Handle, Any, BaseException | None]
"""A call to complete: its handle, the value, and the error (None for a value)."""


class Call:
    """One call in flight: what to send again, and how long each attempt may take."""

    __slots__ = ("attempts", "deadline_ms", "done", "expires", "handle", "id", "mark",
                 "meta", "ping", "request", "retries", "route", "size", "timeout_s",
                 "undelivered", "whole")

    def __init__(self, rid: Id, request: Any, handle: Handle, timeout_s: float, retries: int,
                 meta: Meta | None, deadline_ms: int | None, whole: bool, ping: bool,
                 expires: float) -> None:
        self.id = rid
        self.request = request
        self.handle = handle
        self.timeout_s = timeout_s
        self.retries = retries
        """Attempts left after this one."""
        self.meta = meta
        self.deadline_ms = deadline_ms
        self.whole = whole
        """Complete with the whole :class:`Response` (errors too), not its value."""
        self.ping = ping
        self.expires = expires
        """Monotonic time the current attempt gives up."""
        self.attempts = 1
        self.undelivered = 0
        """Attempts that no processor took (the sender had no room or no connection)."""
        self.done = False
        self.route: Route | None = None
        """The route the current attempt went through (None: the sender chose)."""
        self.mark = 0
        """The route's answer count when the current attempt was sent."""
        self.size = 1
        """Calls it carries: more than 1 for a coalesced batch (its handle is a Group)."""

    @property
    def dedup(self) -> bool:
        """True when the request may be sent again with the same id (it has retries), so
        the processor must remember it in its replay window."""
        return self.retries > 0 or self.attempts > 1


class CallEngine:
    """Pending calls, deadlines, retries, readiness and liveness for one client.

    Not thread-safe: a threaded driver calls it under one lock.

    Args:
        ids: makes a new request id.
        clock: monotonic seconds (a fake one in tests).
        options: the client's options, checked already (:class:`ClientOptions`): the
            default ``timeout_s`` and ``retries`` of a call, the distinct processors that
            must answer a readiness ping (``expect_processors``, 1 when None), ``liveness``
            (heartbeat intervals of silence after which a processor counts as gone; None:
            no liveness failures), ``max_in_flight`` (requests awaiting an answer at most,
            a batch of coalesced calls being one; a driver waits for room before starting
            another; None: no bound) and ``coalesce`` (most calls held back to travel as
            one batch while others are in flight, see :mod:`zjobs.core.coalescing`).
        monitor: what heartbeats told the receiver; with ``liveness`` set, waiting calls
            fail with :class:`ProcessorsGone` once every processor heard from is gone,
            and processor runs it reports that were never confirmed are pinged.
        routes: the request endpoints, when the driver's sender sends through a chosen
            one (see :mod:`zjobs.core.routing`); None: the sender balances by itself.
        linger_s: longest a held call waits for company when nobody waits for a result
            (coalescing, see :mod:`zjobs.core.coalescing`).
    """

    def __init__(
        self,
        *,
        ids: Callable[[], Id],
        clock: Callable[[], float],
        options: ClientOptions = _DEFAULT_OPTIONS,
        monitor: ProcessorMonitor | None = None,
        routes: Iterable[str] | None = None,
        linger_s: float = DEFAULT_LINGER_S,
    ) -> None:
        if not linger_s >= 0:
            raise ValueError(f"linger_s must not be negative, not {linger_s!r}")
        self.options = options
        """The options the engine was built with (``expect`` changes the count it waits
        for, not these)."""
        self.max_in_flight = options.max_in_flight
        self.ids = ids
        self.clock = clock
        self.timeout_s = options.timeout_s
        self.retries = options.retries
        self.expect_processors = options.expect_processors or 1
        self.monitor = monitor
        self.liveness = options.liveness
        self.pending: dict[Id, Call] = {}
        self.resent = 0
        """Attempts after the first (a request sent again with the same id)."""
        self.replays = 0
        """Calls answered by a processor from its replay window."""
        self.unmatched = 0
        """Responses that answered no pending call (late, duplicate, or foreign)."""
        self.returned = 0
        """Processor runs seen coming back (a new instance after the client was ready)."""
        self.closed = False
        self.broken: BaseException | None = None
        """Set when the driver could not go on (its receiver failed); new calls raise it."""
        self._queues: dict[float, deque[Call]] = {}
        self._queued = 0
        self._registered = 0
        # Readiness: readiness pings in flight, the processor runs that answered one, and
        # the runs heard of (heartbeats, responses) that have not yet answered one.
        self._pings: dict[Id, float] = {}
        self._confirmed: dict[str, str] = {}
        # What each confirmed run advertised in its pong: its extensions and batch_max.
        self._advertised: dict[str, tuple[tuple[str, ...], int | None]] = {}
        self._unconfirmed: set[str] = set()
        self._ready = False
        self._next_ping = 0.0
        self._ping_interval = _PING_FIRST_S
        self._next_liveness = 0.0
        self.routes = None if routes is None else Routes(routes, clock)
        self._probes: dict[Id, Route] = {}
        self.coalesce = options.coalesce
        self.linger_s = linger_s
        self.coalesced = 0
        """Batches of coalesced calls sent."""
        self._held = Held()
        # How fast answers come while calls are in flight: coalescing pays only when each
        # call costs the processor less than a message does (see zjobs.core.coalescing).
        self._gap: float | None = None  # seconds per answer, over the last busy window
        self._window = 0.0  # when the window being measured began
        self._window_answers = 0
        self._window_bytes = 0
        self._answer_bytes = 0.0  # body bytes per call answered, over that window
        self._busy = False  # calls were still pending after the last answer
        self._hold_limit: int | None = None  # batch_size(coalesce), until processors change
        self._batch_limit = 0  # calls the batch being held may take
        self._grouped = 0  # calls pending inside coalesced batches, beyond one per batch

    def __repr__(self) -> str:
        state = "closed" if self.closed else "ready" if self._ready else "new"
        return (f"<CallEngine {state} pending={len(self.pending)} "
                f"confirmed={len(self._confirmed)}/{self.expect_processors}>")

    # -- calls ---------------------------------------------------------------------------

    def start(self, request: Any, handle: Handle, *, timeout_s: float | None = None,
              retries: int | None = None, meta: Meta | None = None,
              deadline_ms: int | None = None, whole: bool = False,
              ping: bool = False) -> Call:
        """Register a call; the driver then sends its first attempt.

        Raises:
            ClosedError: the client is closed.
            ValueError: a negative timeout or retry count.
        """
        self.check_open()
        limit = self.timeout_s if timeout_s is None else timeout_s
        tries = self.retries if retries is None else retries
        if timeout_s is not None or retries is not None:
            check_call_options(limit, tries)
        return self._register(request, handle, limit, tries, meta, deadline_ms, whole, ping)

    def _register(self, request: Any, handle: Handle, timeout_s: float, retries: int,
                  meta: Meta | None, deadline_ms: int | None, whole: bool,
                  ping: bool) -> Call:
        call = Call(self.ids(), request, handle, timeout_s, retries, meta, deadline_ms, whole,
                    ping, self.clock() + timeout_s)
        self.pending[call.id] = call
        self._enqueue(call)
        self._registered += 1
        if self._registered % _COMPACT_EVERY == 0:
            self._compact()
        return call

    @property
    def calls_pending(self) -> int:
        """Calls waiting for an answer: each call in a coalesced batch counts, and so do
        the calls held back."""
        return len(self.pending) + self._grouped + len(self._held)

    # -- coalescing (see zjobs.core.coalescing) -------------------------------------------

    def holds(self, timeout_s: float | None, retries: int | None) -> bool:
        """Whether a plain call (no meta, no deadline, its value alone) made now is held
        back for a coalesced batch instead of sent: coalescing is on, every processor
        takes batches, other calls are in flight or held, and those held share its
        timeout and retries."""
        held = self._held
        if self.coalesce < 2 or not (self.pending or held.handles):
            return False
        if not held.handles and self._gap is None:
            return False  # no pace measured yet
        key = (self.timeout_s if timeout_s is None else timeout_s,
               self.retries if retries is None else retries)
        if held.handles and key != held.key:
            return False
        limit = self._hold_limit
        if limit is None:
            limit = self._hold_limit = self.batch_size(self.coalesce)
        if not held.handles:
            # From the answers seen lately: the batch keeps one processor busy about
            # BATCH_RUN_S (each answered gap x processors apart), and its answer stays one
            # small message (a PUB's high-water mark counts messages, not bytes).
            per_processor = (self._gap or BATCH_RUN_S) * max(1, len(self._confirmed))
            self._batch_limit = min(limit, int(BATCH_RUN_S / per_processor),
                                    int(BATCH_ANSWER_BYTES // max(1.0, self._answer_bytes)))
        return self._batch_limit > 1

    def hold(self, body: bytes, handle: Handle, timeout_s: float | None,
             retries: int | None) -> int:
        """Hold a call :meth:`holds` accepted (its value encoded as ``body``); return how
        many are held now, 0 when the batch is full and the driver should send it now
        (:meth:`take_held`).

        Raises:
            ClosedError: the client is closed.
            ValueError: a non-positive timeout or a negative retry count.
        """
        self.check_open()
        key = (self.timeout_s if timeout_s is None else timeout_s,
               self.retries if retries is None else retries)
        if timeout_s is not None or retries is not None:
            check_call_options(*key)
        count = self._held.add(body, handle, key, self.clock())
        return 0 if count >= self._batch_limit else count

    @property
    def held(self) -> int:
        """Calls held back now."""
        return len(self._held)

    def held_due(self) -> float:
        """When the calls held now must be sent even if nobody waits (inf: none held)."""
        return self._held.since + self.linger_s

    def take_held(self, refused: Callable[[Group], None]) -> Call | None:
        """The calls held, as one batch call now pending (the driver sends it like any
        call), or None when none is held. ``refused`` gets the group back if a processor
        refuses the batch whole; the driver then sends each call on its own."""
        if not self._held.handles:
            return None
        group = self._held.take(refused)
        call = self._register(group.batch(), group, *group.key, None, None, False, False)
        call.size = len(group.handles)
        self._grouped += call.size - 1
        self.coalesced += 1
        return call

    def refused(self, group: Group) -> list[Call]:
        """A processor refused a coalesced batch whole (it ran none of it): stop coalescing
        for good, and return each of its calls not yet done as a call of its own (now
        pending), for the driver to send."""
        self.coalesce = 0
        calls = []
        for body, handle in zip(group.bodies, group.handles, strict=True):
            if not handle.done() and not self.closed:
                calls.append(self._register(decode(body), handle, *group.key, None, None,
                                            False, False))
        return calls

    @property
    def full(self) -> bool:
        """True while ``max_in_flight`` requests await an answer (a coalesced batch is one:
        the bound is on answers the response path must buffer): wait for one to end."""
        limit = self.max_in_flight
        return limit is not None and len(self.pending) >= limit

    def check_open(self) -> None:
        """Raise what stops new calls: :class:`ClosedError`, or the driver's failure."""
        if self.broken is not None:
            raise ClosedError(f"client stopped: {self.broken!r}") from self.broken
        if self.closed:
            raise ClosedError("client is closed")

    def undelivered(self, call: Call) -> bool:
        """The current attempt could not be queued (no processor took it in time).

        Returns:
            True when the call goes on (a later attempt will be made when this one's time
            is up); False when it has no attempts left and is forgotten: the driver then
            raises the send error to the caller.
        """
        call.undelivered += 1
        if call.retries > 0 and not self.closed:
            return True
        self.forget(call)
        return False

    def forget(self, call: Call) -> None:
        """Drop a call without completing it (its first send raised to the caller, or it
        was cancelled)."""
        call.done = True
        if self.pending.get(call.id) is call:
            del self.pending[call.id]
            self._grouped -= call.size - 1

    def receive(self, response: Response) -> Completion | None:
        """Take in a response; return the call it completes, if any."""
        rid = response.id
        call = self.pending.pop(rid, None) if rid is not None else None
        if call is not None and call.size > 1:
            self._grouped -= call.size - 1
        instance = response.instance
        if instance is not None and instance not in self._confirmed:
            self._heard(instance)
        if call is None:
            if response.status == PONG and rid is not None and rid in self._pings:
                del self._pings[rid]
                self._confirm(response)
            elif response.status == PONG and rid is not None and rid in self._probes:
                self._probe_answered(self._probes.pop(rid), response)
            elif response.status != PONG:  # late pongs of the handshake are expected
                self.unmatched += 1
            return None
        call.done = True
        if self._busy:
            # Calls were in flight since the last answer: answers per window are the
            # processors' pace (a window long enough that reading a backlog at once
            # does not look like fast jobs).
            self._window_answers += call.size
            self._window_bytes += response.size
            elapsed = self.clock() - self._window
            if elapsed >= PACE_WINDOW_S:
                self._gap = elapsed / self._window_answers
                self._answer_bytes = self._window_bytes / self._window_answers
                self._window += elapsed
                self._window_answers = self._window_bytes = 0
        else:
            self._window, self._window_answers, self._window_bytes = self.clock(), 0, 0
        self._busy = bool(self.pending)
        route = call.route
        if route is not None:
            route.answers += 1
            if instance is not None:
                route.instance = instance
        if response.replay:
            self.replays += 1
        if call.ping:
            self._confirm(response)
        if call.whole:
            return call.handle, response, None
        if response.error is not None:
            return call.handle, None, remote_error(response)
        return call.handle, response.value, None

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`expire` may have work (None: no call pending)."""
        if not self.pending:
            return None
        fronts = [queue[0].expires for queue in self._queues.values() if queue]
        return min(fronts) if fronts else None

    def expire(self) -> tuple[list[Call], list[Completion]]:
        """Attempts whose time is up: the calls to send again (same id; each counted in
        :attr:`resent`), and the calls that ran out of attempts, failed with
        :class:`CallTimeout` (its ``attempts`` says how many were made)."""
        now = self.clock()
        again: list[Call] = []
        failed: list[Completion] = []
        for queue in self._queues.values():
            while queue and queue[0].expires <= now:
                call = queue.popleft()
                self._queued -= 1
                if call.done:
                    continue
                if call.route is not None and self.routes is not None:
                    self.routes.timed_out(call.route, call.mark)
                if call.retries > 0 and not call.handle.done():
                    call.retries -= 1
                    call.attempts += 1
                    call.expires = now + call.timeout_s
                    self._enqueue(call)
                    self.resent += 1
                    again.append(call)
                    continue
                self.forget(call)
                failed.append((call.handle, None, CallTimeout(call.id, call.timeout_s,
                                                              call.attempts)))
        return again, failed

    def resend_failed(self, call: Call, error: BaseException) -> list[Completion]:
        """Sending a later attempt raised something other than "no room now": the call
        cannot go on, so it fails with that error instead of waiting for nothing."""
        if call.done:
            return []
        self.forget(call)
        return [(call.handle, None, error)]

    def check_liveness(self) -> list[Completion]:
        """With liveness on: fail every waiting call with :class:`ProcessorsGone` once no
        processor heard from is alive; note processor runs heard of but not confirmed."""
        monitor = self.monitor
        if monitor is None:
            return []
        now = self.clock()
        if now < self._next_liveness:
            return []
        self._next_liveness = now + _LIVENESS_EVERY_S
        for alive in monitor.alive():
            if alive.instance not in self._confirmed:
                self._heard(alive.instance)
        gone = [instance for instance in self._confirmed
                if (peer := monitor.peer(instance)) is not None
                and not peer.alive(now, monitor.liveness)]
        for instance in gone:
            del self._confirmed[instance]
            self._advertised.pop(instance, None)
            self._hold_limit = None
        if self.liveness is None or not self.pending or not monitor.all_gone():
            return []
        return self.fail_all(lambda call: ProcessorsGone(call.id, call.timeout_s,
                                                         call.attempts))

    def fail_all(self, error: Callable[[Call], BaseException]) -> list[Completion]:
        """Forget every pending call, and every held one; return them failed with
        ``error(call)`` (a held call fails with the error of the batch it would have been)."""
        if self._held.handles:
            group = self._held.take(lambda group: None)
            self._register(group.batch(), group, *group.key, None, None, False, False)
        calls = list(self.pending.values())
        self.pending.clear()
        self._grouped = 0
        self._queues.clear()
        self._queued = 0
        failed: list[Completion] = []
        for call in calls:
            call.done = True
            failed.append((call.handle, None, error(call)))
        return failed

    def close(self) -> list[Completion]:
        """Stop taking calls; fail every pending one with :class:`ClosedError`."""
        self.closed = True
        return self.fail_all(lambda call: ClosedError(
            f"client closed before request {call.id!r} was answered"))

    def fail(self, error: BaseException) -> list[Completion]:
        """The driver cannot go on (its receiver failed): fail every pending call with
        ``error`` and refuse new ones with it."""
        self.broken = error
        return self.fail_all(lambda call: error)

    # -- routes ----------------------------------------------------------------------------

    def order(self, call: Call) -> tuple[str, ...]:
        """Where ``call``'s next attempt should go, best first (empty without routes); the
        call is noted as sent through the first (see :meth:`sent` when another took it)."""
        routes = self.routes
        if routes is None:
            return ()
        order = routes.order(call.route)
        if order:
            route = call.route = routes.get(order[0])
            if route is not None:
                call.mark = route.answers
        return order

    def sent(self, call: Call, endpoint: str) -> None:
        """The sender put ``call``'s attempt through ``endpoint`` (not the first in order)."""
        if self.routes is not None and (call.route is None or call.route.endpoint != endpoint):
            route = call.route = self.routes.get(endpoint)
            if route is not None:
                call.mark = route.answers

    def upkeep(self) -> tuple[list[tuple[Route, Id]], list[str]] | None:
        """What the routes need now, when some route is out of rotation (None otherwise):
        probes to send, each through its route (the driver sends each without waiting and
        reports with :meth:`probe_sent`), and endpoints whose connections to reset, the
        routes whose processor has gone silent (see :mod:`zjobs.core.routing`)."""
        routes = self.routes
        if routes is None or not routes.degraded:
            return None
        if len(self._probes) > 256:  # queued to connections that never answer; a late
            self._probes.clear()      # pong of one is ignored like any late pong
        probes = []
        for route in routes.probes_due():
            rid = self.ids()
            self._probes[rid] = route
            probes.append((route, rid))
        resets: list[str] = []
        monitor = self.monitor
        if monitor is not None:
            now = self.clock()

            def silent(route: Route) -> bool:
                # No heartbeat for liveness intervals since it left the rotation (or since
                # the last one): gone, not busy (a busy processor keeps heartbeating).
                peer = None if route.instance is None else monitor.peer(route.instance)
                heard = 0.0 if peer is None else peer.last_heard
                interval = _UNKNOWN_INTERVAL_S if peer is None or peer.interval_s is None \
                    else peer.interval_s
                assert route.suspected is not None
                return now - max(heard, route.suspected) >= monitor.liveness * interval

            for route in routes.to_reset(silent):
                self._forget_probes(route)  # its queued probes go with the connection
                resets.append(route.endpoint)
        return probes, resets

    def probe_sent(self, route: Route, rid: Id, queued: bool) -> None:
        """Whether a probe could be queued; an unqueued one is forgotten."""
        if not queued:
            self._probes.pop(rid, None)
        if self.routes is not None:
            self.routes.probe_sent(route, queued)

    def add_route(self, endpoint: str) -> None:
        """A request endpoint joined (membership)."""
        if self.routes is not None:
            self.routes.add(endpoint)

    def remove_route(self, endpoint: str) -> None:
        """A request endpoint left (membership); its calls in flight are answered or retried."""
        if self.routes is not None:
            route = self.routes.get(endpoint)
            self.routes.remove(endpoint)
            if route is not None:
                self._forget_probes(route)

    def _probe_answered(self, route: Route, response: Response) -> None:
        if self.routes is not None:
            self.routes.probe_answered(route, response.instance)
        self._forget_probes(route)
        self._confirm(response)

    def _forget_probes(self, route: Route) -> None:
        for rid in [rid for rid, r in self._probes.items() if r is route]:
            del self._probes[rid]

    # -- readiness -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once ``expect_processors`` distinct processors answered a readiness ping."""
        return self._ready

    @property
    def confirmed(self) -> int:
        """How many distinct processor runs have answered a readiness ping."""
        return len(self._confirmed)

    @property
    def unconfirmed(self) -> frozenset[str]:
        """Processor runs heard of (heartbeats, responses) that have not answered a ping."""
        return frozenset(self._unconfirmed)

    def batch_size(self, wanted: int) -> int:
        """How many items one batch may hold now (the batch extension): ``wanted`` at most,
        and 0 unless every processor run confirmed advertised batches in its pong and no
        run heard of is still unconfirmed (it might not take them)."""
        if self._unconfirmed:
            return 0
        return batch_limit(self._advertised.values(), wanted)

    def readiness_ping(self) -> Id:
        """A new readiness ping's id (the driver sends a ping with it)."""
        rid = self.ids()
        self._pings[rid] = self.clock()
        return rid

    def ping_due(self) -> bool:
        """True when the driver should send a readiness ping now: the client is not ready
        yet, or a processor run was heard of that has not been confirmed (a processor that
        came back). Backs off from 2 ms to 100 ms between pings."""
        if self._ready and not self._unconfirmed:
            return False
        now = self.clock()
        if now < self._next_ping:
            return False
        self._next_ping = now + self._ping_interval
        self._ping_interval = min(self._ping_interval * 1.5, _PING_MAX_S)
        if len(self._pings) > 64:  # unanswered pings of a handshake that never finished
            self._pings.clear()
        return True

    def expect(self, processors: int) -> None:
        """Change how many processors readiness waits for (membership that changes)."""
        if processors < 1:
            raise ValueError("expect_processors must be at least 1")
        self.expect_processors = processors
        if len(self._confirmed) >= processors:
            self._ready = True

    def _heard(self, instance: str) -> None:
        if instance not in self._unconfirmed:
            self._unconfirmed.add(instance)
            self._hold_limit = None
            if self._ready:
                self.returned += 1
            self._ping_interval = _PING_FIRST_S
            self._next_ping = 0.0

    def _confirm(self, response: Response) -> None:
        key = response.instance or response.processor or str(response.id)
        self._confirmed[key] = response.processor
        self._advertised[key] = (response.extensions, response.batch_max)
        self._unconfirmed.discard(key)
        self._hold_limit = None
        if len(self._confirmed) >= self.expect_processors:
            self._ready = True
        if self._ready and not self._unconfirmed:
            self._pings.clear()  # their pongs are late now, not needed

    # -- deadline queues -----------------------------------------------------------------

    def _enqueue(self, call: Call) -> None:
        queue = self._queues.get(call.timeout_s)
        if queue is None:
            queue = self._queues[call.timeout_s] = deque()
        queue.append(call)
        self._queued += 1

    def _compact(self) -> None:
        # Answered calls wait in their queue until their deadline passes the front; drop
        # them when they outnumber the calls pending, so memory follows calls in flight.
        if self._queued <= 2 * len(self.pending) + _COMPACT_EVERY:
            return
        for timeout, queue in list(self._queues.items()):
            kept = deque(call for call in queue if not call.done)
            if kept:
                self._queues[timeout] = kept
            else:
                del self._queues[timeout]
        self._queued = sum(len(queue) for queue in self._queues.values())


def remote_error(response: Response) -> RemoteError:
    """The :class:`RemoteError` an error response stands for."""
    try:
        response.unwrap()
    except RemoteError as exc:
        return exc
    raise ZJobsError(f"response {response.id!r} is not an error")  # pragma: no cover


def completions(items: Iterable[Completion]) -> None:
    """Carry out completions: set each handle's value or error, skipping the cancelled."""
    for handle, value, error in items:
        if handle.done():
            continue
        try:
            if error is None:
                handle.set_result(value)
            else:
                handle.set_exception(error)
        except InvalidStateError:  # cancelled by another thread meanwhile
            pass
