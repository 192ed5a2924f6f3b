"""zjobs.transport.keepalive and zjobs.transport.reconnect: the options each socket gets,
and that TCP keepalive never cuts a connection whose reader is only slow."""

from __future__ import annotations

import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zjobs import Keepalive, Reconnect
from zjobs.transport.keepalive import apply_keepalive


def test_zmtp_heartbeats_go_only_to_sending_sockets_and_never_with_a_ttl() -> None:
    keepalive = Keepalive(zmtp_interval_ms=300, zmtp_timeout_ms=900)
    ctx = zmq.Context.instance()
    for kind, sending in ((zmq.PUSH, True), (zmq.PUB, True), (zmq.PULL, False),
                          (zmq.SUB, False)):
        sock = ctx.socket(kind)
        try:
            apply_keepalive(sock, keepalive)
            assert sock.getsockopt(zmq.TCP_KEEPALIVE) == 1
            expected = [300, 900] if sending else [0, -1]
            assert [sock.getsockopt(zmq.HEARTBEAT_IVL),
                    sock.getsockopt(zmq.HEARTBEAT_TIMEOUT)] == expected, kind
            assert sock.getsockopt(zmq.HEARTBEAT_TTL) == 0
        finally:
            sock.close()


def test_settings_are_checked() -> None:
    for bad in ({"idle_s": 0}, {"interval_s": -1}, {"count": 0}, {"zmtp_interval_ms": 0},
                {"zmtp_timeout_ms": 0}):
        with pytest.raises(ValueError):
            Keepalive(**bad)  # type: ignore[arg-type]
    for bad in ({"connect_timeout_ms": 0}, {"interval_ms": 0},
                {"interval_ms": 500, "max_interval_ms": 100}):
        with pytest.raises(ValueError):
            Reconnect(**bad)  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_tcp_keepalive_keeps_a_connection_whose_reader_paused_past_every_timeout() -> None:
    # The shortest keepalive (probe after 1 s, every 1 s, drop after 1 unanswered) on both
    # ends, a reader whose queue is full and stays unread for 4 s: the peer's kernel
    # answers every probe, so nothing is dropped. (ZMTP heartbeats of 1 s drop this
    # connection with nearly all of the 3,000 messages.)
    keepalive = Keepalive(idle_s=1, interval_s=1, count=1)
    ctx = zmq.Context.instance()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    events = None
    try:
        pull.linger = push.linger = 0
        pull.rcvhwm = 10
        push.sndhwm = 1000
        apply_keepalive(pull, keepalive)
        apply_keepalive(push, keepalive)
        pull.bind("tcp://127.0.0.1:*")
        events = push.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        push.connect(pull.getsockopt(zmq.LAST_ENDPOINT).decode())  # type: ignore[union-attr]
        sent = 0
        deadline = time.monotonic() + 20
        while sent < 3000 and time.monotonic() < deadline:
            try:
                push.send(b"m%d" % sent, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.01)
        assert sent == 3000
        time.sleep(4.0)  # the reader is busy: the stall under test, not a wait for a condition
        got = 0
        while pull.poll(2000):
            pull.recv()
            got += 1
        disconnects = 0
        while events.poll(0):
            recv_monitor_message(events)
            disconnects += 1
        assert (got, disconnects) == (3000, 0)
    finally:
        if events is not None:
            events.close()
            push.disable_monitor()
        push.close()
        pull.close()
