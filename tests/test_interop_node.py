"""The Node.js examples: the client against ``zjobs serve``, the processor against zjobs.Client.

Node modules come from ``npm ci`` on the lock file: the ones installed in examples/node when
they load, else a fresh install in a temporary copy.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq
from jobs_interop import (
    REPO,
    ClientCLI,
    ClientContract,
    Peer,
    batch_example,
    run,
    serve_command,
    skip_or_fail,
    worked_example,
)

import zjobs

pytestmark = pytest.mark.timeout(300)

LOOPBACK = "tcp://127.0.0.1:*"
EXAMPLE = REPO / "examples" / "node"
CALL_TIMEOUT_S = 20.0


def _loads(node: str, folder: Path) -> bool:
    probe = run([node, "-e", "require('zeromq'); require('@msgpack/msgpack')"], cwd=folder,
                timeout_s=60)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the Node.js example and its installed dependencies."""
    node = shutil.which("node")
    if node is None:
        skip_or_fail("node not found: the Node.js examples cannot run (install nodejs and npm)")
    assert node is not None
    if _loads(node, EXAMPLE):
        return EXAMPLE
    npm = shutil.which("npm")
    if npm is None:
        skip_or_fail("npm not found: cannot install the Node.js example's dependencies")
    assert npm is not None
    copy = tmp_path_factory.mktemp("node") / "node"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("node_modules"))
    done = run([npm, "ci", "--no-audit", "--no-fund"], cwd=copy, timeout_s=600)
    if done.returncode != 0:
        skip_or_fail(f"npm ci failed in examples/node (no npm registry?):\n{done.stderr[-2000:]}")
    if not _loads(node, copy):
        pytest.fail("npm ci succeeded but zeromq or @msgpack/msgpack does not load")
    return copy


# -- the client against zjobs serve ---------------------------------------------------------


@pytest.fixture(scope="module")
def client(node_dir: Path) -> ClientCLI:
    return ClientCLI(["node", str(node_dir / "client.js")])


@pytest.fixture(scope="module")
def daemon() -> Iterator[Peer]:
    peer = Peer(serve_command(LOOPBACK, LOOPBACK, "interop"))
    try:
        yield peer
    finally:
        code = peer.stop()
    assert code == 0, f"zjobs serve exited {code} on SIGTERM; {peer.diagnostics()}"


class TestNodeClient(ClientContract):
    """The shared client checks (jobs_interop.ClientContract) with the Node.js client."""


# -- the processor against zjobs.Client -------------------------------------------------------


@pytest.fixture(scope="module")
def node_processor(node_dir: Path) -> Iterator[Peer]:
    peer = Peer(["node", str(node_dir / "processor.js"), "--requests", LOOPBACK,
                 "--responses", LOOPBACK, "--name", "nodeproc"], cwd=node_dir)
    try:
        yield peer
    finally:
        code = peer.stop()
    assert code == 0, f"processor.js exited {code} on SIGTERM; {peer.diagnostics()}"


@pytest.fixture
def py_client(node_processor: Peer) -> Iterator[zjobs.Client]:
    with zjobs.Client.connect(requests=node_processor.requests,
                              responses=node_processor.responses) as client:
        yield client


def test_listening_line_has_real_ports(node_processor: Peer) -> None:
    assert node_processor.name == "nodeproc"
    for endpoint in (node_processor.requests, node_processor.responses):
        assert endpoint.startswith("tcp://127.0.0.1:")
        assert endpoint.rsplit(":", 1)[1].isdigit()


@pytest.mark.parametrize(("request_value", "expected"), [
    (7, 49),
    (-3037000499, 9223372030926249001),
    ("hello", "hello"),
    (None, None),
    (b"\x00\xff", b"\x00\xff"),
    (2.5, 2.5),
    ([1, "two", [3.0]], [1, "two", [3.0]]),
    ({"a": {"b": [1, None]}}, {"a": {"b": [1, None]}}),
])
def test_ordinary_requests(py_client: zjobs.Client, request_value: object,
                           expected: object) -> None:
    assert py_client.call(request_value, timeout_s=CALL_TIMEOUT_S) == expected


def test_echo_keeps_msgpack_types(py_client: zjobs.Client) -> None:
    # A float with a whole value stays a float, an int map key stays an int.
    value = py_client.call({1: 2.0, "k": True}, timeout_s=CALL_TIMEOUT_S)
    assert value == {1: 2.0, "k": True}
    assert type(value[1]) is float


def test_response_fields(py_client: zjobs.Client) -> None:
    response = py_client.call_response(3, timeout_s=CALL_TIMEOUT_S)
    assert response.status == "ok"
    assert response.value == 9
    assert response.processor == "nodeproc"
    assert response.cached is False
    assert response.instance


def test_error_response(py_client: zjobs.Client) -> None:
    with pytest.raises(zjobs.RemoteError) as caught:
        py_client.call({"fail": "boom"}, timeout_s=CALL_TIMEOUT_S)
    assert caught.value.type == "JobFailed"
    assert caught.value.message == "Error: boom"
    assert caught.value.processor == "nodeproc"


def test_unencodable_result_is_job_failed(py_client: zjobs.Client) -> None:
    with pytest.raises(zjobs.RemoteError) as caught:
        py_client.call(2**32, timeout_s=CALL_TIMEOUT_S)
    assert caught.value.type == "JobFailed"
    assert caught.value.exception == "EncodeError"
    assert caught.value.message.startswith("EncodeError: ")


def test_deadline_exceeded(py_client: zjobs.Client) -> None:
    with pytest.raises(zjobs.RemoteError) as caught:
        py_client.call(1, timeout_s=CALL_TIMEOUT_S, deadline_ms=1)
    assert caught.value.type == "DeadlineExceeded"
    future = int(time.time() * 1000) + 600_000
    assert py_client.call(4, timeout_s=CALL_TIMEOUT_S, deadline_ms=future) == 16


def test_meta_echo(py_client: zjobs.Client) -> None:
    meta = {"trace": "abc", "n": [1, 2], "nested": {"x": b"\x01"}}
    response = py_client.call_response(5, timeout_s=CALL_TIMEOUT_S, meta=meta)
    assert (response.value, response.meta) == (25, meta)
    failed = py_client.call_response({"fail": "x"}, timeout_s=CALL_TIMEOUT_S, meta=meta)
    assert (failed.status, failed.meta) == ("error", meta)


def test_ping(py_client: zjobs.Client) -> None:
    # the readiness handshake is pings until a pong; then a single ping must come back too
    py_client.wait_ready(timeout_s=CALL_TIMEOUT_S)
    assert py_client.ping(timeout_s=CALL_TIMEOUT_S) >= 0


def test_bad_requests_from_a_raw_peer(node_processor: Peer) -> None:
    """Validation order and error types, from raw frames (not zjobs' codec)."""
    pack = msgpack.Packer(use_bin_type=True).pack
    topic = secrets.token_hex(16)
    ctx = zmq.Context.instance()
    with ctx.socket(zmq.PUSH) as push, ctx.socket(zmq.SUB) as sub:
        push.linger = sub.linger = 0
        sub.subscribe(topic.encode())
        sub.connect(node_processor.responses)
        push.connect(node_processor.requests)

        def answer(frames: list[bytes], rid: object,
                   status: str = "error") -> tuple[dict[str, object], bytes]:
            push.send_multipart(frames)
            deadline = time.monotonic() + CALL_TIMEOUT_S
            while time.monotonic() < deadline:
                if sub.poll(100):
                    got = sub.recv_multipart()
                    header = msgpack.unpackb(got[1], raw=False)
                    if header["id"] == rid and header["status"] == status:
                        assert got[0] == topic.encode()
                        return header, got[2]
            raise AssertionError(f"no answer for {rid!r}")

        # readiness: ping until a pong comes back
        for n in range(2000):
            push.send_multipart([pack({"v": 1, "id": f"ping{n}", "reply_to": topic,
                                       "ping": True}), b"\xc0"])
            if sub.poll(10):
                break
        else:
            raise AssertionError("no pong")

        def header(**fields: object) -> bytes:
            return pack({"reply_to": topic, **fields})

        cases: list[tuple[list[bytes], object, str]] = [
            ([header(id="a", v=2), pack(1)], "a", "UnsupportedVersion"),
            ([header(id="b"), pack(1)], "b", "UnsupportedVersion"),
            ([header(v=1, id=7), pack(1)], None, "BadRequest"),
            ([header(v=1, id="c", ping="yes"), pack(1)], "c", "BadRequest"),
            ([header(v=1, id="d"), b"\xc1"], "d", "BadRequest"),
            ([header(v=1, id="e")], "e", "BadRequest"),
            ([header(v=1, id="f", deadline_ms=1), pack(1)], "f", "DeadlineExceeded"),
        ]
        for frames, rid, error_type in cases:
            got, body = answer(frames, rid)
            assert got["status"] == "error"
            assert got["error"]["type"] == error_type, (frames, got)
            assert body == b"\xc0"
        # a ping skips the body and the deadline
        got, body = answer([header(v=1, id="g", ping=True, deadline_ms=1, meta={"m": 1}),
                            b"\xc1"], "g", "pong")
        assert (got["status"], got["meta"], body) == ("pong", {"m": 1}, b"\xc0")
        # still serving
        got, body = answer([header(v=1, id="h"), pack(6)], "h", "ok")
        assert (got["status"], msgpack.unpackb(body)) == ("ok", 36)


# -- the worked example of docs/PROTOCOL.md ---------------------------------------------------

EXAMPLE_INSTANCE = b"0123456789abcdef"


def test_worked_example_is_what_msgpack_encodes() -> None:
    request, response = worked_example()
    pack = msgpack.Packer(use_bin_type=True).pack
    assert request == [pack({"v": 1, "id": "r1", "reply_to": "t1"}), pack(7)]
    assert response == [b"t1",
                        pack({"v": 1, "id": "r1", "status": "ok", "cached": False,
                              "processor": "sq", "instance": EXAMPLE_INSTANCE.decode()}),
                        pack(49)]


def exchange(requests: str, responses: str, frames: list[bytes], topic: bytes,
             rid: object = None) -> list[bytes]:
    """Send raw request frames after a readiness handshake on ``topic``; the response frames
    (the first with id ``rid`` when given, else the first that is not a pong)."""
    ctx = zmq.Context.instance()
    with ctx.socket(zmq.PUSH) as push, ctx.socket(zmq.SUB) as sub:
        push.linger = sub.linger = 0
        sub.subscribe(topic)
        sub.connect(responses)
        push.connect(requests)
        pack = msgpack.Packer(use_bin_type=True).pack
        for n in range(2000):
            push.send_multipart([pack({"v": 1, "id": f"ping{n}", "reply_to": topic,
                                       "ping": True}), b"\xc0"])
            if sub.poll(10):
                break
        else:
            raise AssertionError("no pong")
        push.send_multipart(frames)
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while time.monotonic() < deadline:
            if sub.poll(100):
                got = sub.recv_multipart()
                header = msgpack.unpackb(got[1])
                if (header["id"] == rid) if rid is not None else header["status"] != "pong":
                    return got
        raise AssertionError("no response")


def test_worked_example_against_the_node_processor(node_dir: Path) -> None:
    # Node's processor writes the header keys in the example's order: the bytes must match,
    # but for the random instance.
    request, response = worked_example()
    peer = Peer(["node", str(node_dir / "processor.js"), "--requests", LOOPBACK,
                 "--responses", LOOPBACK, "--name", "sq"], cwd=node_dir)
    try:
        got = exchange(peer.requests, peer.responses, request, b"t1")
    finally:
        assert peer.stop() == 0
    instance = msgpack.unpackb(got[1])["instance"].encode()
    assert len(instance) == len(EXAMPLE_INSTANCE)
    assert got == [response[0], response[1].replace(EXAMPLE_INSTANCE, instance), response[2]]


def test_worked_example_against_zjobs_serve(daemon: Peer) -> None:
    # zjobs may order the header keys differently: compare decoded values.
    request, response = worked_example()
    got = exchange(daemon.requests, daemon.responses, request, b"t1")
    assert got[0] == response[0]
    assert got[2] == response[2]
    header, expected = msgpack.unpackb(got[1]), msgpack.unpackb(response[1])
    assert header.pop("processor") == "interop"
    assert isinstance(header.pop("instance"), str)
    assert type(header.pop("seq")) is int  # zjobs' sequence-number extension
    del expected["processor"], expected["instance"]
    assert header == expected


# -- the batch extension ------------------------------------------------------------------------


def node_peer(node_dir: Path, *extra: str, name: str = "sq") -> Peer:
    return Peer(["node", str(node_dir / "processor.js"), "--requests", LOOPBACK,
                 "--responses", LOOPBACK, "--name", name, *extra], cwd=node_dir)


def test_batch_example_against_the_node_processor(node_dir: Path) -> None:
    # The spec's batch, byte for byte (but for the random instance), and its pong.
    request, response = batch_example()
    peer = node_peer(node_dir)
    try:
        got = exchange(peer.requests, peer.responses, request, b"t1")
        pong = exchange(peer.requests, peer.responses,
                        [msgpack.packb({"v": 1, "id": "p1", "reply_to": "t1", "ping": True}),
                         b"\xc0"], b"t1", rid="p1")
    finally:
        assert peer.stop() == 0
    instance = msgpack.unpackb(got[1])["instance"].encode()
    assert got == [response[0], response[1].replace(EXAMPLE_INSTANCE, instance), response[2]]
    header = msgpack.unpackb(pong[1])
    assert (header["ext"], header["batch_max"]) == (["batch"], 4096)


def test_python_client_batches_to_the_node_processor(node_dir: Path) -> None:
    peer = node_peer(node_dir, "--batch-max", "50")
    try:
        with zjobs.Client.connect(peer.requests, peer.responses,
                                  timeout_s=CALL_TIMEOUT_S) as client:
            result = client.call(zjobs.Batch.of([3, {"fail": "no"}, "echo"]))
            assert isinstance(result, zjobs.BatchResult)
            assert result.values == [9, None, "echo"]
            error = result.errors[1]
            assert (error.type, error.message, error.processor) == ("JobFailed", "Error: no", "sq")
            values = [*range(300), {"fail": "x"}, 7]
            got = list(client.map(values, return_exceptions=True))
            assert got[:300] == [i * i for i in range(300)] and got[301] == 49
            assert isinstance(got[300], zjobs.RemoteError) and got[300].message == "Error: x"
            with pytest.raises(zjobs.RemoteError) as refused:
                client.call(zjobs.Batch.of(list(range(51))))  # over its --batch-max
            assert refused.value.type == "BadRequest"
    finally:
        assert peer.stop() == 0


def warm_up(client: zjobs.Client) -> int:
    """Bursts, growing, until one was coalesced (the client holds calls only once it has
    measured fast answers); the batches sent so far."""
    for round_ in range(12):
        futures = [client.submit(f"warm-{n}") for n in range(min(300 << round_, 4_000))]
        for future in futures:
            future.result(CALL_TIMEOUT_S)
        if client.coalesced:
            break
    return client.coalesced


def test_python_client_coalesces_a_burst_to_the_node_processor(node_dir: Path) -> None:
    # Plain submits while fast answers are in flight travel as batches (the client
    # coalesces them, seeing the processor advertise the extension); the Node.js processor
    # answers each item, a failed one only for its own call.
    peer = node_peer(node_dir)
    try:
        with zjobs.Client.connect(peer.requests, peer.responses,
                                  timeout_s=CALL_TIMEOUT_S) as client:
            before = warm_up(client)
            values: list[object] = [n if n % 100 else {"fail": str(n)} for n in range(2000)]
            futures = [client.submit(value) for value in values]
            for value, future in zip(values, futures, strict=True):
                if isinstance(value, int):
                    assert future.result(CALL_TIMEOUT_S) == value * value
                else:
                    error = future.exception(CALL_TIMEOUT_S)
                    assert isinstance(error, zjobs.RemoteError)
                    assert (error.type, error.message) == ("JobFailed", f"Error: {value['fail']}")
            assert before > 0 and client.coalesced > before
            assert client.pending == 0
    finally:
        assert peer.stop() == 0


def test_node_processor_without_batches_never_runs_one(node_dir: Path) -> None:
    # --batch-max 0: the processor as written from the base protocol. A batch is refused
    # by its frame count (nothing runs), the pong advertises nothing, and map sends one
    # message per value.
    request, _ = batch_example()
    peer = node_peer(node_dir, "--batch-max", "0")
    try:
        got = exchange(peer.requests, peer.responses, request, b"t1")
        header = msgpack.unpackb(got[1])
        assert (header["status"], header["id"], header["error"]["type"]) == (
            "error", "b1", "BadRequest")
        assert got[2] == b"\xc0"
        with zjobs.Client.connect(peer.requests, peer.responses,
                                  timeout_s=CALL_TIMEOUT_S) as client:
            assert list(client.map(range(200))) == [i * i for i in range(200)]
            warm_up(client)  # bursts of plain submits are never coalesced for it
            futures = [client.submit(n) for n in range(1000)]
            assert [f.result(CALL_TIMEOUT_S) for f in futures] == [n * n for n in range(1000)]
            assert client.coalesced == 0
            with pytest.raises(zjobs.RemoteError) as refused:
                client.call(zjobs.Batch.of([1, 2]))
            assert refused.value.type == "BadRequest"
            assert client.call(5) == 25  # still serving
    finally:
        assert peer.stop() == 0
