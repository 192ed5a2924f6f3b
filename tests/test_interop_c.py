"""The C client (examples/c), built with make, against a real ``zjobs serve`` daemon."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_interop import REPO, ClientCLI, ClientContract, Peer, run, serve_command, skip_or_fail

pytestmark = pytest.mark.timeout(300)

LOOPBACK = "tcp://127.0.0.1:*"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> ClientCLI:
    for tool in ("gcc", "make"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} not found, the C client cannot be built (apt-get install "
                         "build-essential pkg-config libzmq3-dev libmsgpack-dev)")
    out = tmp_path_factory.mktemp("zjclient")
    built = run(["make", "-C", str(REPO / "examples" / "c"), f"BUILDDIR={out}"], timeout_s=300)
    if built.returncode != 0:
        missing = re.search(r"(zmq\.h|msgpack\.h): No such file|cannot find -l\S+", built.stderr)
        if missing:
            skip_or_fail(f"libzmq or msgpack-c development files missing ({missing.group(0)}): "
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


class TestCClient(ClientContract):
    """The shared client checks (jobs_interop.ClientContract) with the C client."""
