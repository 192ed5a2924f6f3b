"""Heartbeat frames and sequence numbers (wire), and ProcessorMonitor (liveness, gaps)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zjobs.core.monitor import ProcessorMonitor
from zjobs.errors import ProtocolError
from zjobs.wire.codec import decode, encode
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC, STOPPED, Heartbeat, Load, with_seq


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def beat(instance: str = "i1", seq: int = 1, state: str = "running",
         interval_ms: int = 1000) -> list[bytes]:
    frames = Heartbeat("sq", instance, interval_ms, state, {"received": 3}).to_frames()
    return with_seq(frames, seq)


def test_heartbeat_round_trip_and_wire_shape() -> None:
    frames = beat(seq=5)
    assert frames[0] == b"\x00heartbeat"
    header = decode(frames[1])
    assert header["v"] == 1 and header["type"] == "heartbeat" and header["seq"] == 5
    assert header["processor"] == "sq" and header["instance"] == "i1"
    assert header["interval_ms"] == 1000 and header["state"] == "running"
    assert isinstance(header["time_ms"], int)
    assert decode(frames[2]) == {"received": 3}
    parsed = Heartbeat.from_frames(frames)
    assert (parsed.seq, parsed.processor, parsed.counters) == (5, "sq", {"received": 3})


def test_host_pid_and_load_travel_in_the_header() -> None:
    load = Load(in_flight=2, window_ms=1000, jobs=7, busy_us=3500, p50_us=400, p99_us=900)
    frames = Heartbeat("sq", "i1", 1000, counters={"ok": 7}, time_ms=5, host="h1", pid=42,
                       load=load).to_frames()
    header = decode(frames[1])
    assert (header["host"], header["pid"]) == ("h1", 42)
    assert header["load"] == {"in_flight": 2, "window_ms": 1000, "jobs": 7, "busy_us": 3500,
                              "p50_us": 400, "p99_us": 900}
    parsed = Heartbeat.from_frames(frames)
    assert (parsed.host, parsed.pid, parsed.load) == ("h1", 42, load)
    # Golden bytes of the load map: the keys in this order, shortest ints.
    assert encode(Load(1, 1000, 0, 0).to_map()) == bytes.fromhex(
        "84a9696e5f666c6967687401a977696e646f775f6d73cd03e8a46a6f627300a7627573795f757300")


def test_a_heartbeat_without_the_optional_fields_is_still_read() -> None:
    # What a peer that predates them (or does not send them) publishes.
    header = {"v": 1, "type": "heartbeat", "processor": "p", "instance": "i",
              "interval_ms": 10}
    parsed = Heartbeat.from_frames([HEARTBEAT_TOPIC, encode(header), encode({"ok": 1})])
    assert (parsed.host, parsed.pid, parsed.load, parsed.counters) == ("", 0, None, {"ok": 1})


@pytest.mark.parametrize("extra", [
    {"load": [1, 2]}, {"load": {"jobs": -1}}, {"load": {"p50_us": "fast"}},
    {"load": {"in_flight": True}}, {"host": 5, "pid": "x"}, {"pid": -3},
])
def test_mistyped_optional_fields_are_dropped_not_the_heartbeat(extra: dict[str, object]) -> None:
    header = {"v": 1, "type": "heartbeat", "processor": "p", "instance": "i",
              "interval_ms": 10, **extra}
    parsed = Heartbeat.from_frames([HEARTBEAT_TOPIC, encode(header), encode({})])
    assert parsed.processor == "p"
    assert parsed.load is None or "load" not in extra
    assert isinstance(parsed.host, str) and parsed.pid >= 0


def test_the_monitor_keeps_each_peers_host_pid_and_load() -> None:
    monitor = ProcessorMonitor()
    load = Load(jobs=3, window_ms=1000, p50_us=10, p99_us=20)
    monitor.heartbeat(with_seq(Heartbeat("sq", "i1", 1000, host="h", pid=9,
                                         load=load).to_frames(), 1))
    peer = monitor.peer("i1")
    assert peer is not None and (peer.host, peer.pid, peer.load, peer.beats) == ("h", 9, load, 1)


@pytest.mark.parametrize("frames", [
    [HEARTBEAT_TOPIC, encode({"v": 1})],
    [b"\x00other", encode({"v": 1}), encode(None)],
    [HEARTBEAT_TOPIC, encode([1]), encode(None)],
    [HEARTBEAT_TOPIC, encode({"v": True, "type": "heartbeat", "processor": "p",
                              "instance": "i", "interval_ms": 10}), encode(None)],
    [HEARTBEAT_TOPIC, encode({"v": 1, "type": "heartbeat", "processor": "p",
                              "instance": "i", "interval_ms": 0}), encode(None)],
    [HEARTBEAT_TOPIC, encode({"v": 1, "type": "heartbeat", "processor": "p",
                              "instance": "", "interval_ms": 10}), encode(None)],
    [HEARTBEAT_TOPIC, b"\xc1", encode(None)],
])
def test_malformed_heartbeats_are_refused(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        Heartbeat.from_frames(frames)
    assert ProcessorMonitor().heartbeat(frames) is None


@given(st.integers(min_value=0, max_value=2**64 - 1),
       st.dictionaries(st.text(max_size=5), st.integers(-5, 5), max_size=20))
def test_with_seq_adds_the_shortest_int_to_any_map(seq: int, header: dict[str, int]) -> None:
    out = with_seq([b"t", encode(header), b"\xc0"], seq)
    assert decode(out[1]) == {**header, "seq": seq}
    assert out[1].endswith(encode("seq") + encode(seq))


def test_gaps_are_counted_per_instance() -> None:
    monitor = ProcessorMonitor()
    assert monitor.sequence("a", 1) == 0
    assert monitor.sequence("a", 2) == 0
    assert monitor.sequence("a", 5) == 2
    assert monitor.sequence("b", 9) == 0  # first message of another run: no gap
    assert monitor.sequence("a", 4) == 0  # late, out of order: not a gap
    assert monitor.sequence("a", 6) == 0
    assert monitor.sequence(None, 7) == 0
    assert monitor.gaps == 2
    peer = monitor.peer("a")
    assert peer is not None and (peer.seq, peer.gaps) == (6, 2)


def test_heartbeats_count_in_the_sequence() -> None:
    monitor = ProcessorMonitor()
    monitor.sequence("i1", 1)
    monitor.heartbeat(beat(seq=4))
    assert monitor.gaps == 2


def test_liveness_by_intervals() -> None:
    clock = Clock()
    monitor = ProcessorMonitor(liveness=3, clock=clock)
    assert not monitor.all_gone()  # nothing heard yet: no judgement
    monitor.heartbeat(beat("a", interval_ms=100))
    monitor.heartbeat(beat("b", interval_ms=1000))
    clock.now = 0.5
    assert [p.instance for p in monitor.alive()] == ["b"]
    assert not monitor.all_gone()
    clock.now = 3.5
    assert monitor.alive() == []
    assert monitor.all_gone()
    monitor.heartbeat(beat("c", interval_ms=100))  # a restarted processor: a new instance
    assert not monitor.all_gone()


def test_stopped_heartbeat_means_gone_at_once() -> None:
    clock = Clock()
    monitor = ProcessorMonitor(clock=clock)
    monitor.heartbeat(beat("a"))
    monitor.heartbeat(beat("a", seq=2, state=STOPPED))
    assert monitor.all_gone()


def test_instances_known_only_by_seq_are_not_judged() -> None:
    monitor = ProcessorMonitor()
    monitor.sequence("a", 1)
    assert not monitor.all_gone()
    assert [p.instance for p in monitor.alive()] == ["a"]


def test_peers_are_bounded() -> None:
    clock = Clock()
    monitor = ProcessorMonitor(clock=clock, max_peers=3)
    for i in range(10):
        clock.now = i
        monitor.heartbeat(beat(f"i{i}", interval_ms=100))
    assert sorted(p.instance for p in monitor) == ["i7", "i8", "i9"]
