"""zjobs.transport.memory and zjobs.processor.memory: the in-memory bus, sender, receiver and
processor, used with the same Client as ZeroMQ."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from zjobs import (
    CallTimeout,
    Client,
    ClosedError,
    CrashedError,
    McReceive,
    MemoryProcessor,
    MemoryReceiver,
    MemorySender,
    MpSend,
    ReceiveTimeout,
    RemoteError,
    SendTimeout,
    StartError,
    Timeout,
    cached,
)
from zjobs.testing import wait_subscribed, wait_until

WAIT_S = 10.0


def job(request: Any, resources: Any) -> Any:
    if request == "boom":
        raise ValueError("boom")
    return [request, resources]


class Gate:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def run(self, request: Any, resources: Any) -> Any:
        self.started.set()
        assert self.release.wait(WAIT_S)
        return request


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()


def test_same_client_over_memory() -> None:
    with MemoryProcessor(job, resources=lambda: "R") as proc, proc.client() as client:
        assert client.call(1) == [1, "R"]
        futures = [client.submit(i) for i in range(100)]
        assert [f.result(WAIT_S) for f in futures] == [[i, "R"] for i in range(100)]
        with pytest.raises(RemoteError) as info:
            client.call("boom")
        assert info.value.message == "ValueError: boom"
        response = client.call_response("m", meta={"k": [1]})
        assert response.meta == {"k": [1]}
        assert response.processor == "job"
        with pytest.raises(RemoteError, match="DeadlineExceeded"):
            client.call(1, deadline_ms=1)
        assert client.unmatched == 0
        counters = proc.counters
    assert counters.ok == 102
    assert counters.failed == 1
    assert counters.expired == 1
    assert counters.received == counters.ok + counters.failed + counters.expired + counters.pongs


def test_cache_over_memory() -> None:
    with MemoryProcessor(cached(job)) as proc, proc.client() as client:
        assert [client.call_response(None).cached for _ in range(3)] == [False, True, True]
        assert proc.counters.cache_hits == 2


def test_resources_closed_on_stop_after_jobs_raised() -> None:
    events: list[str] = []

    def factory() -> Iterator[str]:
        events.append("open")
        yield "R"
        events.append("close")

    proc = MemoryProcessor(job, resources=factory)
    assert events == []
    with proc, proc.client() as client:
        assert events == ["open"]
        for _ in range(3):
            with pytest.raises(RemoteError):
                client.call("boom")
    assert events == ["open", "close"]


def test_factory_failure_is_a_start_error() -> None:
    proc = MemoryProcessor(job, resources=lambda: 1 / 0)
    with pytest.raises(StartError):
        proc.start()


def test_load_balancing_across_two_memory_processors() -> None:
    with MemoryProcessor(lambda r, res: "a", name="a") as a, \
         MemoryProcessor(lambda r, res: "b", name="b") as b:
        receiver = MemoryReceiver(topics=())
        receiver.connect(a)
        receiver.connect(b)
        with Client(MemorySender([a, b]), receiver, expect_processors=2) as client:
            answers = [client.call(i) for i in range(20)]
    assert answers.count("a") == answers.count("b") == 10


def test_two_receivers_both_get_a_broadcast() -> None:
    with MemoryProcessor(lambda r, res: r + 1) as proc, proc.sender() as sender, \
         proc.receiver() as r1, proc.receiver(["x"]) as r2:
        rid = sender.send(1, reply_to="x")
        for receiver in (r1, r2):
            got = receiver.receive(timeout=WAIT_S)
            assert (got.id, got.value, got.topic) == (rid, 2, b"x")


def test_receiver_filters_topics_by_prefix() -> None:
    with MemoryProcessor(lambda r, res: r) as proc, proc.sender() as sender, \
         proc.receiver([b"ab"]) as receiver:
        sender.send(1, reply_to="b")
        sender.send(2, reply_to="abc")
        assert receiver.receive(timeout=WAIT_S).value == 2
        with pytest.raises(ReceiveTimeout):
            receiver.receive(timeout=0.01)


def test_receiver_skips_what_is_not_a_response() -> None:
    receiver = MemoryReceiver()
    header = {"v": 1, "id": "x", "status": "ok", "cached": False, "processor": "p"}
    receiver.deliver([b"\x00hb", msgpack.packb(header), b"\x01"])
    receiver.deliver([b"", msgpack.packb({**header, "status": "progress"}), b"\xc0"])
    receiver.deliver([b"", msgpack.packb({**header, "id": "real"}), b"\x02"])
    got = receiver.receive(timeout=WAIT_S)
    assert (got.id, got.value) == ("real", 2)


def test_receiver_drops_when_full() -> None:
    with MemoryProcessor(lambda r, res: r) as proc, proc.sender() as sender:
        receiver = MemoryReceiver(maxsize=1)
        receiver.connect(proc)
        try:
            sender.send(1)
            sender.send(2)
            wait_until(lambda: proc.counters.ok == 2, WAIT_S)
            assert receiver.dropped == 1
            assert receiver.receive(timeout=WAIT_S).value == 1
        finally:
            receiver.close()


def test_closed_receiver_and_sender() -> None:
    with MemoryProcessor(lambda r, res: r) as proc:
        receiver = proc.receiver()
        receiver.close()
        receiver.close()
        with pytest.raises(ClosedError):
            receiver.receive(timeout=0)
        assert receiver not in proc.bus.subscribers
        sender = proc.sender()
        sender.close()
        with pytest.raises(ClosedError):
            sender.send(1)


def test_sender_without_processor_or_room() -> None:
    with pytest.raises(SendTimeout):
        MemorySender().send(1)
    proc = MemoryProcessor(lambda r, res: r, maxsize=1)  # not started: nothing drains
    sender = MemorySender([proc], send_timeout_s=0.01)
    sender.send(1)
    with pytest.raises(SendTimeout):
        sender.send(2)


def test_interfaces() -> None:
    assert isinstance(MemorySender(), MpSend)
    assert isinstance(MemoryReceiver(), McReceive)


def test_lifecycle() -> None:
    proc = MemoryProcessor(lambda r, res: r, name="m")
    assert "m" in repr(proc) and "created" in repr(proc)
    proc.start()
    with pytest.raises(ClosedError):
        proc.start()
    proc.stop()
    proc.stop()
    assert "stopped" in repr(proc)
    with pytest.raises(ClosedError):
        proc.start()


def test_stop_finishes_what_was_queued() -> None:
    proc = MemoryProcessor(lambda r, res: r).start()
    receiver = proc.receiver()
    sender = proc.sender()
    for i in range(50):
        sender.send(i)
    proc.stop()
    assert proc.counters.ok == 50
    assert [receiver.receive(timeout=WAIT_S).value for _ in range(50)] == list(range(50))


def test_stop_times_out_while_a_job_runs_and_keeps_the_resources(gate: Gate) -> None:
    closed = threading.Event()

    class Res:
        def close(self) -> None:
            closed.set()

    proc = MemoryProcessor(gate, resources=Res).start()
    sender = proc.sender()
    sender.send(1)
    assert gate.started.wait(WAIT_S)
    with pytest.raises(Timeout):
        proc.stop(timeout_s=0.05)
    assert not closed.is_set()  # never close the resources under a running job
    gate.release.set()
    proc.stop()
    assert closed.is_set()
    assert proc.counters.ok == 1


def test_run_in_the_calling_thread() -> None:
    proc = MemoryProcessor(job, resources=lambda: "R")
    runner = threading.Thread(target=proc.run)
    runner.start()
    try:
        wait_until(lambda: proc.counters is not None and "running" in repr(proc), WAIT_S)
        with proc.sender() as sender, proc.receiver() as receiver:
            wait_subscribed(sender, receiver)
            sender.send(5, reply_to="t")
            while (got := receiver.receive(timeout=WAIT_S)).status != "ok":
                pass
            assert got.value == [5, "R"]
    finally:
        proc.stop()
        runner.join(WAIT_S)
    assert not runner.is_alive()
    assert "stopped" in repr(proc)


def test_call_timeout_over_memory(gate: Gate) -> None:
    with MemoryProcessor(gate) as proc, proc.client() as client:
        with pytest.raises(CallTimeout):
            client.call(1, timeout_s=0.05)
        gate.release.set()


def test_testing_helpers_work_with_memory() -> None:
    with MemoryProcessor(lambda r, res: r) as proc, proc.sender() as sender, \
         proc.receiver() as receiver:
        wait_subscribed(sender, receiver, topic="t")


def test_client_with_memory_pair_directly() -> None:
    with MemoryProcessor(job) as proc:
        receiver = proc.receiver(topics=())
        with Client(proc.sender(), receiver) as client:
            assert client.call(3) == [3, None]
        with pytest.raises(ClosedError):
            receiver.receive(timeout=0)


def test_stop_from_inside_a_job_closes_the_resources() -> None:
    closed = threading.Event()
    procs: list[MemoryProcessor] = []

    class Res:
        def close(self) -> None:
            closed.set()

    def quitter(request: Any, resources: Any) -> Any:
        procs[0].stop()
        return request

    proc = MemoryProcessor(quitter, resources=Res)
    procs.append(proc)
    with proc, proc.receiver() as receiver, proc.sender() as sender:
        sender.send("bye")
        assert receiver.receive(timeout=WAIT_S).value == "bye"
        assert closed.wait(WAIT_S)
    assert "stopped" in repr(proc)


def test_a_bus_is_what_senders_and_receivers_connect_to() -> None:
    with MemoryProcessor(job, name="m") as proc:
        sender, receiver = MemorySender([proc.bus]), MemoryReceiver(topics=("t",))
        receiver.connect(proc.bus)
        assert proc.bus.subscribers == (receiver,) and "'m'" in repr(proc.bus)
        with sender, receiver:
            sender.send(1, reply_to="t")
            assert receiver.receive(timeout=WAIT_S).value == [1, None]
        assert proc.bus.subscribers == ()


def test_a_crash_of_the_serving_thread_is_raised_from_the_next_stop() -> None:
    def interrupting(request: Any, resources: Any) -> Any:
        raise KeyboardInterrupt("from the job")  # not a job failure: it ends serving

    proc = MemoryProcessor(interrupting).start()
    with proc.sender() as sender:
        sender.send(1)
    assert proc.wait(WAIT_S) and proc.state == "stopped"
    with pytest.raises(CrashedError) as info:
        proc.stop()
    assert isinstance(info.value.cause, KeyboardInterrupt)
    proc.stop()
