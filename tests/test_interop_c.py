"""The C client (examples/c), built with make, against a real ``zjobs serve`` daemon."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from jobs_interop import REPO, ClientCLI, Peer, run, serve_command

pytestmark = pytest.mark.timeout(300)

LOOPBACK = "tcp://127.0.0.1:*"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> ClientCLI:
    for tool in ("gcc", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: the C client cannot be built "
                        "(apt-get install build-essential pkg-config libzmq3-dev libmsgpack-dev)")
    out = tmp_path_factory.mktemp("zjclient")
    built = run(["make", "-C", str(REPO / "examples" / "c"), f"BUILDDIR={out}"], timeout_s=300)
    if built.returncode != 0:
        missing = re.search(r"(zmq\.h|msgpack\.h): No such file|cannot find -l\S+", built.stderr)
        if missing:
            pytest.skip(f"libzmq or msgpack-c development files missing ({missing.group(0)}): "
                        "apt-get install libzmq3-dev libmsgpack-dev")
        pytest.fail(f"make failed:\n{built.stdout}\n{built.stderr}")
    return ClientCLI([str(Path(out) / "zjclient")])


@pytest.fixture(scope="module")
def daemon() -> Iterator[Peer]:
    peer = Peer(serve_command(LOOPBACK, LOOPBACK, "interop"))
    try:
        yield peer
    finally:
        code = peer.stop()
    assert code == 0, f"zjobs serve exited {code} on SIGTERM; {peer.diagnostics()}"


def call(client: ClientCLI, daemon: Peer, *args: str) -> tuple[int, dict[str, str], str]:
    return client(daemon.requests, daemon.responses, *args)


def test_ping(client: ClientCLI, daemon: Peer) -> None:
    code, out, err = call(client, daemon, "--ping", "--id", "p1")
    assert code == 0, err
    assert out["status"] == "pong"
    assert out["id"] == "p1"
    assert out["processor"] == "interop"
    assert re.fullmatch(r"\S+", out["instance"])


def test_ordinary_request(client: ClientCLI, daemon: Peer) -> None:
    code, out, err = call(client, daemon, "--json-int", "7", "--id", "r1")
    assert code == 0, err
    assert out == {"status": "ok", "id": "r1", "cached": "false", "processor": "interop",
                   "value": "49"}


@pytest.mark.parametrize(("args", "value"), [
    (("--json-str", "hello wörld"), "hello wörld"),
    (("--nil",), "nil"),
    (("--json-int", "-3037000499"), "9223372030926249001"),
])
def test_echo_and_large_values(client: ClientCLI, daemon: Peer, args: tuple[str, ...],
                               value: str) -> None:
    code, out, err = call(client, daemon, *args)
    assert code == 0, err
    assert out["status"] == "ok"
    assert out["value"] == value


def test_error_response(client: ClientCLI, daemon: Peer) -> None:
    # 2**32 squared is 2**64, one more than msgpack's largest int: the job's value cannot be
    # encoded, which ZJP/1 answers with JobFailed.
    code, out, err = call(client, daemon, "--json-int", "4294967296", "--id", "e1")
    assert code == 1, err
    assert out["status"] == "error"
    assert out["id"] == "e1"
    assert out["type"] == "JobFailed"
    assert re.match(r"\w+: ", out["message"]), out


@pytest.mark.parametrize(("args", "printed"), [
    (("--id", "ü-str-id"), "ü-str-id"),
    (("--bin-id", "00ff10"), "hex:00ff10"),
    (("--bin-id", "72" * 255), "hex:" + "72" * 255),
])
def test_str_and_bin_ids(client: ClientCLI, daemon: Peer, args: tuple[str, ...],
                         printed: str) -> None:
    # The client only accepts a response whose id has the type and bytes it sent.
    code, out, err = call(client, daemon, "--json-int", "3", *args)
    assert code == 0, err
    assert out["id"] == printed
    assert out["value"] == "9"


@pytest.mark.parametrize("args", [("--json-int", "2"), ("--ping",), ("--json-int", "4294967296")])
def test_meta_echo(client: ClientCLI, daemon: Peer, args: tuple[str, ...]) -> None:
    code, out, err = call(client, daemon, *args, "--meta-key", "trace", "--meta-value", "abc",
                          "--meta-key", "n", "--meta-value", "1")
    assert code in (0, 1), err
    assert out["meta.trace"] == "abc"
    assert out["meta.n"] == "1"


def test_timeout_exit_code(client: ClientCLI) -> None:
    # Bound sockets that never answer: the handshake cannot finish.
    ctx = zmq.Context.instance()
    with ctx.socket(zmq.PULL) as pull, ctx.socket(zmq.PUB) as pub:
        pull.linger = pub.linger = 0
        pull.bind(LOOPBACK)
        pub.bind(LOOPBACK)
        code, out, err = client(pull.LAST_ENDPOINT.decode(), pub.LAST_ENDPOINT.decode(),
                                "--json-int", "1", timeout_ms=300)
    assert code == 3
    assert out == {}
    assert "timeout" in err


def test_usage_exit_code(client: ClientCLI) -> None:
    code, out, err = client("inproc://unused", "inproc://unused", "--bogus")
    assert code == 2
    assert out == {}
    assert "usage" in err
