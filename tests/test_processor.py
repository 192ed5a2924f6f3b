"""zjobs.processor.sync: ZmqProcessor endpoints, lifecycle, robustness and load balancing."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zjobs import (
    BindError,
    Client,
    ClosedError,
    Counters,
    CrashedError,
    Endpoints,
    RemoteError,
    Timeout,
    ZmqProcessor,
)
from zjobs.testing import wait_until

WAIT_S = 10.0


def echo(request: Any, resources: Any) -> Any:
    return request


def whoami(request: Any, resources: Any) -> Any:
    return resources


class Gate:
    """A job that blocks until released, so tests control when it finishes."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def run(self, request: Any, resources: Any) -> Any:
        self.started.set()
        assert self.release.wait(WAIT_S), "the test never released the job"
        return request


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()  # never leave a job blocked, whatever the test did


# -- endpoints -------------------------------------------------------------------------------

def test_tcp_wildcard_port_is_resolved() -> None:
    with ZmqProcessor(echo) as proc:
        for endpoint in (proc.endpoints.requests, proc.endpoints.responses):
            assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", endpoint), endpoint
        assert proc.endpoints.requests != proc.endpoints.responses
        assert proc.connect_endpoints == proc.endpoints
        with proc.client() as client:
            assert client.call([1, "a"]) == [1, "a"]


def test_any_host_binds_and_connects_over_loopback() -> None:
    with ZmqProcessor(echo, requests="tcp://*:*", responses="tcp://0.0.0.0:*") as proc:
        assert proc.endpoints.requests.startswith("tcp://0.0.0.0:")
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", proc.connect_endpoints.requests)
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", proc.connect_endpoints.responses)
        with proc.client() as client:
            assert client.call(5) == 5


def test_ipc_endpoints(ipc_dir: Path) -> None:
    requests, responses = f"ipc://{ipc_dir}/req", f"ipc://{ipc_dir}/resp"
    with ZmqProcessor(echo, requests=requests, responses=responses) as proc:
        assert proc.endpoints == Endpoints(requests, responses)
        with Client.connect(requests, responses) as client:
            assert client.call("over ipc") == "over ipc"


def test_inproc_with_a_shared_context() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with ZmqProcessor(echo, requests="inproc://t-req", responses="inproc://t-resp",
                          context=ctx) as proc:
            assert proc.endpoints == Endpoints("inproc://t-req", "inproc://t-resp")
            with proc.client() as client:
                assert client.sender.context is ctx  # type: ignore[attr-defined]
                assert client.call({"in": "proc"}) == {"in": "proc"}
            with Client.connect("inproc://t-req", "inproc://t-resp", context=ctx) as client:
                assert client.call(2) == 2
    finally:
        ctx.term()


def test_binding_the_same_tcp_port_twice_names_the_endpoint() -> None:
    with ZmqProcessor(echo) as first:
        taken = first.endpoints.requests
        with pytest.raises(BindError) as info:
            ZmqProcessor(echo, requests=taken)
        assert info.value.endpoint == taken
        assert taken in str(info.value)
        assert "in use" in info.value.reason
        # The first processor is unaffected.
        with first.client() as client:
            assert client.call(1) == 1


def test_bind_error_on_the_response_endpoint_closes_the_request_socket() -> None:
    with ZmqProcessor(echo) as first:
        with pytest.raises(BindError) as info:
            ZmqProcessor(echo, responses=first.endpoints.responses)
        assert info.value.endpoint == first.endpoints.responses
    # the autouse fixture fails the test if the half-built processor left a socket open


@pytest.mark.parametrize("endpoint", ["nonsense", "tcp://", "tcp://256.1.1.1:1", "foo://x"])
def test_malformed_endpoint_is_a_bind_error(endpoint: str) -> None:
    with pytest.raises(BindError) as info:
        ZmqProcessor(echo, requests=endpoint)
    assert info.value.endpoint == endpoint


# -- naming and construction -------------------------------------------------------------------

def test_default_names() -> None:
    class Resize:
        def run(self, request: Any, resources: Any) -> Any:
            return request

    for job, name in ((echo, "echo"), (Resize(), "Resize")):
        proc = ZmqProcessor(job)
        try:
            assert proc.name == name
        finally:
            proc.close()
    proc = ZmqProcessor(echo, name="custom")
    try:
        assert proc.name == "custom"
        assert "custom" in repr(proc) and proc.endpoints.requests in repr(proc)
        assert "created" in repr(proc)
    finally:
        proc.close()


def test_not_a_job_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        ZmqProcessor(42)  # type: ignore[arg-type]


# -- lifecycle ----------------------------------------------------------------------------------

def test_states_and_counters_before_serving() -> None:
    proc = ZmqProcessor(echo)
    assert proc.state == "created"
    assert proc.counters == Counters()
    proc.start()
    assert proc.state == "running"
    proc.stop()
    assert proc.state == "stopped"
    proc.stop()  # idempotent
    assert proc.state == "stopped"


def test_a_stopped_processor_cannot_start_again() -> None:
    proc = ZmqProcessor(echo).start()
    proc.stop()
    with pytest.raises(ClosedError):
        proc.start()
    with pytest.raises(ClosedError):
        proc.run()


def test_start_twice_is_an_error() -> None:
    with ZmqProcessor(echo) as proc:
        with pytest.raises(ClosedError):
            proc.start()


def test_stop_without_start_closes_the_sockets() -> None:
    proc = ZmqProcessor(echo)
    proc.stop()
    assert proc.state == "stopped"
    with pytest.raises(ClosedError):
        proc.start()


def test_stop_leaves_no_thread() -> None:
    proc = ZmqProcessor(echo, name="t").start()
    thread = proc._thread
    assert thread is not None and thread.is_alive()
    assert thread.name == "zjobs-processor-t"
    proc.stop()
    assert not thread.is_alive()


def test_run_in_the_calling_thread_until_request_stop() -> None:
    proc = ZmqProcessor(echo)
    runner = threading.Thread(target=proc.run)
    runner.start()
    try:
        with proc.client() as client:
            assert client.call("x") == "x"
    finally:
        proc.request_stop()
        runner.join(WAIT_S)
    assert not runner.is_alive()
    assert proc.state == "stopped"


def test_stop_waits_for_run_in_another_thread_to_finish(gate: Gate) -> None:
    closed = threading.Event()

    class Res:
        def close(self) -> None:
            closed.set()

    proc = ZmqProcessor(gate, resources=Res)
    runner = threading.Thread(target=proc.run)
    runner.start()
    try:
        with proc.client() as client:
            future = client.submit("slow")
            assert gate.started.wait(WAIT_S)
            stopper = threading.Thread(target=proc.stop)
            stopper.start()
            wait_until(lambda: proc._stopping.is_set(), WAIT_S)
            assert stopper.is_alive()  # stop() waits for the job in progress
            gate.release.set()
            stopper.join(WAIT_S)
            assert future.result(WAIT_S) == "slow"
        # Once stop() returned, the resources and sockets are closed.
        assert closed.is_set()
        assert proc.state == "stopped"
    finally:
        gate.release.set()
        proc.request_stop()
        runner.join(WAIT_S)


def test_stop_while_a_slow_job_runs_still_publishes_its_response(gate: Gate) -> None:
    proc = ZmqProcessor(gate).start()
    thread = proc._thread
    assert thread is not None
    try:
        with proc.client() as client:
            future = client.submit("slow")
            assert gate.started.wait(WAIT_S)
            stopper = threading.Thread(target=proc.stop)
            stopper.start()
            wait_until(lambda: proc._stopping.is_set(), WAIT_S)
            assert stopper.is_alive()  # stop() waits for the job in progress
            gate.release.set()
            stopper.join(WAIT_S)
            assert not stopper.is_alive()
            assert future.result(WAIT_S) == "slow"
    finally:
        gate.release.set()
        proc.stop()
    assert not thread.is_alive()
    assert proc.state == "stopped"
    assert proc.counters.ok == 1


def test_stop_times_out_while_a_job_runs_then_completes(gate: Gate) -> None:
    proc = ZmqProcessor(gate).start()
    with proc.client() as client:
        client.submit(1)
        assert gate.started.wait(WAIT_S)
        with pytest.raises(Timeout, match="did not stop"):
            proc.stop(timeout_s=0.05)
        assert proc.state == "running"
        gate.release.set()
        proc.stop()
    assert proc.state == "stopped"


# -- robustness -----------------------------------------------------------------------------------

def test_job_exceptions_do_not_stop_the_processor() -> None:
    def job(request: Any, resources: Any) -> Any:
        if request == "value":
            raise ValueError("boom")
        if request == "exit":
            raise SystemExit(1)
        if request == "set":
            return {1}
        return request

    with ZmqProcessor(job) as proc, proc.client() as client:
        for bad, kind in (("value", "ValueError"), ("exit", "SystemExit"), ("set", "EncodeError")):
            with pytest.raises(RemoteError) as info:
                client.call(bad)
            assert info.value.type == "JobFailed"
            assert info.value.exception == kind
            assert client.call("fine") == "fine"
        assert proc.counters.failed == 3
        assert proc.state == "running"


def test_max_message_size_disconnects_the_offender_only() -> None:
    with ZmqProcessor(echo, max_message_size=1000) as proc, proc.client() as good:
        assert good.call("x" * 500) == "x" * 500
        ctx = zmq.Context.instance()
        offender = ctx.socket(zmq.PUSH)
        monitor = offender.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            offender.linger = 0
            offender.connect(proc.connect_endpoints.requests)
            header = msgpack.packb({"v": 1, "id": "big", "reply_to": good.topic})
            offender.send_multipart([header, b"\xc5" + (5000).to_bytes(2, "big") + b"x" * 5000])
            # libzmq drops the connection of the peer that sent the oversized frame.
            assert monitor.poll(int(WAIT_S * 1000)), "the offender was not disconnected"
            event = recv_monitor_message(monitor)
            assert event["event"] == zmq.EVENT_DISCONNECTED
            assert good.call("still served") == "still served"
            assert good.call("y" * 900) == "y" * 900
        finally:
            offender.disable_monitor()
            monitor.close()
            offender.close()
        assert good.unmatched == 0
        assert proc.counters.received == proc.counters.ok + proc.counters.pongs


def test_default_max_message_size_is_16_mib() -> None:
    with ZmqProcessor(echo) as proc:
        assert proc._sockets.pull is not None
        assert proc._sockets.pull.maxmsgsize == 16 * 1024 * 1024


# -- load balancing and broadcast ----------------------------------------------------------------

def test_load_balancing_across_two_processors_from_one_sender() -> None:
    with ZmqProcessor(whoami, name="p1", resources=lambda: "p1") as p1, \
         ZmqProcessor(whoami, name="p2", resources=lambda: "p2") as p2:
        with Client.connect([p1.endpoints.requests, p2.endpoints.requests],
                            [p1.endpoints.responses, p2.endpoints.responses]) as client:
            assert client.expect_processors == 2
            futures = [client.submit(i) for i in range(200)]
            answers = [f.result(WAIT_S) for f in futures]
            assert client.unmatched == 0
    assert set(answers) == {"p1", "p2"}
    assert answers.count("p1") >= 20 and answers.count("p2") >= 20
    assert p1.counters.ok + p2.counters.ok == 200
    assert p1.counters.ok == answers.count("p1")


def test_two_receivers_both_get_a_broadcast() -> None:
    from zjobs.testing import wait_subscribed

    with ZmqProcessor(echo) as proc, proc.sender() as sender, \
         proc.receiver() as r1, proc.receiver() as r2:
        wait_subscribed(sender, r1)
        wait_subscribed(sender, r2)
        for receiver in (r1, r2):  # drain the handshake pongs
            while True:
                try:
                    receiver.receive(timeout=0)
                except TimeoutError:
                    break
        rid = sender.send({"hello": "all"}, reply_to="news")
        for receiver in (r1, r2):
            while True:
                response = receiver.receive(timeout=WAIT_S)
                if response.status == "ok":
                    break
            assert (response.id, response.value, response.topic) == (rid, {"hello": "all"},
                                                                     b"news")


def test_counters_invariant_with_real_sockets() -> None:
    with ZmqProcessor(lambda r, res: 1 / r) as proc, proc.client() as client:
        for i in range(20):
            try:
                client.call(i % 3)
            except RemoteError:
                pass
        sender = proc.sender()
        try:
            sender.send_frames([b"\xc1", b""])
            sender.send_frames([msgpack.packb({"v": 1, "id": "x", "reply_to": "\x00"}), b""])
        finally:
            sender.close()
        wait_until(lambda: proc.counters.dropped == 2, WAIT_S)
        c = proc.counters
    assert c.received == c.ok + c.failed + c.expired + c.bad_requests + c.pongs
    assert (c.ok, c.failed, c.bad_requests) == (13, 7, 2)


# -- a crash of the serving thread ---------------------------------------------------------


class Interrupting:
    """Echoes, but raises KeyboardInterrupt for "stop": not a job failure (that would be a
    JobFailed answer), it ends the serving thread."""

    def run(self, request: Any, resources: Any) -> Any:
        if request == "stop":
            raise KeyboardInterrupt("from the job")
        return request


def test_a_crash_of_the_serving_thread_is_raised_from_the_next_stop() -> None:
    closed: list[str] = []

    def resources() -> Iterator[str]:
        yield "R"
        closed.append("R")

    processor = ZmqProcessor(Interrupting(), resources=resources).start()
    with processor.client(timeout_s=WAIT_S) as client:
        assert client.call("fine") == "fine"
        client.submit("stop")  # never answered: the processor dies on it
        assert processor.wait(WAIT_S)
    assert processor.state == "stopped" and closed == ["R"]  # everything was closed
    with pytest.raises(CrashedError) as info:
        processor.stop()
    assert isinstance(info.value.cause, KeyboardInterrupt)
    assert info.value.owner == f"processor {processor.name!r}"
    assert processor.counters.ok == 1 and processor.counters.failed == 0
    processor.stop()  # raised once: stop stays idempotent
