"""The network faults of issue 14, each a function that plays it out on a
:class:`~netns.RoutedNetwork` under load and returns what happened as an :class:`Outcome`.

``tests/test_netfaults.py`` runs short versions (a few seconds of outage, a few hundred
calls) and asserts the counts; ``benchmarks/netfaults.py`` runs long ones (20 s cuts,
thousands of calls) and prints them. A scenario waits for conditions where there is one
to wait for (both hosts busy, the client's connections dropped or back, the healed host
running calls again); only the fault schedule itself (how long a cut or a flap lasts, how
far apart the two paths heal) is a time.

How long a cut lasts decides what it does, because each end notices a silent peer only
through TCP keepalive (``Keepalive``: 5 s idle, then 5 probes 1 s apart), and keepalive
probes only an idle connection. A connection that carries nothing during the cut (the
processor's request socket, the client's response socket) is dropped after 10 s; one with
data in flight (the client's request socket, the processor's response socket) is not
dropped at all: it retransmits with backoff (0.2 s doubling, for minutes) and learns of a
dropped peer only at its next retransmission after the heal (a reset). A cut shorter
than 10 s leaves the processor's end open, so the requests the client queued in it are
delivered when the path heals, also those whose retry ran elsewhere; a longer one has
them refused. The short versions therefore cut a processor for 12 s where the difference
matters (one of two hosts, the split rejoin) and 6 s where it does not (one host: its
replay window answers repeats).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from netns import Daemon, Driver, DriverResult, NetPath, RoutedNetwork

from zjobs.testing import wait_until

CONDITION_TIMEOUT_S = 60.0
WARM_RUNS = 20  # runs each host must have made before a fault, and after a heal


@dataclass(frozen=True)
class Load:
    """How the client calls: ``workers`` threads, ``rate`` calls a second in all, each
    call with ``timeout_s`` per attempt and ``retries``."""

    rate: float = 100.0
    workers: int = 8
    timeout_s: float = 1.0
    retries: int = 8
    max_calls: int = 100_000
    after_heal_s: float = 0.0
    """Keep calling at least this long after the (last) heal."""
    libzmq_reconnect: bool = False
    """Reconnect as libzmq does by itself (``reconnect=None``: no connect timeout), not with
    zjobs' :class:`~zjobs.Reconnect` defaults."""

    @property
    def call_limit_s(self) -> float:
        """The time a call may take in all attempts: ``timeout_s x (retries + 1)``."""
        return self.timeout_s * (self.retries + 1)

    def args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"rate": self.rate, "workers": self.workers,
                                "timeout_s": self.timeout_s, "retries": self.retries,
                                "max_calls": self.max_calls}
        if self.libzmq_reconnect:
            args["reconnect"] = None
        return args


@dataclass
class Outcome:
    """What a scenario did: the client's records, every daemon's runs, and when each fault
    began and ended (``marks``, monotonic seconds)."""

    scenario: str
    load: Load
    result: DriverResult
    runs: dict[str, list[tuple[int, float]]]
    marks: dict[str, float]
    dropped: int = 0
    """Packets the fault's nftables rules dropped (proof that the fault was in place)."""

    @property
    def calls(self) -> int:
        return self.result.calls

    @property
    def answered(self) -> int:
        return self.result.answered

    @property
    def lost(self) -> int:
        """Calls that got no answer (whatever error they got instead)."""
        return self.calls - self.answered

    @property
    def errors(self) -> dict[str, int]:
        return self.result.errors

    def runs_per_call(self) -> Counter[int]:
        return Counter(key for runs in self.runs.values() for key, _ in runs)

    def ran_twice(self) -> list[int]:
        """Calls whose job ran more than once (on one host or on several)."""
        return sorted(key for key, count in self.runs_per_call().items() if count > 1)

    def run_times(self, key: int) -> dict[str, list[float]]:
        """Where and when the job of call ``key`` ran."""
        return {name: [at for k, at in runs if k == key] for name, runs in self.runs.items()}

    def ran_unanswered(self) -> int:
        """Calls whose job ran although the caller got an error."""
        ran = self.runs_per_call()
        return sum(1 for r in self.result.records if r[4] is not None and ran[r[0]])

    def first_run_after(self, name: str, mark: str) -> float | None:
        """Seconds from ``marks[mark]`` to the first run on processor ``name`` after it."""
        at = self.marks[mark]
        later = [t for _, t in self.runs[name] if t >= at]
        return min(later) - at if later else None

    def runs_between(self, name: str, start: str, end: str) -> int:
        """Runs on ``name`` between two marks."""
        lo, hi = self.marks[start], self.marks[end]
        return sum(1 for _, t in self.runs[name] if lo <= t < hi)

    def errors_with(self, kind: str) -> list[list[Any]]:
        return [r for r in self.result.records if r[4] == kind]

    def slowest_error_s(self) -> float:
        """The longest a failed call took from its start to its error."""
        return max((r[2] - r[1] for r in self.result.records if r[4] is not None), default=0.0)

    def summary(self) -> dict[str, Any]:
        """The figures of the closing note (JSON-friendly)."""
        out: dict[str, Any] = {
            "scenario": self.scenario, "calls": self.calls, "answered": self.answered,
            "lost": self.lost, "errors": self.errors, "ran_twice": len(self.ran_twice()),
            "ran_unanswered": self.ran_unanswered(), "per_processor": self.result.per_processor,
            "resent": self.result.resent, "replays": self.result.replays,
            "suspicions": self.result.suspicions, "resets": self.result.resets,
            "slowest_error_s": round(self.slowest_error_s(), 3), "packets_dropped": self.dropped,
        }
        if "heal" in self.marks:
            heal = self.marks["heal"]
            if "reconnected" in self.marks:
                out["reconnected_after_heal_s"] = round(self.marks["reconnected"] - heal, 3)
            after = {name: sum(1 for _, t in runs if t >= heal)
                     for name, runs in self.runs.items()}
            total = max(1, sum(after.values()))
            for name in self.runs:
                first = self.first_run_after(name, "heal")
                out[f"first_run_after_heal_s[{name}]"] = None if first is None else round(first, 3)
                if len(self.runs) > 1:
                    out[f"share_after_heal[{name}]"] = round(after[name] / total, 3)
        base = self.marks.get("cut", 0.0)
        out["marks_s"] = {k: round(v - base, 3) for k, v in self.marks.items()}
        return out


def _start(rn: RoutedNetwork, daemons: list[Daemon], load: Load,
           endpoints: dict[str, str] | None = None) -> Driver:
    """The driver calling ``daemons`` (through ``endpoints`` where given), ready."""
    via = endpoints or {}
    requests = [via.get(d.peer.requests, d.peer.requests) for d in daemons]
    responses = [via.get(d.peer.responses, d.peer.responses) for d in daemons]
    driver = rn.driver(requests, responses, **load.args())
    driver.wait_ready()
    return driver


def _until(predicate: Callable[[], bool], what: str,
           timeout_s: float = CONDITION_TIMEOUT_S) -> float:
    """Wait for a condition; the monotonic time it held."""
    try:
        wait_until(predicate, timeout_s=timeout_s, interval_s=0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s}s: {what}") from None
    return time.monotonic()


def _busy(daemons: list[Daemon], since: float = 0.0, runs: int = WARM_RUNS) -> float:
    return _until(lambda: all(d.runs_between(since) >= runs for d in daemons),
                  f"each of {[d.name for d in daemons]} ran {runs} calls")


def _outage(rn: RoutedNetwork, daemon: Daemon, path: NetPath, cut_at: float, outage_s: float,
            marks: dict[str, float], *, until_client_dropped: bool = False) -> None:
    """Keep the cut ``outage_s`` (and, with ``until_client_dropped``, until the client's
    keepalive dropped its ``path`` connections), noting when each end dropped them
    (``client_dropped``, ``host_dropped``), and when the client had no request connection
    (``client_requests_dropped``), if it did."""
    ends: list[tuple[str, Literal["client", "host"]]] = [("client_dropped", "client"),
                                                         ("host_dropped", "host")]
    give_up = cut_at + CONDITION_TIMEOUT_S
    while True:
        now = time.monotonic()
        for mark, side in ends:
            if mark not in marks and rn.established(daemon, path, side=side) == 0:
                marks[mark] = now
        if (path != "responses" and "client_requests_dropped" not in marks
                and rn.established(daemon, "requests") == 0):
            marks["client_requests_dropped"] = now  # the client reset its request route
        waiting = until_client_dropped and "client_dropped" not in marks
        if now >= cut_at + outage_s and not waiting:
            return
        if now >= give_up:
            raise AssertionError(f"the client kept its {path} connections to {daemon.name} "
                                 f"through {CONDITION_TIMEOUT_S}s of outage")
        time.sleep(0.1)


def _finish(name: str, load: Load, driver: Driver, daemons: list[Daemon],
            marks: dict[str, float], *, stop: bool = True, dropped: int = 0) -> Outcome:
    """Stop the calls (or, ``stop=False``, let the driver make them all), and count."""
    if "heal" in marks:
        time.sleep(max(0.0, marks["heal"] + load.after_heal_s - time.monotonic()))
    result = driver.finish(stop=stop)
    return Outcome(name, load, result, {d.name: d.runs() for d in daemons}, marks, dropped)


def _reconnected(rn: RoutedNetwork, daemon: Daemon, marks: dict[str, float]) -> None:
    marks["reconnected"] = _until(lambda: rn.established(daemon) == 2,
                                  f"the client reconnected both paths to {daemon.name}")


# -- the scenarios -------------------------------------------------------------------------


def delay_and_loss(rn: RoutedNetwork, load: Load, *, calls: int, delay_ms: float = 50.0,
                   loss_percent: float = 5.0) -> Outcome:
    """Two hosts, every byte delayed ``delay_ms`` each way and ``loss_percent`` % of the
    client link's packets dropped each way, for the whole run of ``calls`` calls."""
    daemons = [rn.serve("a"), rn.serve("b")]
    via = rn.forward(daemons, delay_ms)
    loss = rn.loss(loss_percent)
    driver = _start(rn, daemons, replace(load, max_calls=calls), via)
    marks = {"start": driver.started_at}
    result = driver.finish(stop=False)
    return Outcome("delay_and_loss", load, result, {d.name: d.runs() for d in daemons}, marks,
                   loss.dropped())


def cut_one_of_two(rn: RoutedNetwork, load: Load, *, outage_s: float) -> Outcome:
    """Two hosts under load; all traffic to and from host b cut for ``outage_s``, then
    healed."""
    a, b = rn.serve("a"), rn.serve("b")
    driver = _start(rn, [a, b], load)
    _busy([a, b])
    cut = rn.cut(b)
    marks = {"cut": time.monotonic()}
    _outage(rn, b, "both", marks["cut"], outage_s, marks)
    dropped = cut.dropped()
    marks["heal"] = cut.heal()
    _reconnected(rn, b, marks)
    _busy([b], since=marks["heal"])
    return _finish("cut_one_of_two", load, driver, [a, b], marks, dropped=dropped)


def cut_only_host(rn: RoutedNetwork, load: Load, *, outage_s: float,
                  name: str = "cut_only_host") -> Outcome:
    """One host under load, cut for ``outage_s``, then healed: the calls of the outage can
    only wait or fail."""
    a = rn.serve("a")
    driver = _start(rn, [a], load)
    _busy([a])
    cut = rn.cut(a)
    marks = {"cut": time.monotonic()}
    _outage(rn, a, "both", marks["cut"], outage_s, marks)
    dropped = cut.dropped()
    marks["heal"] = cut.heal()
    _reconnected(rn, a, marks)
    _busy([a], since=marks["heal"])
    return _finish(name, load, driver, [a], marks, dropped=dropped)


def cut_responses(rn: RoutedNetwork, load: Load, *, outage_s: float) -> Outcome:
    """One host under load; only its response path cut, for ``outage_s`` and at least until
    the client dropped that connection (its keepalive gave up on the silent, idle link):
    requests still arrive and run, their answers are lost with the connection, and only a
    retry can be answered, from the replay window, after the heal."""
    a = rn.serve("a")
    driver = _start(rn, [a], load)
    _busy([a])
    cut = rn.cut(a, "responses")
    marks = {"cut": time.monotonic()}
    _outage(rn, a, "responses", marks["cut"], outage_s, marks, until_client_dropped=True)
    dropped = cut.dropped()
    marks["heal"] = cut.heal()
    _reconnected(rn, a, marks)
    _busy([a], since=marks["reconnected"])
    return _finish("cut_responses", load, driver, [a], marks, dropped=dropped)


def link_flaps(rn: RoutedNetwork, load: Load, *, flaps: int, down_s: float,
               up_s: float) -> Outcome:
    """Two hosts under load; the router's link to host b goes down for ``down_s`` and up
    for ``up_s``, ``flaps`` times."""
    a, b = rn.serve("a"), rn.serve("b")
    driver = _start(rn, [a, b], load)
    _busy([a, b])
    marks: dict[str, float] = {}
    for n in range(flaps):
        marks[f"down{n}"] = rn.link_down("b")
        if n == 0:
            marks["cut"] = marks["down0"]
        time.sleep(down_s)
        marks[f"up{n}"] = rn.link_up("b")
        time.sleep(up_s)
    marks["heal"] = marks[f"up{flaps - 1}"]
    _busy([b], since=marks["heal"])
    return _finish("link_flaps", load, driver, [a, b], marks)


def split_rejoin(rn: RoutedNetwork, load: Load, *, outage_s: float, gap_s: float) -> Outcome:
    """Two hosts under load; host b cut for ``outage_s``; then its request path heals, and
    its response path ``gap_s`` after b has a request connection again, so b is reachable
    for requests it cannot answer."""
    a, b = rn.serve("a"), rn.serve("b")
    driver = _start(rn, [a, b], load)
    _busy([a, b])
    requests_cut, responses_cut = rn.cut(b, "requests"), rn.cut(b, "responses")
    marks = {"cut": time.monotonic()}
    _outage(rn, b, "both", marks["cut"], outage_s, marks)
    dropped = requests_cut.dropped() + responses_cut.dropped()
    marks["requests_heal"] = requests_cut.heal()
    # Up when b has a request connection again (a new one, if b's keepalive dropped the
    # old during the outage; the client's may still be waiting for its next retransmission).
    marks["requests_up"] = _until(lambda: rn.established(b, "requests", side="host") == 1,
                                  "the client reconnected its request path to b")
    time.sleep(gap_s)
    marks["responses_heal"] = marks["heal"] = responses_cut.heal()
    _reconnected(rn, b, marks)
    _busy([b], since=marks["heal"])
    return _finish("split_rejoin", load, driver, [a, b], marks, dropped=dropped)
