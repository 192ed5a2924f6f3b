"""The reliability guarantees with coalescing on: faults while calls travel as batches.

Real ``zjobs serve`` daemons run :func:`jobs_reliability.logged` (or ``paced``, the same
with a batch taking a few ms), which appends every run of the job to a file per daemon
process: the side channel that counts runs per value and per processor run (and so per
replay window), also of a daemon killed before it answered.
Each test warms the client up until it coalesces (it holds calls only once it measured
fast answers), then plays a fault during a burst and asserts counts: every call answered
once with its own value or error, none lost, the job's runs per value bounded, and
batches sent during the fault. Both clients (the ``connect`` fixture).
"""

from __future__ import annotations

import ast
import asyncio
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from drivers import WAIT_S, Driven
from jobs_interop import Peer
from jobs_reliability import RUN_LOG_ENV, serve

from zjobs import AsyncClient, ClosedError, RemoteError
from zjobs.testing import wait_until

pytestmark = pytest.mark.timeout(180)

TIMEOUT_S = 1.0
"""One attempt's time: short, so that a call stuck in a dead or stopped daemon is retried
within the test."""
CALLS = 1_000


class RunLog:
    """The job's runs, read from the files its daemons append to (one per process)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def runs(self, peer: Peer) -> Counter[Any]:
        """How often each value ran in ``peer``'s process (one daemon run, one window)."""
        path = self.folder / f"{peer.pid}.log"
        if not path.exists():
            return Counter()
        return Counter(ast.literal_eval(line) for line in path.read_text().splitlines())


@pytest.fixture
def run_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunLog:
    monkeypatch.setenv(RUN_LOG_ENV, str(tmp_path))  # daemons started from now inherit it
    return RunLog(tmp_path)


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    """Daemons to stop at the end (continued first, in case a test stopped one)."""
    started: list[Peer] = []
    yield started
    for peer in started:
        if peer.proc.poll() is None:
            peer.proc.send_signal(signal.SIGCONT)
        peer.stop()


class Answers:
    """Each call's outcomes as its caller saw them (done-callbacks), by index."""

    def __init__(self) -> None:
        self.count: Counter[int] = Counter()
        self.futures: list[Future[Any]] = []
        self._lock = threading.Lock()

    def add(self, futures: list[Future[Any]]) -> None:
        for future in futures:
            index = len(self.futures)
            self.futures.append(future)
            future.add_done_callback(partial(self._note, index))

    def _note(self, index: int, _: Future[Any]) -> None:
        with self._lock:
            self.count[index] += 1

    def outcomes(self) -> list[Any]:
        """Each call's value or error; every call must end within WAIT_S (none hangs)."""
        return [f.exception(WAIT_S) or f.result() for f in self.futures]

    def not_done(self, values: list[int]) -> set[int]:
        """The values (in submit order) whose calls are not answered yet."""
        return {v for v, f in zip(values, self.futures, strict=False) if not f.done()}

    def once_each(self) -> bool:
        return sorted(self.count.values()) == [1] * len(self.futures)


def warm_up(client: Driven, rounds: int = 12) -> None:
    """Bursts, growing, until one was coalesced: the client holds calls only once it has
    measured fast answers over a pace window, and a short burst is all answered within
    one (its answers read at once, as a backlog is)."""
    client.call("warm")
    for round_ in range(rounds):
        before = client.coalesced
        size = min(300 << round_, 4_000)
        futures = client.submit_many(f"warm-{round_}-{n}" for n in range(size))
        for future in futures:
            future.result(WAIT_S)
        if client.coalesced > before:
            return
    raise AssertionError(f"no call coalesced in {rounds} warm-up bursts")


def reaches(client: Driven, run_log: RunLog, peer: Peer, start: int) -> None:
    """Call with new values (from ``start``) one at a time until one runs in ``peer``."""
    fresh = iter(range(start, start + 100_000))

    def ran_there() -> bool:
        value = next(fresh)
        assert client.call(value) == 2 * value
        return value in run_log.runs(peer)

    wait_until(ran_there, WAIT_S)


def sigstop(peer: Peer) -> None:
    """SIGSTOP ``peer`` (by PID), and wait until every thread of it is stopped: the signal
    is only queued when ``kill`` returns, and a daemon still running meanwhile could take
    up a batch sent right after."""
    peer.proc.send_signal(signal.SIGSTOP)

    def stopped() -> bool:
        tasks = Path(f"/proc/{peer.pid}/task")
        states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                  for task in tasks.iterdir()]
        return all(state in "Tt" for state in states)

    wait_until(stopped, WAIT_S)


def values_of(counter: Counter[Any]) -> Counter[Any]:
    """The runs of the test's values (ints), without the warm-up's strings."""
    return Counter({v: n for v, n in counter.items() if type(v) is int})


def test_kill_9_of_one_of_two_daemons_during_coalesced_bursts(
        connect: Callable[..., Driven], run_log: RunLog, peers: list[Peer]) -> None:
    a, b = serve("paced", name="a"), serve("paced", name="b")
    peers += [a, b]
    client = connect([a.requests, b.requests], [a.responses, b.responses],
                     timeout_s=TIMEOUT_S, retries=8)
    client.wait_ready(60)
    warm_up(client)
    before = client.coalesced
    answers = Answers()
    values = list(range(CALLS))
    answers.add(client.submit_many(values[:CALLS // 2]))
    # Killed by PID as soon as it runs the burst (its run log says so): in the middle of
    # its backlog of batches, one of them running.
    wait_until(lambda: bool(values_of(run_log.runs(a))), WAIT_S, interval_s=0)
    a.proc.send_signal(signal.SIGKILL)
    at_kill, in_flight = client.coalesced, answers.not_done(values)
    answers.add(client.submit_many(values[CALLS // 2:]))
    assert answers.outcomes() == [2 * v for v in values]  # 0 lost, each its own value
    assert answers.once_each()
    assert a.proc.wait(WAIT_S) == -signal.SIGKILL
    assert at_kill > before  # the burst was coalesced when the kill came
    ran_a, ran_b = values_of(run_log.runs(a)), values_of(run_log.runs(b))
    # At most once per value per daemon run (the replay window answers a repeat).
    assert max(ran_a.values(), default=1) == 1 and max(ran_b.values()) == 1
    assert set(ran_a) | set(ran_b) == set(values)
    # What a ran but never answered ran again on b: only calls in flight at the kill (in
    # the batches then queued in a or on their way, or alone), so at most the calls of the
    # batches in flight then; nothing answered before the kill, nothing sent after it.
    # Measured: 0 to 62 values (about the batch a was running) of 0 to 500 in flight.
    twice = set(ran_a) & set(ran_b)
    assert twice <= in_flight, sorted(twice - in_flight)
    assert b.stop() == 0, b.diagnostics()


def test_a_daemon_restarted_mid_stream_loses_nothing_and_answers_each_call_once(
        connect: Callable[..., Driven], run_log: RunLog, peers: list[Peer]) -> None:
    # kill -9 of one of two daemons, then `zjobs serve` again on its endpoints, twice, each
    # time in the middle of a stream of bursts: the calls it had are retried (on the other
    # daemon, or on its next run through the same endpoints); each caller gets one answer.
    a, b = serve("paced", name="a"), serve("paced", name="b")
    peers += [a, b]
    client = connect([a.requests, b.requests], [a.responses, b.responses],
                     timeout_s=TIMEOUT_S, retries=30)
    client.wait_ready(60)
    answers = Answers()
    values = list(range(2 * CALLS))
    chunks = [values[start:start + CALLS // 4] for start in range(0, len(values), CALLS // 4)]
    runs = [a]
    in_flight: set[int] = set()
    batches: list[int] = []  # batches sent in the chunk before each kill
    for cycle in range(2):
        # Coalescing again: an outage's answers came slowly (after timeouts), and slow
        # answers stop the holding until fast ones are measured again.
        warm_up(client)
        start = client.coalesced
        answers.add(client.submit_many(chunks[4 * cycle]))
        batches.append(client.coalesced - start)
        runs[-1].proc.send_signal(signal.SIGKILL)
        in_flight |= answers.not_done(values)
        answers.add(client.submit_many(chunks[4 * cycle + 1]))  # the stream goes on
        runs.append(serve("paced", a.requests, a.responses, name="a"))
        peers.append(runs[-1])
        answers.add(client.submit_many(chunks[4 * cycle + 2]))
        reaches(client, run_log, runs[-1], 10_000 * (cycle + 1))  # serving again
        answers.add(client.submit_many(chunks[4 * cycle + 3]))
    assert answers.outcomes() == [2 * v for v in values]  # 0 lost
    assert answers.once_each()  # no duplicate answer to any caller
    # A kill came in a coalesced burst. Not necessarily both: after an outage the client
    # may find the answers slow (they came after timeouts) and send the next burst alone,
    # until it has measured fast answers again.
    assert any(batches), batches
    assert (runs[-1].requests, runs[-1].responses) == (a.requests, a.responses)
    ran = [values_of(run_log.runs(peer)) for peer in [*runs, b]]
    assert all(max(counts.values(), default=1) == 1 for counts in ran)  # once per window
    assert set().union(*ran) >= set(values)
    # Runs of one value in two daemon runs: only of calls in flight at a kill.
    twice = {v for v in values if sum(counts[v] for counts in ran) > 1}
    assert twice <= in_flight, sorted(twice - in_flight)
    assert runs[-1].stop() == 0 and b.stop() == 0


def test_a_daemon_stopped_longer_than_the_timeout_leaves_the_rotation(
        connect: Callable[..., Driven], run_log: RunLog, peers: list[Peer]) -> None:
    # SIGSTOP of one of two daemons before a burst: the batches sent to it time out and go
    # to the other (the route is out of rotation), so every call is answered while it is
    # still stopped. SIGCONT: it runs what was queued in it, if its connection was not
    # reset meanwhile; those answers come late and are ignored.
    a, b = serve("logged", name="a"), serve("logged", name="b")
    peers += [a, b]
    client = connect([a.requests, b.requests], [a.responses, b.responses],
                     timeout_s=TIMEOUT_S, retries=8)
    client.wait_ready(60)
    warm_up(client)
    before, resent = client.coalesced, client.resent
    sigstop(a)
    answers = Answers()
    values = list(range(CALLS))
    answers.add(client.submit_many(values))
    assert answers.outcomes() == [2 * v for v in values]  # all while a is stopped
    assert answers.once_each()
    assert client.coalesced > before and client.resent > resent
    assert not values_of(run_log.runs(a))
    unmatched = client.unmatched
    a.proc.send_signal(signal.SIGCONT)
    reaches(client, run_log, a, CALLS)  # back in rotation; its backlog ran first
    ran_a, ran_b = values_of(run_log.runs(a)), values_of(run_log.runs(b))
    assert max(ran_a.values()) == 1 and max(ran_b.values()) == 1
    assert set(ran_b) >= set(values)
    twice = set(ran_a) & set(values)  # the backlog a ran after SIGCONT, answered by b
    assert not twice or client.unmatched > unmatched  # its answers came, and were ignored
    assert a.stop() == 0 and b.stop() == 0


def test_a_batch_with_failing_items_retried_after_a_timeout_answers_each_call_once(
        connect: Callable[..., Driven], run_log: RunLog, peers: list[Peer]) -> None:
    # One daemon, stopped for longer than the timeout during a burst of coalesced calls,
    # some of which fail (the job raises for negative values): every batch is sent again
    # with its id, to the same daemon. Continued, it runs each batch once and answers the
    # repeats from its replay window: each caller gets its own value or its own JobFailed,
    # and the job ran exactly once per call.
    a = serve("logged", name="a")
    peers.append(a)
    client = connect(a.requests, a.responses, timeout_s=TIMEOUT_S, retries=8)
    client.wait_ready(60)
    warm_up(client)
    before, resent = client.coalesced, client.resent
    sigstop(a)
    answers = Answers()
    values = [-n - 1 if n % 7 == 3 else n for n in range(CALLS)]
    answers.add(client.submit_many(values))
    wait_until(lambda: client.resent > resent, WAIT_S)  # attempts timed out, sent again
    coalesced = client.coalesced
    a.proc.send_signal(signal.SIGCONT)
    outcomes = answers.outcomes()
    assert answers.once_each()
    for value, outcome in zip(values, outcomes, strict=True):
        if value < 0:
            assert isinstance(outcome, RemoteError), (value, outcome)
            assert outcome.type == "JobFailed"
            assert outcome.message == f"ValueError: negative: {value}"
        else:
            assert outcome == 2 * value
    assert coalesced > before  # the burst went as batches, and those were retried
    assert values_of(run_log.runs(a)) == Counter(values)  # once each, failures too

    def replayed() -> bool:  # the daemon's own count, from its heartbeats
        return any(peer.counters.get("replays", 0) > 0 for peer in client.monitor)

    wait_until(replayed, WAIT_S)
    assert a.stop() == 0


def test_close_while_calls_are_held_and_in_flight_ends_every_call(
        connect: Callable[..., Driven], run_log: RunLog, peers: list[Peer]) -> None:
    # The daemon is stopped, so what is sent stays in flight; bursts go on until another
    # thread closes the client in their middle (with calls held, batches in flight, and
    # sends under way). Every call ends, with ClosedError, and nothing leaks (conftest).
    a = serve("logged", name="a")
    peers.append(a)
    client = connect(a.requests, a.responses, timeout_s=WAIT_S, retries=8)
    client.wait_ready(60)
    warm_up(client)
    before = client.coalesced
    a.proc.send_signal(signal.SIGSTOP)

    def close_when_busy() -> None:
        wait_until(lambda: client.coalesced > before + 4 and client.pending >= 500, WAIT_S)
        client.close()

    closer = threading.Thread(target=close_when_busy, name="test-closer")
    closer.start()
    answers = Answers()
    sent = 0
    while not client.closed and sent < 100_000:
        answers.add(client.submit_many(range(sent, sent + 50)))
        sent += 50
    closer.join(WAIT_S)
    assert not closer.is_alive()
    outcomes = answers.outcomes()  # none hangs
    assert len(outcomes) == sent and answers.once_each()
    assert all(isinstance(outcome, ClosedError) for outcome in outcomes), \
        Counter(type(outcome).__name__ for outcome in outcomes)
    assert client.coalesced > before + 4
    a.proc.send_signal(signal.SIGCONT)
    assert a.stop() == 0


def test_aclose_with_calls_held_ends_each_of_them(run_log: RunLog, peers: list[Peer]) -> None:
    # The asyncio client closed in the same turn of the loop as the calls it holds (none
    # was sent yet): each held call, and each batch in flight, ends with ClosedError.
    a = serve("logged", name="a")
    peers.append(a)

    async def main() -> tuple[int, list[Any]]:
        client = AsyncClient.connect(a.requests, a.responses, timeout_s=WAIT_S)
        futures: list[asyncio.Future[Any]] = []
        held = 0
        try:
            await client.wait_ready(60)
            for round_ in range(12):  # warm up until it coalesces (see warm_up)
                await asyncio.gather(*[await client.submit(f"warm-{round_}-{n}")
                                       for n in range(min(300 << round_, 4_000))])
                if client.coalesced:
                    break
            a.proc.send_signal(signal.SIGSTOP)  # what is sent stays in flight
            futures = [await client.submit(n) for n in range(100)]
            held = client._engine.held
        finally:
            await client.aclose()
        return held, await asyncio.gather(*futures, return_exceptions=True)

    held, outcomes = asyncio.run(main())
    assert held > 0
    assert len(outcomes) == 100 and all(isinstance(o, ClosedError) for o in outcomes)
    a.proc.send_signal(signal.SIGCONT)
    assert a.stop() == 0
