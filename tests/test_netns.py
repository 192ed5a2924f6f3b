"""Across hosts: processors and clients in separate network namespaces, talking over veth.

Each test builds its own little network with :class:`netns.Network`: namespaces named
after a random token, joined by veth pairs with addresses that exist only inside those
namespaces. The ``zjobs serve`` daemons run in one namespace (``ip netns exec``), a Python
zjobs client in another, so every request and response crosses a (virtual) link between
two hosts. The namespaces, the links and the processes are removed in a finalizer, also on
failure. The network faults are in ``test_netfaults.py``.

Needs root and iproute2; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from jobs_interop import Peer, run
from netns import Network, check_tools

pytestmark = pytest.mark.timeout(300)

CALL_TIMEOUT_S = 30.0

# Runs inside the client's namespace: calls the processors and prints what came back.
CLIENT = r"""
import json, sys
import zjobs

args = json.loads(sys.argv[1])
timeout = args["timeout_s"]
out = {"processors": [], "values": []}
with zjobs.Client.connect(requests=args["requests"], responses=args["responses"],
                          ready_timeout_s=timeout) as client:
    client.wait_ready(timeout_s=timeout)
    for n in range(args["count"]):
        response = client.call_response(n, timeout_s=timeout, meta={"n": n})
        assert response.meta == {"n": n}, response
        out["processors"].append(response.processor)
        out["values"].append(response.value)
    out["echo"] = client.call({"text": "hi", "bin": "x"}, timeout_s=timeout)
    try:
        client.call({"fail": "boom"}, timeout_s=timeout)
    except zjobs.RemoteError as exc:
        out["error"] = [exc.type, exc.message]
print(json.dumps(out))
"""


def run_client(network: Network, ns: str, peers: list[Peer], count: int) -> dict[str, object]:
    """Run a zjobs client in a namespace against the peers; what it got back."""
    args = {"requests": [p.requests for p in peers],
            "responses": [p.responses for p in peers],
            "count": count, "timeout_s": CALL_TIMEOUT_S}
    done = run([sys.executable, "-c", CLIENT, json.dumps(args)],
               prefix=["ip", "netns", "exec", ns], timeout_s=240)
    assert done.returncode == 0, f"client failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def network() -> Iterator[Network]:
    check_tools()
    net = Network()
    try:
        yield net
    finally:
        net.close()
    leftover = run(["ip", "netns", "list"], timeout_s=30).stdout
    assert net.token not in leftover, f"namespaces left behind: {leftover}"


def test_client_and_processor_on_two_hosts(network: Network) -> None:
    server_ns, client_ns = network.host("srv"), network.host("cli")
    server_addr, _ = network.link(server_ns, client_ns)
    daemon = network.serve(server_ns, server_addr, "far")

    got = run_client(network, client_ns, [daemon], count=5)

    assert got["values"] == [n * n for n in range(5)]
    assert got["processors"] == ["far"] * 5
    assert got["echo"] == {"text": "hi", "bin": "x"}
    assert got["error"] == ["JobFailed", "ValueError: boom"]
    assert network.stop_peers() == [0]


def test_processor_group_across_two_hosts(network: Network) -> None:
    ns_a, ns_b, client_ns = network.host("a"), network.host("b"), network.host("cli")
    addr_a, _ = network.link(ns_a, client_ns)
    addr_b, _ = network.link(ns_b, client_ns)
    daemons = [network.serve(ns_a, addr_a, "proc-a"), network.serve(ns_b, addr_b, "proc-b")]

    count = 40
    got = run_client(network, client_ns, daemons, count=count)

    assert got["values"] == [n * n for n in range(count)]
    processors = got["processors"]
    assert isinstance(processors, list)
    # PUSH round-robins over both processors once the client is ready for both.
    assert processors.count("proc-a") >= count // 4, processors
    assert processors.count("proc-b") >= count // 4, processors
    assert processors.count("proc-a") + processors.count("proc-b") == count
    assert network.stop_peers() == [0, 0]
