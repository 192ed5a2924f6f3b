"""Which request endpoint a call goes to: each endpoint judged by its own answers.

A client connected to several processors sends each call through one of their request
endpoints (a route) in turn. A route is taken out of rotation when an attempt sent through
it times out and nothing at all was answered through it meanwhile: its host is cut off,
its process is gone or stuck, or its request connection is up while its response path is
not. Such a route gets no new calls; a ping (a probe) is sent through it now and then, and
it is back in rotation once a probe is answered. A probe's answer needs both paths, so a
route whose requests arrive but whose answers cannot is never used for work. Calls go to
the routes in rotation; when none is, to every route (the only host may come back, and
the calls' retries are what spans its outage).

Neither TCP keepalive nor ZMTP heartbeats can do this: keepalive never probes a
connection with requests in flight (the kernel retransmits them for many minutes
instead), and heartbeats time out a connection whose reader is merely busy, dropping
everything queued in it.

A route out of rotation whose processor has gone silent is also reset, once per outage:
no heartbeat from the processor that answered through it for the client's liveness
(three heartbeat intervals by default; one interval counts as 1 s for a processor not
heard from yet) since it was taken out or since its last heartbeat, whichever is later.
The driver then drops its connection and connects afresh. That discards the requests
stuck in the dead connection (their calls are retried elsewhere; left there, they would
run at the heal, a second time) and replaces a connection waiting out the kernel's
retransmission backoff with new connect attempts at the reconnect interval, so the host
is noticed within that interval once it heals. A processor that is only busy keeps
heartbeating and is never reset; one that sends no heartbeats at all is reset after that
time out of rotation.

Transport-free and not thread-safe, like the engine that owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["Route", "Routes"]

PROBE_FIRST_S: Final = 0.05
PROBE_MAX_S: Final = 0.25
"""Longest wait between two probes of a route out of rotation whose probes are queued; a
probe that could not even be queued (no connection) is tried again at the first interval."""


class Route:
    """One request endpoint and what its answers said."""

    __slots__ = ("answers", "endpoint", "instance", "next_probe", "probe_interval",
                 "reset", "suspected")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.answers = 0
        """Calls and probes answered through this route (a count, compared, never timed)."""
        self.instance: str | None = None
        """The processor run that last answered through it."""
        self.suspected: float | None = None
        """When it was taken out of rotation (None: in rotation)."""
        self.next_probe = 0.0
        self.probe_interval = PROBE_FIRST_S
        self.reset = False
        """Its connection was reset during this outage."""

    def __repr__(self) -> str:
        state = "in rotation" if self.suspected is None else "out of rotation"
        return f"<Route {self.endpoint} {state} answers={self.answers}>"


class Routes:
    """The routes of one client, in the order calls take them.

    Args:
        endpoints: the request endpoints.
        clock: monotonic seconds (a fake one in tests).
    """

    def __init__(self, endpoints: Iterable[str], clock: Callable[[], float]) -> None:
        self.clock = clock
        self._routes: dict[str, Route] = {}
        self._rotation: tuple[str, ...] = ()  # rebuilt on change: senders iterate it unlocked
        self._next = 0
        self.suspicions = 0
        """Times a route was taken out of rotation."""
        self.resets = 0
        """Times a route's connection was reset."""
        for endpoint in endpoints:
            self.add(endpoint)

    def __repr__(self) -> str:
        return f"<Routes {len(self._rotation)}/{len(self._routes)} in rotation>"

    def __len__(self) -> int:
        return len(self._routes)

    def __getitem__(self, endpoint: str) -> Route:
        return self._routes[endpoint]

    def get(self, endpoint: str) -> Route | None:
        """The route of ``endpoint``, if it is one."""
        return self._routes.get(endpoint)

    @property
    def degraded(self) -> bool:
        """True while some route is out of rotation."""
        return len(self._rotation) != len(self._routes)

    @property
    def in_rotation(self) -> list[str]:
        """The endpoints calls go to now."""
        return list(self._rotation)

    def add(self, endpoint: str) -> None:
        """A new request endpoint, in rotation at once (a readiness ping confirms it)."""
        if endpoint not in self._routes:
            self._routes[endpoint] = Route(endpoint)
            self._rotation += (endpoint,)

    def remove(self, endpoint: str) -> None:
        """Forget an endpoint; calls in flight through it are answered or retried."""
        if self._routes.pop(endpoint, None) is not None:
            self._rotation = tuple(e for e in self._rotation if e != endpoint)

    def order(self, avoid: Route | None = None) -> tuple[str, ...]:
        """Where the next send should go, best first: the routes in rotation from the next
        in turn (``avoid``, the route an attempt just failed on, last); every route when
        none is in rotation."""
        rotation = self._rotation or tuple(self._routes)
        count = len(rotation)
        if count <= 1:
            return rotation
        start = self._next % count
        self._next = start + 1
        if avoid is not None and rotation[start] == avoid.endpoint:
            start = (start + 1) % count
            self._next = start + 1
        return rotation[start:] + rotation[:start]

    def timed_out(self, route: Route, answers_at_send: int) -> bool:
        """An attempt sent through ``route`` got no answer in time. Takes the route out of
        rotation when nothing else was answered through it since that attempt was sent
        (a busy processor that answers other calls stays in); True when it did."""
        if route.answers != answers_at_send or route.suspected is not None:
            return False
        if self._routes.get(route.endpoint) is not route:
            return False  # removed meanwhile
        route.suspected = self.clock()
        route.next_probe = 0.0
        route.probe_interval = PROBE_FIRST_S
        self._rotation = tuple(e for e in self._rotation if e != route.endpoint)
        self.suspicions += 1
        return True

    def answered(self, route: Route, instance: str | None) -> None:
        """A call sent through ``route`` was answered."""
        route.answers += 1
        if instance is not None:
            route.instance = instance

    def probe_answered(self, route: Route, instance: str | None) -> None:
        """A probe sent through ``route`` was answered: both its paths work, back in
        rotation."""
        self.answered(route, instance)
        if route.suspected is not None and self._routes.get(route.endpoint) is route:
            route.suspected = None
            route.reset = False
            self._rotation += (route.endpoint,)

    def probes_due(self) -> list[Route]:
        """Routes out of rotation whose next probe is due now."""
        if not self.degraded:
            return []
        now = self.clock()
        due = []
        for route in self._routes.values():
            if route.suspected is not None and route.next_probe <= now:
                due.append(route)
        return due

    def probe_sent(self, route: Route, queued: bool) -> None:
        """Schedule the next probe: backing off while probes are queued unanswered, soon
        again when this one could not be queued (nothing connected: it cost nothing)."""
        if queued:
            route.next_probe = self.clock() + route.probe_interval
            route.probe_interval = min(route.probe_interval * 2, PROBE_MAX_S)
        else:
            route.next_probe = self.clock() + PROBE_FIRST_S

    def to_reset(self, due: Callable[[Route], bool]) -> list[Route]:
        """Routes out of rotation that ``due`` says to reset (their processor silent for
        long enough), not reset yet in this outage; each is marked reset."""
        if not self.degraded:
            return []
        resets = []
        for route in self._routes.values():
            if route.suspected is not None and not route.reset and due(route):
                route.reset = True
                self.resets += 1
                resets.append(route)
        return resets
