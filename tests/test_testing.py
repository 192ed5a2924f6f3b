"""zjobs.testing: the helpers shipped to users for their own tests."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest

from zjobs import NotReady, ReceiveTimeout, ZmqReceiver, ZmqSender
from zjobs.testing import running_processor, wait_subscribed, wait_until

WAIT_S = 10.0


def double(request: Any, resources: Any) -> Any:
    return request * 2


def test_wait_until_returns_once_true() -> None:
    counter = itertools.count()
    wait_until(lambda: next(counter) >= 3, timeout_s=WAIT_S, interval_s=0)
    assert next(counter) == 4


def test_wait_until_times_out() -> None:
    with pytest.raises(TimeoutError, match=r"0\.05"):
        wait_until(lambda: False, timeout_s=0.05)


def test_running_processor_serves_and_stops() -> None:
    with running_processor(double, name="dbl") as proc:
        assert proc.state == "running"
        assert proc.name == "dbl"
        with proc.client() as client:
            assert client.call(21) == 42
    assert proc.state == "stopped"


def test_running_processor_with_ipc(ipc_dir: Path) -> None:
    requests, responses = f"ipc://{ipc_dir}/rq", f"ipc://{ipc_dir}/rs"
    with running_processor(double, requests=requests, responses=responses) as proc:
        assert proc.endpoints.requests == requests
        with proc.client() as client:
            assert client.call("ab") == "abab"


def test_running_processor_stops_after_an_error_in_the_block() -> None:
    with pytest.raises(RuntimeError, match="in the test"):
        with running_processor(double) as proc:
            raise RuntimeError("in the test")
    assert proc.state == "stopped"


def test_wait_subscribed_then_responses_reach_the_receiver() -> None:
    with running_processor(double) as proc, proc.sender() as sender, \
         proc.receiver(["mine"]) as receiver:
        wait_subscribed(sender, receiver, topic="mine")
        rid = sender.send(5, reply_to="mine")
        while (response := receiver.receive(timeout=WAIT_S)).id != rid:
            assert response.status == "pong"  # only late handshake pongs come before it
        assert response.value == 10


def test_wait_subscribed_bytes_topic() -> None:
    with running_processor(double) as proc, proc.sender() as sender, \
         proc.receiver([b"\x01bin"]) as receiver:
        wait_subscribed(sender, receiver, topic=b"\x01bin")


def test_wait_subscribed_raises_not_ready_without_a_processor() -> None:
    with ZmqSender("tcp://127.0.0.1:1") as sender, ZmqReceiver("tcp://127.0.0.1:2") as receiver:
        with pytest.raises(NotReady) as info:
            wait_subscribed(sender, receiver, timeout_s=0.1)
        assert isinstance(info.value, TimeoutError)
        assert info.value.endpoints == ["tcp://127.0.0.1:1"]


def test_wait_subscribed_from_several_threads() -> None:
    errors: list[BaseException] = []
    with running_processor(double) as proc:
        def probe(n: int) -> None:
            try:
                with proc.sender() as sender, proc.receiver([f"t{n}"]) as receiver:
                    wait_subscribed(sender, receiver, topic=f"t{n}")
                    with pytest.raises(ReceiveTimeout):
                        # Nothing but pongs was on this topic: after draining, it stays quiet.
                        while True:
                            assert receiver.receive(timeout=0.2).status == "pong"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=probe, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_wait_subscribed_keeps_trying_when_pings_cannot_be_sent() -> None:
    # With ZMQ_IMMEDIATE and no connection up, every ping send times out: that is "not
    # ready yet", so the helper keeps trying and reports NotReady at its deadline.
    with ZmqSender("tcp://127.0.0.1:1", immediate=True, send_timeout_s=0.01) as sender, \
         ZmqReceiver("tcp://127.0.0.1:2") as receiver:
        with pytest.raises(NotReady):
            wait_subscribed(sender, receiver, timeout_s=0.2)


def test_wait_subscribed_succeeds_once_the_connection_comes_up() -> None:
    with running_processor(double) as proc, \
         ZmqSender(proc.endpoints.requests, immediate=True, send_timeout_s=0) as sender, \
         proc.receiver(["t"]) as receiver:
        wait_subscribed(sender, receiver, topic="t")
