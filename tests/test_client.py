"""zjobs.client.sync: calls, futures, errors, timeouts, closing, isolation and volume."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest

from zjobs import (
    CallTimeout,
    Client,
    ClosedError,
    EncodeError,
    NotReady,
    RemoteError,
    ZmqProcessor,
    ZmqReceiver,
    ZmqSender,
    cached,
)
from zjobs.testing import wait_until
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC

WAIT_S = 10.0


def job(request: Any, resources: Any) -> Any:
    if request == "boom":
        raise ValueError("boom")
    return request


class Gate:
    """A job that blocks until released, so tests control when it answers."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def run(self, request: Any, resources: Any) -> Any:
        self.started.set()
        assert self.release.wait(WAIT_S), "the test never released the job"
        return request


@pytest.fixture
def proc() -> Iterator[ZmqProcessor]:
    with ZmqProcessor(job, name="echo") as processor:
        yield processor


@pytest.fixture
def gated() -> Iterator[tuple[ZmqProcessor, Gate]]:
    gate = Gate()
    processor = ZmqProcessor(gate, name="gate").start()
    try:
        yield processor, gate
    finally:
        gate.release.set()
        processor.stop()


def test_call_submit_and_call_response(proc: ZmqProcessor) -> None:
    with proc.client() as client:
        assert client.call({"a": [1, b"x"]}) == {"a": [1, b"x"]}
        futures = [client.submit(i) for i in range(50)]
        assert [f.result(WAIT_S) for f in futures] == list(range(50))
        response = client.call_response("v", meta={"trace": [1, 2]})
        assert response.ok and response.value == "v"
        assert response.meta == {"trace": [1, 2]}
        assert response.processor == "echo"
        assert response.instance == proc.instance
        assert response.topic == client.topic.encode()
        assert client.pending == 0
        assert client.unmatched == 0


def test_call_response_returns_error_responses(proc: ZmqProcessor) -> None:
    with proc.client() as client:
        response = client.call_response("boom")
    assert not response.ok
    assert response.error is not None
    assert response.error.type == "JobFailed"
    assert response.error.message == "ValueError: boom"


def test_remote_error_carries_the_context(proc: ZmqProcessor) -> None:
    with proc.client() as client:
        with pytest.raises(RemoteError) as info:
            client.call("boom")
        exc = info.value
        assert exc.type == "JobFailed"
        assert exc.message == "ValueError: boom"
        assert exc.exception == "ValueError"
        assert exc.processor == "echo"
        assert isinstance(exc.id, str)
        assert client.call("after") == "after"


def test_deadline_in_the_past_is_deadline_exceeded(proc: ZmqProcessor) -> None:
    with proc.client() as client:
        with pytest.raises(RemoteError) as info:
            client.call(1, deadline_ms=1)
        assert info.value.type == "DeadlineExceeded"
        assert client.call(2, deadline_ms=int(time.time() * 1000) + 600_000) == 2


def test_cached_flag_through_the_client() -> None:
    with ZmqProcessor(cached(job)) as proc, proc.client() as client:
        assert client.call_response({"k": 1}).cached is False
        assert client.call_response({"k": 1}).cached is True
        assert client.call({"k": 1}) == {"k": 1}


def test_ping_round_trip(proc: ZmqProcessor) -> None:
    with proc.client() as client:
        client.wait_ready()
        rtt = client.ping()
        assert 0 < rtt < WAIT_S
        assert client.pending == 0


def test_call_timeout(gated: tuple[ZmqProcessor, Gate]) -> None:
    proc, gate = gated
    with proc.client() as client:
        with pytest.raises(CallTimeout) as info:
            client.call("slow", timeout_s=0.1)
        exc = info.value
        assert exc.timeout_s == 0.1
        assert isinstance(exc, TimeoutError)
        assert client.pending == 0
        gate.release.set()
        wait_until(lambda: proc.counters.ok >= 1, WAIT_S)  # the late answer is published
        # It is read (before "next"'s answer, same publisher) and finds nobody waiting.
        assert client.call("next") == "next"
        assert client.unmatched == 1


def test_ping_timeout(gated: tuple[ZmqProcessor, Gate]) -> None:
    proc, gate = gated
    with proc.client() as client:
        client.wait_ready()
        client.submit("block")
        assert gate.started.wait(WAIT_S)
        with pytest.raises(CallTimeout):
            client.ping(timeout_s=0.05)  # the processor is busy with the job


def test_close_fails_pending_futures(gated: tuple[ZmqProcessor, Gate]) -> None:
    proc, gate = gated
    client = proc.client()
    futures = [client.submit(i) for i in range(5)]
    assert gate.started.wait(WAIT_S)
    assert client.pending == 5
    client.close()
    for future in futures:
        with pytest.raises(ClosedError):
            future.result(WAIT_S)
    assert client.pending == 0
    client.close()  # idempotent
    assert "closed" in repr(client)
    with pytest.raises(ClosedError):
        client.submit(1)
    with pytest.raises(ClosedError):
        client.call(1)
    with pytest.raises(ClosedError):
        client.wait_ready()


def test_cancelled_future_ignores_the_late_answer(gated: tuple[ZmqProcessor, Gate]) -> None:
    proc, gate = gated
    with proc.client() as client:
        first = client.submit("first")
        assert gate.started.wait(WAIT_S)
        second = client.submit("second")
        assert second.cancel()
        gate.release.set()
        assert first.result(WAIT_S) == "first"
        assert client.call("third") == "third"
        with pytest.raises(CancelledError):
            second.result(0)
        assert client.unmatched == 0


def test_not_ready_when_no_processor_answers() -> None:
    client = Client.connect("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", ready_timeout_s=0.2)
    try:
        with pytest.raises(NotReady) as info:
            client.call(1)
        assert (info.value.seen, info.value.expected) == (0, 1)
        assert info.value.endpoints == ["tcp://127.0.0.1:1"]
        assert isinstance(info.value, TimeoutError)
        assert client.pending == 0
    finally:
        client.close()


def test_not_ready_until_every_processor_answered(proc: ZmqProcessor) -> None:
    with Client.connect([proc.endpoints.requests, "tcp://127.0.0.1:1"],
                        [proc.endpoints.responses], ready_timeout_s=0.3) as client:
        assert client.expect_processors == 2
        with pytest.raises(NotReady) as info:
            client.wait_ready()
        assert (info.value.seen, info.value.expected) == (1, 2)


def test_unencodable_request_sends_nothing(proc: ZmqProcessor) -> None:
    with proc.client() as client:
        with pytest.raises(EncodeError):
            client.submit({1, 2})
        assert client.pending == 0
        assert client.call(1) == 1


def test_client_from_any_sender_and_receiver_pair(proc: ZmqProcessor) -> None:
    sender = ZmqSender(proc.endpoints.requests)
    receiver = ZmqReceiver(proc.endpoints.responses, topics=())
    client = Client(sender, receiver, timeout_s=5)
    try:
        assert receiver.topics == [HEARTBEAT_TOPIC, client.topic.encode()]
        assert len(client.topic) == 32
        assert "new" in repr(client)
        assert client.call("x") == "x"
        assert "ready" in repr(client)
    finally:
        client.close()
    assert sender.closed and receiver.closed


def test_default_timeout_applies(gated: tuple[ZmqProcessor, Gate]) -> None:
    proc, _ = gated
    with proc.client(timeout_s=0.1) as client:
        future = client.submit("x")
        with pytest.raises(CallTimeout):
            future.result(WAIT_S)


def test_two_clients_never_see_each_others_responses(proc: ZmqProcessor) -> None:
    with proc.client() as a, proc.client() as b:
        assert a.topic != b.topic
        results: dict[str, list[Any]] = {}

        def work(name: str, client: Client) -> None:
            futures = [client.submit([name, i]) for i in range(500)]
            results[name] = [f.result(WAIT_S) for f in futures]

        threads = [threading.Thread(target=work, args=(n, c)) for n, c in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results["a"] == [["a", i] for i in range(500)]
        assert results["b"] == [["b", i] for i in range(500)]
        assert a.unmatched == 0 and b.unmatched == 0


@pytest.mark.timeout(90)
def test_ten_thousand_requests_none_lost_none_duplicated() -> None:
    seen: list[Any] = []

    def record(request: Any, resources: Any) -> Any:
        seen.append(request)
        return request * 2

    n = 10_000
    with ZmqProcessor(record) as proc, proc.client() as client:
        futures = [client.submit(i, timeout_s=60) for i in range(n)]
        results = [f.result(60) for f in futures]
        assert results == [i * 2 for i in range(n)]
        assert client.unmatched == 0
        assert client.pending == 0
        counters = proc.counters
    assert sorted(seen) == list(range(n))  # each request ran exactly once
    assert counters.ok == n
    assert counters.received == n + counters.pongs


def test_many_threads_share_one_client(proc: ZmqProcessor) -> None:
    errors: list[BaseException] = []
    with proc.client() as client:
        def work(n: int) -> None:
            try:
                for i in range(100):
                    assert client.call([n, i]) == [n, i]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert client.unmatched == 0


def test_close_racing_a_submit_never_leaves_a_future_hanging(proc: ZmqProcessor) -> None:
    # Force the interleaving: close() runs (and fails what is pending) while submit() is
    # between its "closed?" check and registering its future, and the send still succeeds.
    real = ZmqSender(proc.endpoints.requests)
    closing, submitted = threading.Event(), threading.Event()

    class SlowToClose:
        endpoints = real.endpoints

        def send(self, request: Any, **options: Any) -> Any:
            return real.send(request, **options)

        def close(self) -> None:
            closing.set()
            submitted.wait(WAIT_S)  # hold close() after it failed the pending calls
            real.close()

    client = Client(SlowToClose(), ZmqReceiver(proc.endpoints.responses, topics=()))
    client.wait_ready()
    engine = client._engine
    ids = engine.ids
    closer = threading.Thread(target=client.close)

    def next_id() -> Any:
        closer.start()
        # close() has begun (it can go no further than the engine's lock this call holds).
        wait_until(lambda: "closed" in repr(client), WAIT_S)
        return ids()

    engine.ids = next_id
    try:
        future = client.submit("raced")
    except ClosedError:
        future = None  # refusing the call is fine too
    finally:
        submitted.set()
        closer.join(WAIT_S)
    if future is not None:
        # Never hanging: answered before close() got there, or failed by it.
        error = future.exception(2)
        assert future.done()
        assert error is None or isinstance(error, ClosedError)


def test_done_callbacks_may_read_their_future_and_nobody_waits(proc: ZmqProcessor) -> None:
    # Futures nobody waits on are completed by the client's reader thread, and a
    # done-callback may call result()/exception() on its future (it is done by then).
    seen: list[Any] = []
    all_in = threading.Event()
    with proc.client(timeout_s=WAIT_S) as client:
        client.wait_ready()

        def done(future: Any) -> None:
            seen.append((future.exception(), future.result() if not future.exception() else None))
            if len(seen) == 20:
                all_in.set()

        for n in range(19):
            client.submit(n).add_done_callback(done)
        client.submit("boom").add_done_callback(done)
        assert all_in.wait(WAIT_S)
    assert sorted(r for e, r in seen if e is None) == list(range(19))
    assert [type(e).__name__ for e, _ in seen if e is not None] == ["RemoteError"]


def test_a_waiting_caller_reads_for_everybody(proc: ZmqProcessor) -> None:
    # One thread waiting on the last future reads every response before it: all are done.
    with proc.client(timeout_s=WAIT_S) as client:
        futures = [client.submit(n) for n in range(500)]
        assert futures[-1].result() == 499
        wait_until(lambda: all(f.done() for f in futures), WAIT_S)
        assert [f.result() for f in futures] == list(range(500))


def test_a_receiver_that_fails_for_good_fails_every_call_once(
        proc: ZmqProcessor, caplog: pytest.LogCaptureFixture) -> None:
    # A receive error that is not a timeout (a terminated context, a broken custom
    # receiver) fails the waiting calls and every new one, instead of a reader logging the
    # same failure many times a second while the calls wait for their timeout.
    real = ZmqReceiver(proc.endpoints.responses, topics=())
    broken = threading.Event()

    class Failing:
        def receive(self, timeout: float | None = None) -> Any:
            if broken.is_set():
                raise OSError("receiver broke")
            return real.receive(timeout)

        def subscribe(self, topic: str | bytes) -> None:
            real.subscribe(topic)

        def close(self) -> None:
            real.close()

    client = Client(ZmqSender(proc.endpoints.requests), Failing(), timeout_s=60)
    try:
        assert client.call("fine") == "fine"
        broken.set()
        future = client.submit("never read")
        error = future.exception(WAIT_S)
        assert isinstance(error, OSError)
        with pytest.raises(ClosedError):
            client.submit("after")
        errors = [r for r in caplog.records if "receiving failed" in r.getMessage()]
        assert len(errors) == 1
    finally:
        client.close()
