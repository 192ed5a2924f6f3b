"""Across hosts: processors and clients in separate network namespaces, talking over veth.

Each test builds its own little network: namespaces named after a random token, joined by
veth pairs with addresses in 10.231.X.0/24 that exist only inside those namespaces. The
``zjobs serve`` daemons run in one namespace (``ip netns exec``), a Python zjobs client in
another, so every request and response crosses a (virtual) link between two hosts. The
namespaces, the links and the processes are removed in a finalizer, also on failure.

Needs root and iproute2; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from jobs_interop import Peer, run, serve_command, skip_or_fail

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


class Network:
    """Namespaces and veth links of one test, all named after one random token."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(3)
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.peers: list[Peer] = []
        # one /24 per link: 10.231.X.0/24, X random so parallel runs rarely meet
        self._next_subnet = 1 + secrets.randbelow(200)

    def _ip(self, *args: str, ns: str | None = None) -> None:
        argv = ["ip", *(["-n", ns] if ns else []), *args]
        done = run(argv, timeout_s=30)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")

    def host(self, role: str) -> str:
        """A new namespace with its loopback up."""
        name = f"zjobs-{self.token}-{role}"
        done = run(["ip", "netns", "add", name], timeout_s=30)
        if done.returncode != 0:
            if not self.namespaces:
                skip_or_fail(f"cannot create network namespaces (ip netns add: "
                             f"{done.stderr.strip()}); needs root with CAP_SYS_ADMIN")
            raise AssertionError(f"ip netns add {name} failed: {done.stderr.strip()}")
        self.namespaces.append(name)
        self._ip("link", "set", "lo", "up", ns=name)
        return name

    def link(self, ns_a: str, ns_b: str) -> tuple[str, str]:
        """Join two namespaces by a veth pair; return the addresses of a and b."""
        subnet = f"10.231.{self._next_subnet}"
        self._next_subnet += 1
        end_a = f"zj{self.token}{len(self.links)}a"  # interface names: at most 15 characters
        end_b = f"zj{self.token}{len(self.links)}b"
        self.links += [end_a, end_b]
        self._ip("link", "add", end_a, "type", "veth", "peer", "name", end_b)
        for end, ns, addr in ((end_a, ns_a, f"{subnet}.1"), (end_b, ns_b, f"{subnet}.2")):
            self._ip("link", "set", end, "netns", ns)
            self._ip("addr", "add", f"{addr}/24", "dev", end, ns=ns)
            self._ip("link", "set", end, "up", ns=ns)
        return f"{subnet}.1", f"{subnet}.2"

    def serve(self, ns: str, addr: str, name: str) -> Peer:
        """``zjobs serve`` in a namespace, bound to its address (ports chosen by the OS)."""
        endpoint = f"tcp://{addr}:*"
        peer = Peer(serve_command(endpoint, endpoint, name), prefix=["ip", "netns", "exec", ns])
        self.peers.append(peer)
        assert peer.requests.startswith(f"tcp://{addr}:"), peer.requests
        return peer

    def client(self, ns: str, peers: list[Peer], count: int) -> dict[str, object]:
        """Run a zjobs client in a namespace against the peers; what it got back."""
        args = {"requests": [p.requests for p in peers],
                "responses": [p.responses for p in peers],
                "count": count, "timeout_s": CALL_TIMEOUT_S}
        done = run([sys.executable, "-c", CLIENT, json.dumps(args)],
                   prefix=["ip", "netns", "exec", ns], timeout_s=240)
        assert done.returncode == 0, f"client failed:\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]

    def stop_peers(self) -> list[int]:
        """SIGTERM every daemon (by PID); their exit codes."""
        codes = [peer.stop() for peer in self.peers]
        self.peers = []
        return codes

    def close(self) -> None:
        try:
            self.stop_peers()
        finally:
            for ns in self.namespaces:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False,
                               timeout=30)
            # veth ends still in the root namespace (a test that failed half way)
            for link in self.links:
                subprocess.run(["ip", "link", "del", link], capture_output=True, check=False,
                               timeout=30)


@pytest.fixture
def network() -> Iterator[Network]:
    if shutil.which("ip") is None:
        skip_or_fail("ip (iproute2) not found: cannot create network namespaces")
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root (ip netns add)")
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

    got = network.client(client_ns, [daemon], count=5)

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
    got = network.client(client_ns, daemons, count=count)

    assert got["values"] == [n * n for n in range(count)]
    processors = got["processors"]
    assert isinstance(processors, list)
    # PUSH round-robins over both processors once the client is ready for both.
    assert processors.count("proc-a") >= count // 4, processors
    assert processors.count("proc-b") >= count // 4, processors
    assert processors.count("proc-a") + processors.count("proc-b") == count
    assert network.stop_peers() == [0, 0]
