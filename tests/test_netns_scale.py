"""Scale out across hosts: processors join and leave while a client runs, found through DNS.

A client in one network namespace, processors in four others (each joined to the client's
by a veth pair, as in test_netns.py), and a real DNS server, dnsmasq, bound to the client
namespace's own address and answering for ``proc.svc.test`` from a hosts file that the
test rewrites (SIGHUP makes dnsmasq read it again). The client (tests/scale_client.py)
resolves ``dns://proc.svc.test:5555`` / ``:5556`` every 0.2 s and keeps 64 calls in flight
on a job that sleeps 10 ms (tests/jobs_scale.py), which prints every run it makes.

Every processor binds the same ports (5555, 5556) on its own namespace's address, as the
pods behind a Kubernetes headless Service do; nothing else can hold them there.

Needs root, iproute2 and dnsmasq; skipped with the reason otherwise (not under CI).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dns_server import DnsServer, dnsmasq_path
from jobs_interop import TESTS, Peer, run, skip_or_fail, subprocess_env, zjobs_command
from netns import Network

pytestmark = pytest.mark.timeout(300)

NAME = "proc.svc.test"
REQUESTS_PORT, RESPONSES_PORT = 5555, 5556
WINDOW = 64  # calls in flight: enough to keep four 10 ms processors busy
MEASURE_S = 3.0  # each throughput window
STEP_TIMEOUT_S = 60.0  # the longest the test waits for any one condition


class Hosts:
    """A client namespace with dnsmasq, and processor namespaces joined to it."""

    def __init__(self, network: Network, processors: int) -> None:
        self.network = network
        self.client_ns = network.host("cli")
        self.addresses: list[str] = []  # each processor's address (its end of its link)
        self.peers: list[Peer] = []
        client_addresses = []
        for i in range(processors):
            ns = network.host(f"p{i}")
            proc_addr, cli_addr = network.link(ns, self.client_ns)
            self.addresses.append(proc_addr)
            client_addresses.append(cli_addr)
            argv = [*zjobs_command(), "serve", "jobs_scale:nap",
                    "--requests", f"tcp://{proc_addr}:{REQUESTS_PORT}",
                    "--responses", f"tcp://{proc_addr}:{RESPONSES_PORT}", "--name", f"p{i}"]
            peer = Peer(argv, prefix=["ip", "netns", "exec", ns], wait_listening=False)
            network.started(peer)  # stopped by the network's finalizer too
            self.peers.append(peer)
        for peer in self.peers:  # started together: a loaded machine takes seconds each
            peer._wait_listening()
        self.dns = DnsServer(client_addresses[0], 53, {}, prefix=["ip", "netns", "exec",
                                                               self.client_ns])

    def publish(self, indexes: list[int]) -> None:
        """Make ``proc.svc.test`` resolve to these processors (none: no such name)."""
        self.dns.set_hosts({NAME: [self.addresses[i] for i in indexes]} if indexes else {})

    def runs(self) -> collections.Counter[int]:
        """How many times each number ran, over every processor."""
        counts: collections.Counter[int] = collections.Counter()
        for peer in self.peers:
            counts.update(int(line[4:]) for line in list(peer.lines) if line.startswith("ran "))
        return counts

    def ran(self, index: int) -> int:
        return sum(line.startswith("ran ") for line in list(self.peers[index].lines))

    def close(self) -> None:
        self.dns.close()


class LoadClient:
    """tests/scale_client.py in the client namespace, driven over its stdin and stdout."""

    def __init__(self, hosts: Hosts, *, retries: int, timeout_s: float = 5.0,
                 window: int = WINDOW, name: str = NAME, expect_ready: bool = True) -> None:
        settings = {"requests": f"dns://{name}:{REQUESTS_PORT}",
                    "responses": f"dns://{name}:{RESPONSES_PORT}", "dns": hosts.dns.address,
                    "dns_timeout_s": 0.5, "interval_s": 0.2, "timeout_s": timeout_s,
                    "retries": retries, "window": window}
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", hosts.client_ns, sys.executable,
             str(TESTS / "scale_client.py"), json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=subprocess_env(), text=True, cwd=TESTS)
        self._reader = threading.Thread(target=self._read, name="scale-client-stdout",
                                        daemon=True)
        self._reader.start()
        self.first = self.line()
        if expect_ready and self.first != {"ready": True}:
            raise AssertionError(f"the client did not start: {self.first}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def line(self, timeout_s: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout_s))  # type: ignore[no-any-return]
        except queue.Empty:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"no line from the client within {timeout_s}s "
                                 f"(exit {self.proc.returncode}): {err[-3000:]}") from None

    def command(self, text: str, timeout_s: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.line(timeout_s)

    def status(self) -> dict[str, Any]:
        # Bounded: a client whose watcher hung on DNS would still answer (it is a thread).
        return self.command("status", timeout_s=10)

    def wait(self, predicate: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            status = self.status()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {STEP_TIMEOUT_S}s; last {status}")
            time.sleep(0.05)

    def stop(self) -> dict[str, Any]:
        summary = self.command("stop", timeout_s=STEP_TIMEOUT_S * 2)
        assert self.proc.wait(30) == 0
        return summary

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def network() -> Iterator[Network]:
    if shutil.which("ip") is None:
        skip_or_fail("ip (iproute2) not found: cannot create network namespaces")
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root (ip netns add)")
    dnsmasq_path()
    net = Network()
    try:
        yield net
    finally:
        net.close()
    leftover = run(["ip", "netns", "list"], timeout_s=30).stdout
    assert net.token not in leftover, f"namespaces left behind: {leftover}"


@pytest.fixture
def hosts(network: Network) -> Iterator[Hosts]:
    made = Hosts(network, processors=4)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def clients() -> Iterator[list[LoadClient]]:
    started: list[LoadClient] = []
    yield started
    for client in started:
        client.close()


def throughput(client: LoadClient) -> float:
    """Calls answered per second over one window of MEASURE_S (the client's own clock)."""
    before = client.status()
    time.sleep(MEASURE_S)  # a measurement window, not a wait for a condition
    after = client.status()
    return float(after["answered"] - before["answered"]) / (after["at"] - before["at"])


def assert_answered_once(summary: dict[str, Any]) -> None:
    answers = collections.Counter(summary["answers"])
    assert summary["errors"] == [], summary["errors"][:5]  # 0 lost
    assert summary["wrong"] == [] and summary["stuck"] == 0
    assert set(answers) == set(range(summary["issued"]))  # every call answered
    assert max(answers.values()) == 1  # ... once


def assert_exactly_once(summary: dict[str, Any], runs: collections.Counter[int]) -> None:
    assert_answered_once(summary)
    answers = set(summary["answers"])
    duplicated = {n: c for n, c in runs.items() if c > 1}
    assert duplicated == {}, f"{len(duplicated)} numbers ran more than once"  # 0 duplicated
    assert set(runs) == answers


def test_grow_from_one_to_four_processors_under_load(hosts: Hosts,
                                                     clients: list[LoadClient]) -> None:
    hosts.publish([0])
    client = LoadClient(hosts, retries=2)
    clients.append(client)
    client.wait(lambda s: s["answered"] >= 50, "warm-up on one processor")
    one = throughput(client)

    hosts.publish([0, 1, 2, 3])  # no client restart: the watcher sees the new records
    client.wait(lambda s: len(s["requests"]) == 4, "client connected to the four")
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while min(hosts.ran(i) for i in range(4)) < 20:
        assert time.monotonic() < deadline, [hosts.ran(i) for i in range(4)]
        time.sleep(0.05)
    four = throughput(client)

    summary = client.stop()
    print(f"scale-up: {one:.0f} calls/s on 1 processor, {four:.0f} on 4: "
          f"{four / one:.2f}x; resent {summary['resent']}")
    assert four >= 3.5 * one, (one, four)
    assert_answered_once(summary)


def test_remove_two_of_four_under_load_loses_and_duplicates_nothing(
        hosts: Hosts, clients: list[LoadClient]) -> None:
    hosts.publish([0, 1, 2, 3])
    client = LoadClient(hosts, retries=3)
    clients.append(client)
    client.wait(lambda s: s["answered"] >= 200, "load on four processors")
    four = throughput(client)

    hosts.publish([0, 1])
    client.wait(lambda s: len(s["requests"]) == 2, "client dropped the two")
    for peer in hosts.peers[2:]:  # what Kubernetes does next: SIGTERM (graceful)
        assert peer.stop(signal.SIGTERM) == 0
    at = client.status()["answered"]
    client.wait(lambda s: s["answered"] >= at + 200, "load goes on on two")
    two = throughput(client)

    summary = client.stop()
    print(f"scale-down: {four:.0f} calls/s on 4 processors, {two:.0f} on 2; "
          f"{summary['issued']} calls, resent {summary['resent']}, "
          f"replays {summary['replays']}, lost {len(summary['errors'])}")
    assert_exactly_once(summary, hosts.runs())


def test_a_name_that_stops_resolving_keeps_the_last_known_set(
        hosts: Hosts, clients: list[LoadClient]) -> None:
    hosts.publish([0, 1])
    client = LoadClient(hosts, retries=2, window=8)
    clients.append(client)
    client.wait(lambda s: s["answered"] >= 20, "load on two processors")

    hosts.publish([])  # NXDOMAIN
    status = client.wait(lambda s: s["failures"] >= 2, "readings fail")
    assert "no such name proc.svc.test" in status["last_error"]
    assert len(status["requests"]) == 2  # kept
    client.wait(lambda s: s["answered"] >= status["answered"] + 50, "calls go on")

    hosts.dns.pause()  # the server stops answering: every reading times out
    try:
        failures = client.status()["failures"]
        status = client.wait(lambda s: s["failures"] >= failures + 2
                             and "no answer" in (s["last_error"] or ""), "readings time out")
        assert len(status["requests"]) == 2
        client.wait(lambda s: s["answered"] >= status["answered"] + 50, "calls go on")
        # A client that starts now cannot know any processor: a clear error, quickly.
        late = LoadClient(hosts, retries=0, window=1, expect_ready=False)
        clients.append(late)
        assert "no answer for proc.svc.test" in late.first["connect_error"]
        assert late.first["seconds"] < 10
    finally:
        hosts.dns.resume()
    hosts.publish([0, 1, 2])
    client.wait(lambda s: len(s["requests"]) == 3 and s["last_error"] is None, "resolves again")
    gone = LoadClient(hosts, retries=0, window=1, name="gone.svc.test", expect_ready=False)
    clients.append(gone)
    assert "no such name gone.svc.test" in gone.first["connect_error"]
    summary = client.stop()
    assert summary["errors"] == [] and summary["wrong"] == []
