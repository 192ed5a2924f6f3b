"""Watching processors through their heartbeats: what ``zjobs status``, ``zjobs top`` and
``zjobs dashboard`` show.

A :class:`Watch` subscribes to the heartbeat topic on each response endpoint given, with a
receiver per endpoint so that an endpoint nobody answers on shows as *missing*, and feeds
one :class:`~zjobs.ProcessorMonitor` (liveness, host, pid, load). :meth:`Watch.rows` turns
what it knows into :class:`Row`\\ s, one per processor run, sorted by load; a short history
per run (throughput, latency, errors) feeds sparklines and plots. No terminal, no HTTP:
the commands render rows (:mod:`zjobs.cli.top`, :mod:`zjobs.cli.dashboard`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import zmq

from zjobs.core.monitor import PeerState, ProcessorMonitor
from zjobs.run.system import System
from zjobs.transport.receiver import ZmqReceiver
from zjobs.transport.sockets import ClientSecurity, connectable
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC, RUNNING, STOPPED

__all__ = ["GONE", "MISSING", "Expected", "Row", "Watch", "expected_from_system",
           "format_duration", "sparkline"]

GONE = "gone"
"""A processor run silent for longer than its liveness allows."""
MISSING = "missing"
"""An endpoint where no processor run was heard."""

ERROR_COUNTERS = ("failed", "expired", "bad_requests")
"""The counters that add up to a processor's errors."""

_SPARKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True, slots=True)
class Expected:
    """A response endpoint to watch, and the processor expected there (if known)."""

    endpoint: str
    name: str = ""


def expected_from_system(system: System) -> list[Expected]:
    """One entry per replica of every processor of a system file."""
    return [Expected(connectable(responses), spec.name)
            for spec in system.processors.values() for responses in spec.responses]


@dataclass(frozen=True, slots=True)
class Row:
    """One processor run as a watcher shows it (None: not known, e.g. no load sent)."""

    name: str
    endpoint: str
    state: str
    instance: str = ""
    host: str = ""
    pid: int = 0
    requests_per_s: float | None = None
    p50_s: float | None = None
    p99_s: float | None = None
    errors: int = 0
    in_flight: int | None = None
    busy: float | None = None
    """Share of the last interval spent running jobs (above 1 with concurrent jobs)."""
    last_seen_s: float | None = None
    counters: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when this run serves (running and heard recently)."""
        return self.state == RUNNING

    def as_json(self) -> dict[str, Any]:
        """The row as the JSON object of ``zjobs status --json``."""
        out = asdict(self)
        out["counters"] = dict(self.counters)
        return out


@dataclass(slots=True)
class History:
    """The last values of one processor run, one point per heartbeat."""

    time_s: deque[float]
    requests_per_s: deque[float]
    p50_s: deque[float | None]
    p99_s: deque[float | None]
    errors: deque[int]

    @classmethod
    def empty(cls, length: int) -> History:
        return cls(deque(maxlen=length), deque(maxlen=length), deque(maxlen=length),
                   deque(maxlen=length), deque(maxlen=length))

    def as_json(self) -> dict[str, list[Any]]:
        return {"time_s": list(self.time_s), "requests_per_s": list(self.requests_per_s),
                "p50_s": list(self.p50_s), "p99_s": list(self.p99_s),
                "errors": list(self.errors)}


def _errors(counters: Mapping[str, int]) -> int:
    return sum(counters.get(name, 0) for name in ERROR_COUNTERS)


def _state(peer: PeerState, now: float, liveness: int) -> str:
    if peer.state == STOPPED:
        return STOPPED
    return peer.state if peer.alive(now, liveness) else GONE


def _row(peer: PeerState, endpoint: str, now: float, liveness: int) -> Row:
    load = peer.load
    rate = busy = None
    if load is not None and load.window_ms > 0:
        rate = load.jobs * 1000 / load.window_ms
        busy = load.busy_us / 1000 / load.window_ms
    return Row(
        name=peer.processor, endpoint=endpoint, state=_state(peer, now, liveness),
        instance=peer.instance, host=peer.host, pid=peer.pid, requests_per_s=rate,
        p50_s=None if load is None or load.p50_us is None else load.p50_us / 1e6,
        p99_s=None if load is None or load.p99_us is None else load.p99_us / 1e6,
        errors=_errors(peer.counters), in_flight=None if load is None else load.in_flight,
        busy=busy, last_seen_s=max(0.0, now - peer.last_heard), counters=dict(peer.counters))


def load_order(row: Row) -> tuple[int, float, float, str]:
    """Sort key: serving runs first, the busiest first (then by throughput, then name)."""
    return (0 if row.ok else 1 if row.state != MISSING else 2, -(row.busy or 0.0),
            -(row.requests_per_s or 0.0), row.name)


class Watch:
    """Hears the heartbeats published on response endpoints and keeps what they say.

    Use it from one thread: call :meth:`poll` to take in heartbeats, :meth:`rows` to read.

    Args:
        expected: the response endpoints to watch (strings or :class:`Expected`).
        context: the zmq context (the shared instance by default).
        security: client-side security for the receivers.
        liveness: a run is gone after this many heartbeat intervals without one.
        history: points of history kept per processor run.
        clock: monotonic seconds.

    Raises:
        ConnectError: an endpoint is malformed.
    """

    def __init__(self, expected: Iterable[str | Expected], *,
                 context: zmq.Context[zmq.Socket[bytes]] | None = None,
                 security: ClientSecurity | None = None, liveness: int = 3,
                 history: int = 120, clock: Callable[[], float] = time.monotonic) -> None:
        self.expected = [e if isinstance(e, Expected) else Expected(connectable(e))
                         for e in expected]
        if not self.expected:
            raise ValueError("give at least one response endpoint to watch")
        endpoints = [item.endpoint for item in self.expected]
        twice = sorted({ep for ep in endpoints if endpoints.count(ep) > 1})
        if twice:
            raise ValueError(f"endpoint(s) given twice: {', '.join(twice)}")
        self.monitor = ProcessorMonitor(liveness, clock=clock)
        self._clock = clock
        self._history_length = history
        self._where: dict[str, str] = {}  # instance -> endpoint
        self._history: dict[str, History] = {}
        self._receivers: list[tuple[Expected, ZmqReceiver]] = []
        self._started = clock()
        try:
            for item in self.expected:
                self._receivers.append((item, ZmqReceiver(
                    item.endpoint, topics=(HEARTBEAT_TOPIC,), context=context,
                    security=security)))
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<Watch {len(self.expected)} endpoint(s) {self.monitor!r}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self, timeout_s: float) -> int:
        """Take in the heartbeats that arrive within ``timeout_s``; return how many."""
        deadline = time.monotonic() + timeout_s
        heard = 0
        while True:
            # Wait on each receiver in turn for a slice of a short round: a heartbeat that
            # arrives on another meanwhile waits at most a round (heartbeats come about
            # once a second per processor run).
            left = deadline - time.monotonic()
            share = max(0.0, min(left, 0.02)) / len(self._receivers)
            for item, receiver in self._receivers:
                frames = receiver.receive_frames(time.monotonic() + share)
                while frames is not None:
                    heard += self._take(item, frames)
                    frames = receiver.receive_frames(time.monotonic())  # what has arrived
            if left <= 0:
                return heard

    def _take(self, item: Expected, frames: list[bytes]) -> int:
        beat = self.monitor.heartbeat(frames)
        if beat is None:
            return 0
        self._where[beat.instance] = item.endpoint
        history = self._history.get(beat.instance)
        if history is None:
            history = self._history[beat.instance] = History.empty(self._history_length)
        load = beat.load
        history.time_s.append(self._clock() - self._started)
        history.requests_per_s.append(load.jobs * 1000 / load.window_ms
                                      if load is not None and load.window_ms else 0.0)
        history.p50_s.append(None if load is None or load.p50_us is None
                             else load.p50_us / 1e6)
        history.p99_s.append(None if load is None or load.p99_us is None
                             else load.p99_us / 1e6)
        history.errors.append(_errors(beat.counters))
        return 1

    def wait_heard(self, timeout_s: float) -> bool:
        """Poll until every endpoint was heard from, or ``timeout_s`` passed; True if all."""
        deadline = self._clock() + timeout_s
        while not self.all_heard():
            left = deadline - self._clock()
            if left <= 0:
                return False
            self.poll(min(left, 0.05))
        return True

    def all_heard(self) -> bool:
        """True when a heartbeat came from every endpoint watched."""
        return set(self._where.values()) >= {item.endpoint for item in self.expected}

    def rows(self) -> list[Row]:
        """One row per processor run heard, and one per endpoint where none serves now
        (``missing``), serving runs first, sorted by load. A run that stopped or went
        silent is left out once another serves on its endpoint (a restart)."""
        now = self._clock()
        liveness = self.monitor.liveness
        by_endpoint: dict[str, list[Row]] = {item.endpoint: [] for item in self.expected}
        for peer in self.monitor:
            endpoint = self._where.get(peer.instance)
            if endpoint is not None and peer.interval_s is not None:
                by_endpoint[endpoint].append(_row(peer, endpoint, now, liveness))
        rows: list[Row] = []
        for item in self.expected:
            runs = by_endpoint[item.endpoint]
            serving = [row for row in runs if row.ok]
            if serving:
                rows.extend(serving)
            elif runs:
                rows.append(max(runs, key=lambda row: -(row.last_seen_s or 0.0)))
            else:
                rows.append(Row(name=item.name, endpoint=item.endpoint, state=MISSING))
        return sorted(rows, key=load_order)

    def history(self, instance: str) -> History | None:
        """The recent values of one processor run, oldest first."""
        return self._history.get(instance)

    def problems(self) -> list[str]:
        """What keeps the watched system from being healthy: one line per endpoint where
        no processor serves (never heard, stopped, or gone)."""
        out = []
        for row in self.rows():
            if not row.ok:
                out.append(f"{row.name or 'processor'} at {row.endpoint}: {row.state}")
        return out

    def close(self) -> None:
        """Close the receivers; idempotent."""
        for _, receiver in self._receivers:
            receiver.close()


def sparkline(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as block characters, scaled to their largest."""
    recent = list(values)[-width:]
    top = max(recent, default=0.0)
    if top <= 0:
        return _SPARKS[0] * len(recent)
    last = len(_SPARKS) - 1
    return "".join(_SPARKS[min(last, round(v / top * last))] for v in recent)


def format_duration(seconds: float | None) -> str:
    """``850µs``, ``12.3ms``, ``1.20s``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g}ms"
    return f"{seconds:.3g}s"
