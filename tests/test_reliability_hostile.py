"""Hostile input against a live daemon: random frame counts, random bytes and random msgpack
values in every header field, while a control client keeps calling. Every control call is
answered correctly, and the daemon's counters (read from its heartbeats) account for every
bad message. A frame over the size limit disconnects only the peer that sent it."""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobs_reliability import serve
from zmq.utils.monitor import recv_monitor_message

from zjobs import Client, ProcessorMonitor, ReceiveTimeout, ZmqReceiver, ZmqSender
from zjobs.core.monitor import PeerState
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC
from zjobs.wire.protocol import InvalidRequest, parse_request


def pack(value: Any) -> bytes:
    # The hostile peer packs with msgpack itself, not with zjobs' codec.
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats() | st.text(max_size=12) | st.binary(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4) | st.integers(-3, 3), inner, max_size=3),
    max_leaves=8,
)
# Values a processor could mistake for the real thing, next to random ones.
plausible = {
    "v": st.sampled_from([1, 0, 2, True, 1.0, "1", -1, 2**64 - 1]),
    "id": st.text(min_size=0, max_size=70) | st.binary(min_size=0, max_size=300),
    "reply_to": st.text(max_size=10) | st.binary(max_size=10)
    | st.binary(max_size=5).map(lambda b: b"\x00" + b),
    "ping": st.booleans(),
    "deadline_ms": st.integers(min_value=0, max_value=2**62) | st.just(int(time.time() * 1000)),
    "meta": st.dictionaries(st.text(max_size=3), scalars, max_size=3),
    "dedup": st.booleans(),
}
headers = st.fixed_dictionaries(
    {}, optional={key: strategy | values for key, strategy in plausible.items()}
).flatmap(lambda base: st.dictionaries(st.text(max_size=6) | st.integers(-2, 2), values,
                                       max_size=2).map(lambda extra: {**extra, **base}))
# Valid requests with some fields (and the body) made hostile: these reach the job.
nearly_valid = st.tuples(
    st.fixed_dictionaries({"v": st.just(1), "id": st.text(min_size=1, max_size=8),
                           "reply_to": st.text(min_size=1, max_size=6)},
                          optional={k: v for k, v in plausible.items()
                                    if k not in ("v", "id", "reply_to")}),
    values | st.fixed_dictionaries({"fail": values}),
).map(lambda pair: [pack(pair[0]), pack(pair[1])])
frames_of = st.one_of(st.binary(max_size=40), values.map(pack), headers.map(pack))
messages = st.one_of(
    nearly_valid,
    st.tuples(headers.map(pack), frames_of).map(list),  # the right shape, hostile content
    st.lists(frames_of, min_size=1, max_size=4),  # any shape
)


def expected_outcome(frames: list[bytes]) -> str:
    """How ZJP/1 classifies a message, as far as it does not depend on the clock."""
    try:
        parse_request(frames)
    except InvalidRequest as exc:
        return "dropped" if exc.topic is None else "bad"
    return "valid"


class Control(threading.Thread):
    """Calls the daemon in a loop and records every wrong or missing answer."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="control-client")
        self.client = client
        self.calls = 0
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            n = self.calls
            try:
                got = self.client.call(n)
                if got != 2 * n:
                    self.errors.append(f"call {n} answered {got!r}")
            except Exception as exc:
                self.errors.append(f"call {n} failed: {exc!r}")
            self.calls += 1


def heartbeat_counters(monitor: ProcessorMonitor, receiver: ZmqReceiver,
                       instance: str) -> dict[str, int]:
    with pytest.raises(ReceiveTimeout):  # heartbeats only: they feed the monitor
        receiver.receive(timeout=0.2)
    peer: PeerState | None = monitor.peer(instance)
    return dict(peer.counters) if peer is not None else {}


def balanced(c: dict[str, int]) -> bool:
    return bool(c) and c["received"] == (c["ok"] + c["failed"] + c["expired"]
                                         + c["bad_requests"] + c["pongs"])


@pytest.mark.timeout(300)
def test_hostile_messages_never_disturb_the_daemon() -> None:
    daemon = serve("picky", name="hostile")
    monitor = ProcessorMonitor()
    try:
        with Client.connect(daemon.requests, daemon.responses, timeout_s=30) as client, \
                ZmqSender(daemon.requests) as hostile, \
                ZmqReceiver(daemon.responses, topics=[HEARTBEAT_TOPIC],
                            monitor=monitor) as beats:
            instance = client.call_response(1).instance
            assert instance is not None
            control = Control(client)
            control.start()
            sent = {"bad": 0, "dropped": 0, "valid": 0}
            try:
                @settings(max_examples=200, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much])
                @given(messages)
                def throw(frames: list[bytes]) -> None:
                    hostile.send_frames(frames)
                    sent[expected_outcome(frames)] += 1

                throw()
                while control.calls < 50:  # the control client ran throughout
                    time.sleep(0.01)
            finally:
                control.stop_event.set()
                control.join(60)
            assert control.errors == []
            counters: dict[str, int] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                counters = heartbeat_counters(monitor, beats, instance)
                if balanced(counters) and counters["bad_requests"] == (sent["bad"]
                                                                       + sent["dropped"]):
                    break
            total = sum(sent.values())
            print(f"\nhostile: {total} messages {sent}, {control.calls} control calls, "
                  f"daemon counters {counters}")
            assert balanced(counters), counters
            assert counters["bad_requests"] == sent["bad"] + sent["dropped"]
            assert counters["dropped"] == sent["dropped"]
            assert counters["received"] >= total + control.calls + 1
    finally:
        assert daemon.stop() == 0, daemon.diagnostics()


@pytest.mark.timeout(120)
def test_a_frame_over_the_size_limit_disconnects_only_its_sender() -> None:
    daemon = serve("picky", name="limited", extra=["--max-message-size", "65536"])
    ctx = zmq.Context.instance()
    offender = ctx.socket(zmq.PUSH)
    offender.linger = 0
    events = offender.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    try:
        offender.connect(daemon.requests)
        assert events.poll(30_000)
        assert recv_monitor_message(events)["event"] == zmq.EVENT_CONNECTED
        with Client.connect(daemon.requests, daemon.responses, timeout_s=30) as client:
            assert client.call(1) == 2
            before = client.call_response(0)
            header = pack({"v": 1, "id": "big", "reply_to": client.topic})
            offender.send_multipart([header, pack(bytes(100_000))])  # body frame > 64 KiB
            assert events.poll(30_000), "the offender was not disconnected"
            assert recv_monitor_message(events)["event"] == zmq.EVENT_DISCONNECTED
            # Everyone else is served, by the same processor run, and nothing answered "big".
            assert [client.call(n) for n in range(20)] == [2 * n for n in range(20)]
            assert client.call(bytes(60_000)) == bytes(60_000)  # under the limit: fine
            assert client.call_response(0).instance == before.instance
            assert client.unmatched == 0
    finally:
        events.close()
        offender.disable_monitor()
        offender.close()
        assert daemon.stop() == 0, daemon.diagnostics()
