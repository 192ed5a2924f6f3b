"""zjobs.core.routing through the call engine, with a fake clock and no sockets: which
request endpoint each attempt goes to, when a route leaves the rotation and comes back,
and when its connection is reset."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from test_engine import Clock, make, ok, pong

from zjobs.core.engine import CallEngine
from zjobs.core.monitor import ProcessorMonitor
from zjobs.wire.heartbeat import Heartbeat, with_seq

A, B = "tcp://a:1", "tcp://b:1"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def start(engine: CallEngine, **options: Any) -> Any:
    call = engine.start("x", Future(), **options)
    return call, engine.order(call)


def answer(engine: CallEngine, call: Any, instance: str) -> None:
    assert engine.receive(ok(call.id, 1, instance=instance)) is not None


def cut_b(engine: CallEngine, clock: Clock) -> None:
    """Both routes answer a call each; then a call through b gets no answer in time."""
    for instance in ("ia", "ib"):
        call, order = start(engine)
        assert order[0] == (A if instance == "ia" else B)
        answer(engine, call, instance)
    answer(engine, start(engine)[0], "ia")
    call, order = start(engine, timeout_s=1.0)
    assert order[0] == B
    clock.now += 1.0
    engine.expire()


def test_calls_take_the_routes_in_turn(clock: Clock) -> None:
    engine = make(clock, routes=[A, B])
    firsts = [start(engine)[1][0] for _ in range(6)]
    assert firsts == [A, B, A, B, A, B]
    # The other route is always next in line: a full first one falls back to it.
    assert start(engine)[1] == (A, B)


def test_a_route_that_answers_nothing_leaves_the_rotation(clock: Clock) -> None:
    engine = make(clock, routes=[A, B])
    cut_b(engine, clock)
    assert engine.routes is not None and engine.routes.in_rotation == [A]
    assert {start(engine)[1] for _ in range(4)} == {(A,)}


def test_a_busy_route_that_answers_other_calls_stays(clock: Clock) -> None:
    engine = make(clock, routes=[A])
    slow, _ = start(engine, timeout_s=1.0)
    other, _ = start(engine, timeout_s=5.0)
    answer(engine, other, "ia")  # answered after slow was sent
    clock.now += 1.0
    engine.expire()
    assert engine.routes is not None and engine.routes.in_rotation == [A]
    assert engine.routes.suspicions == 0
    del slow


def test_a_retry_avoids_the_route_its_attempt_failed_on(clock: Clock) -> None:
    engine = make(clock, routes=[A, B])
    call, order = start(engine, timeout_s=1.0, retries=1)
    first = order[0]
    clock.now += 1.0
    again, _ = engine.expire()
    assert again == [call]
    assert engine.order(call)[0] != first


def test_only_an_answered_probe_brings_a_route_back(clock: Clock) -> None:
    engine = make(clock, routes=[A, B])
    cut_b(engine, clock)
    upkeep = engine.upkeep()
    assert upkeep is not None
    probes, resets = upkeep
    assert [route.endpoint for route, _ in probes] == [B] and resets == []
    (route, rid), = probes
    engine.probe_sent(route, rid, queued=True)
    # A late answer of an old call through b does not bring it back: only the probe's
    # pong proves that requests reach it and answers come back now.
    assert engine.receive(pong("someone-else's", "ib")) is None
    assert engine.routes is not None and engine.routes.in_rotation == [A]
    engine.receive(pong(rid, "ib"))
    assert sorted(engine.routes.in_rotation) == [A, B]
    assert engine.upkeep() is None


def test_probes_back_off_while_queued_and_retry_soon_when_not(clock: Clock) -> None:
    engine = make(clock, routes=[A, B])
    cut_b(engine, clock)
    sent = 0
    for _ in range(100):  # 1 s in 10 ms steps, every probe queued and never answered
        upkeep = engine.upkeep()
        assert upkeep is not None
        for route, rid in upkeep[0]:
            engine.probe_sent(route, rid, queued=True)
            sent += 1
        clock.now += 0.01
    assert 4 <= sent <= 10  # 50 ms, doubling to 250 ms
    unqueued = 0
    for _ in range(100):  # no connection: each probe fails at once, tried every 50 ms
        upkeep = engine.upkeep()
        assert upkeep is not None
        for route, rid in upkeep[0]:
            engine.probe_sent(route, rid, queued=False)
            unqueued += 1
        clock.now += 0.01
    assert unqueued >= 15


def beat(monitor: ProcessorMonitor, instance: str, seq: int) -> None:
    frames = Heartbeat("p", instance, 1000).to_frames()
    monitor.heartbeat(with_seq(frames, seq))


def test_a_silent_processor_has_its_route_reset_once(clock: Clock) -> None:
    monitor = ProcessorMonitor(3, clock=clock)
    engine = make(clock, routes=[A, B], monitor=monitor)
    beat(monitor, "ia", 1)
    beat(monitor, "ib", 1)
    cut_b(engine, clock)
    resets: list[str] = []
    for step in range(50):  # 5 s: b silent, a heartbeating
        if step % 10 == 0:
            beat(monitor, "ia", 2 + step)
        upkeep = engine.upkeep()
        assert upkeep is not None
        resets += upkeep[1]
        clock.now += 0.1
    assert resets == [B]


def test_a_heartbeating_processor_is_never_reset(clock: Clock) -> None:
    # Out of rotation because its job is slower than the timeout, but alive.
    monitor = ProcessorMonitor(3, clock=clock)
    engine = make(clock, routes=[A, B], monitor=monitor)
    cut_b(engine, clock)
    for step in range(100):
        if step % 10 == 0:
            beat(monitor, "ia", 1 + step)
            beat(monitor, "ib", 1 + step)
        upkeep = engine.upkeep()
        assert upkeep is not None and upkeep[1] == []
        clock.now += 0.1


def test_without_routes_the_sender_chooses(clock: Clock) -> None:
    engine = make(clock)
    call, order = start(engine)
    assert order == () and call.route is None
    assert engine.upkeep() is None


def test_routes_follow_membership(clock: Clock) -> None:
    engine = make(clock, routes=[A])
    engine.add_route(B)
    assert {start(engine)[1][0] for _ in range(2)} == {A, B}
    engine.remove_route(A)
    assert {start(engine)[1] for _ in range(3)} == {(B,)}
