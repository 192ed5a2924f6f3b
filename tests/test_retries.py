"""Client retries (Lazy Pirate): same id, exactly one result, CallTimeout naming the attempts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from zjobs import (
    CallTimeout,
    Client,
    MemoryProcessor,
    NotReady,
    SendTimeout,
    ZmqProcessor,
    ZmqReceiver,
    ZmqSender,
)
from zjobs.testing import wait_until
from zjobs.wire.codec import decode, decode_header, encode

Policy = Callable[[dict[str, Any], int], int]
"""Given a request header and how many times its id was seen, how many answers to publish."""


class FakeProcessor:
    """A raw PULL/PUB peer that answers requests as a policy says (0, 1 or more times)."""

    def __init__(self, policy: Policy) -> None:
        ctx = zmq.Context.instance()
        self.pull, self.pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
        self.pull.linger = self.pub.linger = 0
        self.pull.bind("tcp://127.0.0.1:*")
        self.pub.bind("tcp://127.0.0.1:*")
        self.requests = self.pull.LAST_ENDPOINT.decode()
        self.responses = self.pub.LAST_ENDPOINT.decode()
        self.policy = policy
        self.seen: dict[Any, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-processor")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.pull.poll(20):
                continue
            header_bytes, body = self.pull.recv_multipart()
            header = decode_header(header_bytes)
            rid = header["id"]
            topic = header["reply_to"].encode()
            if header.get("ping"):
                out = {"v": 1, "id": rid, "status": "pong", "cached": False,
                       "processor": "fake", "instance": "f1"}
                self.pub.send_multipart([topic, encode(out), encode(None)])
                continue
            self.seen[rid] = self.seen.get(rid, 0) + 1
            for n in range(self.policy(header, self.seen[rid])):
                out = {"v": 1, "id": rid, "status": "ok", "cached": False,
                       "processor": "fake", "instance": "f1"}
                self.pub.send_multipart([topic, encode(out), encode([decode(body), n])])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pull.close()
        self.pub.close()


@pytest.fixture
def fake() -> Iterator[Callable[[Policy], FakeProcessor]]:
    made: list[FakeProcessor] = []

    def make(policy: Policy) -> FakeProcessor:
        made.append(FakeProcessor(policy))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def client_for(peer: FakeProcessor, **options: Any) -> Client:
    return Client.connect(peer.requests, peer.responses, **options)


def test_a_lost_attempt_is_sent_again_with_the_same_id(
        fake: Callable[[Policy], FakeProcessor]) -> None:
    peer = fake(lambda header, seen: 1 if seen == 2 else 0)  # the first attempt is "lost"
    with client_for(peer, timeout_s=1.0, retries=3) as client:
        assert client.call("x") == ["x", 0]
        assert client.resent >= 1
        # One id, sent once more per resend (a loaded machine may have resent it twice).
        wait_until(lambda: list(peer.seen.values()) == [client.resent + 1])


def test_exactly_one_result_when_every_attempt_is_answered_several_times(
        fake: Callable[[Policy], FakeProcessor]) -> None:
    # Each attempt is answered twice, and the first answer comes late: the caller still
    # sees one result per call, the rest are counted as unmatched.
    slept = []

    def slow_then_double(header: dict[str, Any], seen: int) -> int:
        if not slept:
            slept.append(True)
            time.sleep(0.4)
        return 2

    peer = fake(slow_then_double)
    with client_for(peer, timeout_s=0.25, retries=5) as client:
        futures = [client.submit(i) for i in range(3)]
        results = [f.result() for f in futures]
        assert [r[0] for r in results] == [0, 1, 2]
        # The peer answers in order: once a later call is answered, every duplicate of the
        # earlier attempts has been read too, and none was delivered.
        assert client.call(99)[0] == 99
        assert client.unmatched >= 3
        assert client.resent >= 1
        assert client.pending == 0


def test_call_timeout_names_the_attempts(fake: Callable[[Policy], FakeProcessor]) -> None:
    peer = fake(lambda header, seen: 0)
    with client_for(peer, timeout_s=0.1, retries=2) as client:
        start = time.monotonic()
        with pytest.raises(CallTimeout) as info:
            client.call("never")
        assert time.monotonic() - start >= 0.3
        assert info.value.attempts == 3
        assert "after 3 attempts" in str(info.value)
        wait_until(lambda: list(peer.seen.values()) == [3])
        with pytest.raises(CallTimeout) as once:
            client.call("once", retries=0)  # per-call override
        assert once.value.attempts == 1


def test_no_retries_by_default(fake: Callable[[Policy], FakeProcessor]) -> None:
    peer = fake(lambda header, seen: 0)
    with client_for(peer, timeout_s=0.1) as client:
        with pytest.raises(CallTimeout) as info:
            client.call(1)
        assert info.value.attempts == 1
        assert client.resent == 0


def test_negative_retries_are_refused(fake: Callable[[Policy], FakeProcessor]) -> None:
    peer = fake(lambda header, seen: 1)
    with pytest.raises(ValueError):
        client_for(peer, retries=-1).close()


def test_immediate_client_with_no_processor_fails_in_bounded_time(ipc_dir: Path) -> None:
    # Nothing listens: the readiness handshake gives up, and a sender with a send timeout
    # raises instead of queueing. An ipc path nobody binds, not the port of a just-closed
    # socket: libzmq closes a listener asynchronously, so that port may still accept once.
    dead = f"ipc://{ipc_dir}/nobody"
    with ZmqSender(dead, immediate=True, send_timeout_s=0.2) as sender:
        start = time.monotonic()
        with pytest.raises(SendTimeout):
            sender.send(1)
        with pytest.raises(SendTimeout):
            sender.send(1, timeout_s=0)
        assert time.monotonic() - start < 5
    with Client(ZmqSender(dead, immediate=True), ZmqReceiver(), ready_timeout_s=0.3) as client:
        start = time.monotonic()
        with pytest.raises(NotReady):
            client.wait_ready()
        assert time.monotonic() - start < 5


def test_a_retry_reaching_the_same_processor_does_not_run_the_job_again() -> None:
    # The first attempt is slow: the client resends it (same id, marked dedup), and the
    # processor answers the repeat from its replay window instead of running the job twice.
    runs: list[Any] = []

    def slow_once(request: Any, resources: Any) -> Any:
        runs.append(request)
        if len(runs) == 1:
            time.sleep(0.5)
        return request * 10

    with ZmqProcessor(slow_once) as proc, proc.client(timeout_s=0.2, retries=5) as client:
        assert client.call(4) == 40
        wait_until(lambda: proc.counters.received - proc.counters.pongs >= 2)
        assert runs == [4]
        counters = proc.counters
        assert counters.replays >= 1
        assert counters.ok == counters.received - counters.pongs
        assert client.resent >= 1
        assert client.call(5, retries=0) == 50  # a call without retries is not remembered


def test_retries_over_the_in_memory_transport_are_replayed_not_rerun() -> None:
    # The in-memory double behaves like ZeroMQ here: same id resent, answered from the
    # processor's replay window.
    runs: list[Any] = []

    def slow_once(request: Any, resources: Any) -> Any:
        runs.append(request)
        if len(runs) == 1:
            time.sleep(0.4)
        return -request

    with MemoryProcessor(slow_once) as proc, proc.client(timeout_s=0.15, retries=5) as client:
        assert client.call(3) == -3
        wait_until(lambda: proc.counters.replays >= 1)
        assert runs == [3]
        assert client.resent >= 1
