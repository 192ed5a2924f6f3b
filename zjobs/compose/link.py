"""Links: the responses of some processors become the requests of others.

A :class:`Link` subscribes (SUB) to the response endpoints of one or more upstream
processors and forwards every ok response as a request (PUSH) to one downstream processor,
or to a group of them (load balanced). It keeps the work's id and topic and appends the
upstream processor to ``meta["zjobs.path"]``; error responses and chain pings travel on as
pings (see :mod:`zjobs.wire.chain` for the conventions). Fan-out is two links from the same
upstream; fan-in is one link from several upstreams (or two links into one downstream).

Readiness (the slow-joiner rule): :meth:`Link.start` returns only after each upstream
processor answered a ping published on the link's own topic, so the link's subscription is
live and no early response is missed. That needs the upstream *request* endpoints: give
upstreams as :class:`~zjobs.Endpoints`, or as anything that has ``endpoints`` (a
:class:`~zjobs.ZmqProcessor`, an :class:`~zjobs.aio.AsyncZmqProcessor`, a started
:class:`~zjobs.ProcessorProcess`). With a bare response endpoint the link cannot probe it
and logs a warning.

Failures: a response the link cannot forward is sent on as an error (see above). Anything
else that ends the link's thread (a socket error, a filter raising KeyboardInterrupt) is
kept: :attr:`Link.forwarding` turns false and the next :meth:`Link.stop` raises
:class:`~zjobs.CrashedError` from it.

Retries: the results a link forwarded into a downstream processor that dies are lost
with it (its queue, the job in progress). A link with ``retries`` also subscribes to the
downstream's *response* endpoints, and sends a request again, with the same id and marked
``"dedup"``, when the downstream published no answer to it within ``retry_timeout_s``:
a restarted downstream runs what its predecessor lost, and answers a repeat of what it
already ran from its replay window. What a link cannot see is the next hop: responses a
restarted downstream publishes before the *next* link has reconnected to it are lost to
that link, yet answered as far as this one can tell. Only the chain's caller sees the
whole chain: give the caller retries (``Pipeline(..., retries=N)``) for no loss end to end;
links forward the work it marks as retried (``zjobs.dedup``) marked ``"dedup"`` at every
hop, so each stage's replay window keeps its effects once.

Back-pressure and high-water marks: a PUB socket never blocks; it drops messages for a
subscriber whose queue is full (the processor's ``sndhwm``, then the kernel's socket
buffers, then the subscriber's ``rcvhwm``). A link that falls behind a fast upstream, for
instance because its downstream is slow and its PUSH blocks, must therefore buffer or lose
work. By default the link's SUB has no high-water mark (``rcvhwm=0``): libzmq's I/O thread
keeps reading everything the upstream publishes into the link's memory, so the upstream's
queue stays short and nothing is dropped, at the cost of memory while the downstream
catches up. Set ``rcvhwm`` to bound that memory when losing work under overload is
acceptable. The upstream's ``sndhwm`` must still absorb a burst published faster than its
own I/O thread writes: processors default to 100,000; measured with ``sndhwm=200``, bursts
of 3,000 responses lost up to a third of them even to a link that kept reading.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self

import zmq

from zjobs.core import tracing
from zjobs.errors import (
    ClosedError,
    CrashedError,
    NotReady,
    ReceiveTimeout,
    SendTimeout,
    Timeout,
)
from zjobs.processor.base import Endpoints, HasEndpoints
from zjobs.transport.receiver import ZmqReceiver, as_topic
from zjobs.transport.sender import IdGenerator, ZmqSender
from zjobs.transport.sockets import ClientSecurity
from zjobs.wire.chain import (
    CHAIN_TOO_LONG,
    DEAD_LETTER_TOPIC,
    ERROR_KEY,
    LINK_FAILED,
    MAX_HOPS,
    PATH_KEY,
    chained_meta,
    error_meta,
    hopped,
    is_chained,
    is_retried,
    path_length,
)
from zjobs.wire.protocol import ERROR, OK, PONG, ErrorInfo, Id, Meta, Request, Response

__all__ = ["Downstream", "Link", "LinkCounters", "Transform", "Upstream"]

log = logging.getLogger(__name__)

_TICK_S = 0.05  # longest the link thread waits before checking for stop
_READY_TOPIC = "zjobs.link-ready"

Upstream = Endpoints | HasEndpoints | str
"""An upstream processor: its endpoints, the processor itself (any kind, or anything else
that has ``endpoints``), or its response endpoint."""

Downstream = Endpoints | HasEndpoints | str
"""A downstream processor: its endpoints, the processor itself (any kind), or its request
endpoint (a link with retries needs the response endpoint too)."""

Transform = Callable[[Any], Any]
"""A function from the upstream response value to the downstream request value."""


@dataclass(frozen=True, slots=True)
class LinkCounters:
    """What a link has done: each response it received, by outcome (logged when it stops).

    Every response received lands in one outcome: ``forwarded`` (ok responses sent on),
    ``filtered`` (ok responses the filter rejected), ``failed`` (ok responses and chain pings
    the link could not forward: its filter or transform raised, or the path had reached
    ``max_hops``; sent on as errors), ``errors`` (error responses sent on as chain pings),
    ``dead_letters`` (errors of work nobody waits for), ``pings`` (chain pings sent on),
    ``dropped`` (carried errors that had gone through ``max_hops`` links: a cycle) or
    ``ignored`` (other pongs, responses without an id).

    With retries, ``resent`` counts requests sent again because the downstream published
    no answer in time, and ``gave_up`` those still unanswered after the last retry.
    """

    received: int = 0
    forwarded: int = 0
    filtered: int = 0
    failed: int = 0
    errors: int = 0
    dead_letters: int = 0
    pings: int = 0
    ignored: int = 0
    resent: int = 0
    gave_up: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and JSON)."""
        return {name: getattr(self, name) for name in self.__slots__}


def endpoints_of(peer: Endpoints | HasEndpoints) -> Endpoints:
    """The endpoints a local peer connects to, of a processor or of endpoints given as such.

    Raises:
        ValueError: ``peer`` does not know its endpoints yet (a process not started).
    """
    endpoints = peer if isinstance(peer, Endpoints) else peer.endpoints
    if endpoints is None:
        raise ValueError(f"{peer!r} has no endpoints yet: start it first")
    return endpoints.connectable()


def _upstream(source: Upstream) -> tuple[str | None, str]:
    if isinstance(source, str):
        return None, source
    endpoints = endpoints_of(source)
    return endpoints.requests, endpoints.responses


def _downstream(target: Downstream) -> tuple[str, str | None]:
    if isinstance(target, str):
        return target, None
    endpoints = endpoints_of(target)
    return endpoints.requests, endpoints.responses


class _Unanswered:
    """A request the link sent downstream and saw no answer to yet (with retries)."""

    __slots__ = ("deadline", "frames", "retries")

    def __init__(self, frames: list[bytes], deadline: float, retries: int) -> None:
        self.frames = frames
        self.deadline = deadline
        self.retries = retries  # sends left


def _many(value: Any) -> list[Any]:
    # One peer, or an iterable of them (endpoints and processors are not iterables).
    return [value] if isinstance(value, str | Endpoints | HasEndpoints) else list(value)


def _refuse_own_source(name: str, probes: list[str], targets: list[str]) -> None:
    # The one cycle a link can see alone; cycles through other links are stopped by the
    # bound on the path's length.
    for target in targets:
        if target in probes:
            raise ValueError(f"link {name!r} would feed its own source {target}: a cycle (the "
                             "work would go round forever)")


class Link:
    """Forwards the responses of upstream processors as requests to a downstream one.

    Args:
        sources: the upstream processor(s): :class:`~zjobs.Endpoints`, or anything that has
            ``endpoints`` such as processors of any kind (the link can then verify its
            subscription, see the module docstring), or bare response endpoints.
        targets: the downstream processor(s): the same kinds (needed for ``retries``), or
            their request endpoints; several are a group that shares the work (each
            request goes to one of them).
        name: names the link in logs and in the errors it raises itself.
        topic: the topic prefix to take work from (``""``: every response of the sources).
            Callers that share processors with other traffic give their work topics under
            a prefix and link only that prefix.
        transform: turns each ok response value into the downstream request value; None
            forwards the value unchanged.
        keep: a filter: ok responses for which it returns false are not forwarded (the
            work ends there, silently: that is what filtering means). None keeps all.
        context: the zmq context (the shared instance by default).
        security: client-side security for the link's sockets.
        ready_timeout_s: how long :meth:`start` waits for the upstream pongs.
        rcvhwm: the SUB high-water mark; 0 (the default) buffers without limit rather than
            letting the upstream drop responses (see the module docstring).
        retries: how many times a request the downstream published no answer to is sent
            again (same id, marked ``"dedup"``); 0 sends each once. See the module docstring
            for what link retries cover and what only the caller's retries do.
        retry_timeout_s: how long the link waits for the downstream's answer to each send.
        max_hops: the longest chain forwarded along: work whose ``zjobs.path`` already has
            this many processors is answered with a ``LinkFailed`` error (exception
            ``ChainTooLong``) instead, and a carried error that went through this many
            links is dropped, so links feeding each other in a cycle stop.

    Raises:
        ConnectError: an endpoint is malformed (names it).
        ValueError: no source or target; a target that is one of the sources (a cycle);
            negative ``retries``; retries with a target given without its response endpoint.
    """

    def __init__(
        self,
        sources: Upstream | Iterable[Upstream],
        targets: Downstream | Iterable[Downstream],
        *,
        name: str = "link",
        topic: str | bytes = "",
        transform: Transform | None = None,
        keep: Callable[[Any], bool] | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: ClientSecurity | None = None,
        ready_timeout_s: float = 10.0,
        rcvhwm: int = 0,
        retries: int = 0,
        retry_timeout_s: float = 5.0,
        max_hops: int = MAX_HOPS,
    ) -> None:
        pairs = [_upstream(s) for s in _many(sources)]
        downs = [_downstream(t) for t in _many(targets)]
        self.name = name
        self.topic = as_topic(topic)
        self.transform = transform
        self.keep = keep
        self.ready_timeout_s = ready_timeout_s
        self.context = context or zmq.Context.instance()
        self.sources = [responses for _, responses in pairs]
        self.probes = [requests for requests, _ in pairs if requests is not None]
        self.targets = [requests for requests, _ in downs]
        self.target_responses = [responses for _, responses in downs if responses is not None]
        if not self.sources or not self.targets:
            raise ValueError(f"link {name!r} needs at least one source and one target")
        if retries < 0 or retry_timeout_s <= 0:
            raise ValueError(f"link {name!r}: retries must be >= 0 and retry_timeout_s > 0")
        if retries and len(self.target_responses) < len(self.targets):
            raise ValueError(f"link {name!r}: retries need every target's response endpoint, "
                             "to see its answers (give targets as Endpoints)")
        self.retries = retries
        self.retry_timeout_s = retry_timeout_s
        _refuse_own_source(name, self.probes, self.targets)
        if max_hops < 1:
            raise ValueError(f"max_hops must be at least 1, not {max_hops}")
        self.max_hops = max_hops
        self._security = security
        self._rcvhwm = rcvhwm
        self._state = "created"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._receiver: ZmqReceiver | None = None
        self._sender: ZmqSender | None = None
        self._answers: ZmqReceiver | None = None  # the targets' responses (with retries)
        self._unanswered: dict[tuple[bytes, Id], _Unanswered] = {}
        self._expiry: list[tuple[float, int, tuple[bytes, Id]]] = []
        self._order = itertools.count()  # heap tie-breaker: ids of both types never compare
        self._backlog: collections.deque[Response] = collections.deque()
        self._crash: BaseException | None = None
        self._tally = collections.Counter[str]()
        self._last_dead_log = 0.0
        self._last_cycle_log = 0.0

    def __repr__(self) -> str:
        retries = f" retries={self.retries}" if self.retries else ""
        return (f"<Link {self.name!r} {self._state} from={self.sources} to={self.targets} "
                f"topic={self.topic!r}{retries}>")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def state(self) -> str:
        """One of created, running, stopped."""
        return self._state

    @property
    def forwarding(self) -> bool:
        """True while the link thread runs (false before start, after stop, or if it died)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def unanswered(self) -> int:
        """With retries: requests sent downstream whose answer the link has not seen yet."""
        return len(self._unanswered)

    @property
    def counters(self) -> LinkCounters:
        """A snapshot of what the link has done."""
        tally = dict(self._tally)
        return LinkCounters(**{k: tally.get(k, 0) for k in LinkCounters.__slots__})

    # -- starting ------------------------------------------------------------------------

    def start(self) -> Self:
        """Connect, wait until every upstream's responses reach the link, then forward in a
        background thread.

        Raises:
            NotReady: an upstream did not answer a ping within ``ready_timeout_s`` (the link
                is then closed).
            ClosedError: the link was already started or stopped.
        """
        with self._lock:
            if self._state != "created":
                raise ClosedError(f"link {self.name!r} is {self._state}: start() needs a new link")
            self._state = "running"
        try:
            self._receiver = ZmqReceiver(self.sources, topics=(self.topic,),
                                         context=self.context, rcvhwm=self._rcvhwm,
                                         security=self._security)
            self._sender = ZmqSender(self.targets, context=self.context,
                                     send_timeout_s=_TICK_S, security=self._security)
            self._wait_subscribed()
            if self.retries:
                self._answers = ZmqReceiver(self.target_responses, topics=(self.topic,),
                                            context=self.context, rcvhwm=self._rcvhwm,
                                            security=self._security)
                self._wait_pongs(self.targets, self._answers, keep=False)
        except BaseException:
            self._close_sockets()
            self._state = "stopped"
            raise
        self._thread = threading.Thread(target=self._loop, name=f"zjobs-link-{self.name}",
                                        daemon=True)
        self._thread.start()
        log.debug("link %s forwarding %s -> %s", self.name, self.sources, self.targets)
        return self

    def _wait_subscribed(self) -> None:
        """Ping every probed upstream on the link's topic until each one's pong arrives."""
        if len(self.probes) < len(self.sources):
            log.warning("link %s: %d source(s) given without a request endpoint; their "
                        "first responses may be missed (slow joiner)", self.name,
                        len(self.sources) - len(self.probes))
        if not self.probes:
            return
        assert self._receiver is not None
        self._wait_pongs(self.probes, self._receiver, keep=True)

    def _wait_pongs(self, probes: list[str], receiver: ZmqReceiver, *, keep: bool) -> None:
        """Ping the processors at ``probes`` on the link's topic until a pong of each
        arrives on ``receiver``; other responses go to the backlog when ``keep``."""
        reply_to = self.topic if self.topic else _READY_TOPIC.encode()
        ids = IdGenerator()
        sent: set[Id] = set()
        seen: set[str] = set()
        deadline = time.monotonic() + self.ready_timeout_s
        interval = 0.002
        with ZmqSender(probes, context=self.context, send_timeout_s=0,
                       linger_ms=0, security=self._security) as pinger:
            while len(seen) < len(probes):
                now = time.monotonic()
                if now >= deadline:
                    raise NotReady(probes, self.ready_timeout_s, len(seen), len(probes))
                try:
                    sent.add(pinger.send(None, id=ids(), reply_to=reply_to, ping=True))
                except SendTimeout:
                    pass  # not connected yet; keep trying until the deadline
                until = min(deadline, time.monotonic() + interval)
                while (left := until - time.monotonic()) > 0:
                    try:
                        response = receiver.receive(timeout=left)
                    except ReceiveTimeout:
                        break
                    if response.status == PONG and response.id in sent:
                        seen.add(response.instance or response.processor)
                    elif keep:
                        self._backlog.append(response)  # real traffic: forward it later
                interval = min(interval * 1.5, 0.1)

    # -- forwarding ----------------------------------------------------------------------

    def _loop(self) -> None:
        receiver = self._receiver
        assert receiver is not None
        stopping, backlog = self._stopping, self._backlog
        retrying = self._answers is not None
        try:
            while not stopping.is_set():
                if retrying:
                    self._settle()
                if backlog:
                    response = backlog.popleft()
                else:
                    try:
                        response = receiver.receive(timeout=_TICK_S)
                    except ReceiveTimeout:
                        continue
                self._handle(response)
        except ClosedError:
            if not stopping.is_set():  # closed under it: no more forwarding is possible
                self._crash = ClosedError(f"link {self.name!r}: its sockets were closed")
        except BaseException as exc:  # kept for stop(): the thread has no caller
            log.error("link %s crashed", self.name, exc_info=exc)
            self._crash = exc
        finally:
            if self._unanswered:
                log.warning("link %s: stopped with %d request(s) the downstream has not "
                            "answered", self.name, len(self._unanswered))

    def _settle(self) -> None:
        """Retries: take note of the downstream's answers, resend what is overdue."""
        answers = self._answers
        assert answers is not None
        unanswered = self._unanswered
        while True:
            try:
                response = answers.receive(0)
            except ReceiveTimeout:
                break
            if response.id is not None:
                unanswered.pop((response.topic, response.id), None)
        now = time.monotonic()
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, _, key = heapq.heappop(expiry)
            entry = unanswered.get(key)
            if entry is None or entry.deadline > now:
                continue  # answered, or sent again since (a later deadline is queued)
            if entry.retries == 0:
                del unanswered[key]
                self._tally["gave_up"] += 1
                log.warning("link %s: no answer from %s to %r after %d attempt(s); giving up",
                            self.name, self.targets, key[1], self.retries + 1)
                continue
            entry.retries -= 1
            self._expect(key, entry, now)
            self._tally["resent"] += 1
            if not self._send_frames(entry.frames):
                return

    def _expect(self, key: tuple[bytes, Id], entry: _Unanswered, now: float) -> None:
        entry.deadline = now + self.retry_timeout_s
        self._unanswered[key] = entry
        heapq.heappush(self._expiry, (entry.deadline, next(self._order), key))

    def _handle(self, response: Response) -> None:
        self._tally["received"] += 1
        if response.id is None:
            # An answer to a request so malformed it had no id: nothing can carry it on.
            self._tally["ignored"] += 1
            log.warning("link %s: %s response without an id from %s: %s", self.name,
                        response.status, response.processor,
                        response.error.message if response.error else "")
            return
        if response.status == OK:
            if not self._too_long(response, response.id):
                with tracing.forward_span(self.name, response.meta):
                    self._forward_ok(response, response.id)
        elif response.status == ERROR:
            assert response.error is not None
            self._tally["errors"] += 1
            self._forward_error(response, response.id, response.processor, response.error,
                                chained_meta(response.meta, response.processor))
        elif response.status == PONG and is_chained(response.meta):
            assert response.meta is not None
            carrying = isinstance(response.meta.get(ERROR_KEY), dict)
            if carrying:
                # A carried error's path ends where the work failed: its hops count instead.
                meta, hops = hopped(response.meta)
                if hops > self.max_hops:
                    self._tally["dropped"] += 1
                    self._warn(f"link {self.name}: dropped the error of {response.id!r}: it "
                               f"went through {self.max_hops} links (a link cycle?)")
                    return
            elif self._too_long(response, response.id):
                return
            else:
                meta = chained_meta(response.meta, response.processor)
            self._tally["errors" if carrying else "pings"] += 1
            self._send(response.id, None, response.topic, meta, ping=True)
        else:
            self._tally["ignored"] += 1  # somebody else's pong, or our own late one

    def _too_long(self, response: Response, rid: Id) -> bool:
        """Answer work (or a chain ping) whose path reached ``max_hops`` with a LinkFailed
        error instead of forwarding it; True when it did."""
        if path_length(response.meta) < self.max_hops:
            return False
        self._tally["failed"] += 1
        meta = chained_meta(response.meta, response.processor)
        path = [str(name) for name in meta[PATH_KEY]]
        shown = " -> ".join(path if len(path) <= 6 else ["...", *path[-6:]])
        message = (f"{CHAIN_TOO_LONG}: the work went through {len(path)} processors, more "
                   f"than the {self.max_hops} a chain may have (a link cycle?): {shown}")
        self._warn(f"link {self.name}: {rid!r}: {message}")
        error = ErrorInfo(LINK_FAILED, message, {"exception": CHAIN_TOO_LONG})
        self._forward_error(response, rid, self.name, error, meta)
        return True

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_cycle_log >= 1.0:  # at most a line a second under a flood
            self._last_cycle_log = now
            log.warning("%s", message)

    def _forward_ok(self, response: Response, rid: Id) -> None:
        meta = chained_meta(response.meta, response.processor)
        try:
            if self.keep is not None and not self.keep(response.value):
                self._tally["filtered"] += 1
                return
            value = response.value if self.transform is None else self.transform(response.value)
            # Work its caller may retry stays marked, so every stage remembers its answer.
            dedup = self.retries > 0 or is_retried(meta)
            frames = Request(rid, value, response.topic or None, False, None, meta,
                             dedup).to_frames()
        except Exception as exc:
            self._tally["failed"] += 1
            log.debug("link %s: cannot forward %r", self.name, rid, exc_info=exc)
            kind = type(exc).__name__  # EncodeError for an unencodable value, as ZJP/1 asks
            error = ErrorInfo(LINK_FAILED, f"{kind}: {exc}", {"exception": kind})
            self._forward_error(response, rid, self.name, error, meta)
            return
        if self._deliver(response.topic, rid, frames):
            self._tally["forwarded"] += 1

    def _forward_error(self, response: Response, rid: Id, stage: str, error: ErrorInfo,
                       meta: Meta) -> None:
        topic = response.topic
        if not topic:
            self._tally["dead_letters"] += 1
            topic = DEAD_LETTER_TOPIC.encode()
            now = time.monotonic()
            if now - self._last_dead_log >= 1.0:  # at most a line a second under a flood
                self._last_dead_log = now
                log.warning("link %s: dead letter %r from %s: %s: %s (topic %s)", self.name,
                            rid, stage, error.type, error.message, DEAD_LETTER_TOPIC)
        self._send(rid, None, topic, error_meta(meta, stage, error), ping=True)

    def _send(self, rid: Id, value: Any, topic: bytes, meta: Meta, *, ping: bool) -> None:
        self._deliver(topic, rid, Request(rid, value, topic or None, ping, None,
                                          meta).to_frames())

    def _deliver(self, topic: bytes, rid: Id, frames: list[bytes]) -> bool:
        # The downstream answers on the work's topic with its id: wait for that (retries).
        if self.retries:
            self._expect((topic, rid), _Unanswered(frames, 0.0, self.retries),
                         time.monotonic())
        return self._send_frames(frames)

    def _send_frames(self, frames: list[bytes]) -> bool:
        # Block while the downstream is full (back-pressure), but keep noticing stop().
        sender = self._sender
        assert sender is not None
        while True:
            try:
                sender.send_frames(frames)
                return True
            except SendTimeout:
                if self._stopping.is_set():
                    log.warning("link %s: stopped with a request not delivered to %s",
                                self.name, self.targets)
                    return False

    # -- membership ----------------------------------------------------------------------

    def update_targets(self, requests: Iterable[str]) -> None:
        """Make these the downstream request endpoints (a membership change, e.g. from a
        :class:`~zjobs.MembershipWatcher`): new ones are connected, removed ones get no new
        work (what was queued for them still leaves, up to the sender's linger).

        Raises:
            ConnectError: an endpoint is malformed (the others are applied).
            ClosedError: the link is not running.
            ValueError: the link has retries (it watches fixed targets' responses).
        """
        sender = self._sender
        if sender is None or self._state != "running":
            raise ClosedError(f"link {self.name!r} is {self._state}")
        if self.retries:
            raise ValueError(f"link {self.name!r} has retries: its targets are fixed (it "
                             "watches their response endpoints)")
        wanted = list(dict.fromkeys(requests))
        try:
            for endpoint in wanted:
                if endpoint not in sender.endpoints:
                    sender.connect(endpoint)
        finally:
            for endpoint in list(sender.endpoints):
                if endpoint not in wanted:
                    sender.disconnect(endpoint)
            self.targets = list(sender.endpoints)
        log.info("link %s: forwarding to %s", self.name, self.targets)

    # -- stopping ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the link to stop after the response in hand; safe from a signal handler."""
        self._stopping.set()

    def stop(self, timeout_s: float | None = 10.0) -> None:
        """Stop forwarding and close the sockets (requests already sent get the sender's
        linger to leave). Idempotent.

        Raises:
            Timeout: the link thread did not finish within ``timeout_s``.
            CrashedError: the link thread had died (raised once, after closing).
        """
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                raise Timeout(f"link {self.name!r} did not stop within {timeout_s}s")
        with self._lock:
            closing = self._state != "stopped"
            self._state = "stopped"
        if closing:
            self._close_sockets()
            log.debug("link %s stopped: %s", self.name, self.counters.as_dict())
        crash, self._crash = self._crash, None
        if crash is not None:
            raise CrashedError(f"link {self.name!r}", crash)

    close = stop

    def _close_sockets(self) -> None:
        for owner in (self._receiver, self._sender, self._answers):
            if owner is not None:
                owner.close()
        self._receiver = self._sender = self._answers = None
