"""A test network of Linux network namespaces: hosts, links, a router, and faults to put in it.

Every namespace of one :class:`Network` is named ``zjobs-<token>-<role>`` after a random
token, and every veth pair is created directly inside its two namespaces, so nothing is
named in the root namespace and parallel runs never clash. Addresses (10.231.N.0/24, one
subnet per link) exist only inside these namespaces. :meth:`Network.close` stops every
process the network started (by PID) and deletes the namespaces, which takes their links
with them; the test fixtures call it also when a test fails.

:class:`RoutedNetwork` is the shape of the network-fault tests: a client namespace and
processor hosts, each on its own link to a router namespace that forwards between them.
Faults happen in the router, so neither end is told about them:

- :meth:`RoutedNetwork.cut`: nftables DROP rules for one host, or for one of its two
  paths (the request connection or the response connection, told apart by port), so
  requests and responses can be cut and healed apart. A blackhole route could only cut
  by address, and both connections to a host share its address.
- :meth:`RoutedNetwork.link_down` / :meth:`RoutedNetwork.link_up`: the router's link to
  a host, as a flap.
- :meth:`RoutedNetwork.loss`: random packet loss on the client's link (nftables
  ``numgen random``); :meth:`RoutedNetwork.forward` puts a delaying TCP forwarder
  (``netns_forwarder.py``) in the router, since this kernel has no netem.

The daemons are real ``zjobs serve jobs_netfaults:record`` processes inside the host
namespaces (each writes down every run, see ``jobs_netfaults``); the client is
``netns_driver.py`` inside the client namespace (:class:`Driver`). Needs root, iproute2
and nftables: where they are missing the tests skip with the reason (or fail, when
``ZJOBS_REQUIRE_INTEROP=1`` says they must run).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from jobs_interop import TESTS, Peer, run, skip_or_fail, subprocess_env, zjobs_command
from jobs_netfaults import read_runs

START_TIMEOUT_S = 60.0  # a loaded 2-core machine can take seconds to start Python

NetPath = Literal["both", "requests", "responses"]
"""Which of a daemon's connections: both, the requests (PUSH to PULL) or the responses
(PUB to SUB)."""


def check_tools(*tools: str) -> None:
    """Skip (or fail, under ZJOBS_REQUIRE_INTEROP=1) unless root with these commands."""
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} not found: the network-namespace tests need it")
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root (ip netns add)")


def port_of(endpoint: str) -> int:
    """The port of ``tcp://HOST:PORT``."""
    return int(endpoint.rpartition(":")[2])


class Network:
    """Namespaces and veth links of one test, all named after one random token."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(3)
        self.namespaces: list[str] = []
        self._subnet = 0
        self._processes: list[Peer | Driver | Forwarder] = []

    def __repr__(self) -> str:
        return f"<Network {self.token} namespaces={self.namespaces}>"

    def ip(self, *args: str, ns: str | None = None) -> str:
        """Run ``ip [-n NS] ARGS``; its stdout. Fails the test with ip's error."""
        argv = ["ip", *(["-n", ns] if ns else []), *args]
        done = run(argv, timeout_s=30)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def exec(self, ns: str, *argv: str, stdin: str | None = None) -> str:
        """Run a command inside a namespace to its end; its stdout. Fails on a non-zero exit."""
        full = ["ip", "netns", "exec", ns, *argv]
        done = subprocess.run(full, input=stdin or "", capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(full)} failed: {done.stderr.strip()}")
        return done.stdout

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
        self.ip("link", "set", "lo", "up", ns=name)
        return name

    def link(self, ns_a: str, ns_b: str, *, if_a: str = "", if_b: str = "") -> tuple[str, str]:
        """Join two namespaces by a veth pair (interfaces ``if_a`` in a, ``if_b`` in b);
        return the addresses of a and b."""
        self._subnet += 1
        subnet = f"10.231.{self._subnet}"
        if_a = if_a or f"veth{self._subnet}a"
        if_b = if_b or f"veth{self._subnet}b"
        self.ip("link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b,
                ns=ns_a)
        for end, ns, addr in ((if_a, ns_a, f"{subnet}.1"), (if_b, ns_b, f"{subnet}.2")):
            self.ip("addr", "add", f"{addr}/24", "dev", end, ns=ns)
            self.ip("link", "set", end, "up", ns=ns)
        return f"{subnet}.1", f"{subnet}.2"

    def serve(self, ns: str, addr: str, name: str, *, job: str = "jobs_interop:job",
              extra: Sequence[str] = (), env: dict[str, str] | None = None) -> Peer:
        """``zjobs serve JOB`` in a namespace, bound to its address (ports chosen by the OS)."""
        endpoint = f"tcp://{addr}:*"
        setenv = ["env", *(f"{k}={v}" for k, v in (env or {}).items())] if env else []
        argv = [*zjobs_command(), "serve", job, "--requests", endpoint, "--responses",
                endpoint, "--name", name, "--log-level", "warning", *extra]
        peer = Peer(argv, prefix=["ip", "netns", "exec", ns, *setenv])
        self._processes.append(peer)
        assert peer.requests.startswith(f"tcp://{addr}:"), peer.requests
        return peer

    def started(self, process: Peer | Driver | Forwarder) -> None:
        """Stop ``process`` (by PID) when the network closes."""
        self._processes.append(process)

    def stop_peers(self) -> list[int]:
        """Stop every daemon (SIGTERM, by PID); their exit codes, in starting order."""
        peers = [p for p in self._processes if isinstance(p, Peer)]
        self._processes = [p for p in self._processes if not isinstance(p, Peer)]
        return [peer.stop() for peer in peers]

    def close(self) -> None:
        """Stop every process started here, then delete the namespaces (and their links)."""
        try:
            for process in reversed(self._processes):
                process.stop()
            self._processes = []
        finally:
            for ns in self.namespaces:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False,
                               timeout=30)
            self.namespaces = []


@dataclass
class Host:
    """A namespace on a link to the router."""

    role: str
    ns: str
    addr: str
    router_if: str  # the router's interface towards it
    gateway: str  # the router's address on that link


@dataclass
class Daemon:
    """A ``zjobs serve jobs_netfaults:record`` process on a host, and the file of its runs."""

    host: Host
    peer: Peer
    run_log: Path

    @property
    def name(self) -> str:
        return self.peer.name

    @property
    def ports(self) -> dict[str, int]:
        return {"requests": port_of(self.peer.requests),
                "responses": port_of(self.peer.responses)}

    def runs(self) -> list[tuple[int, float]]:
        """Every run so far: (request, monotonic time)."""
        return read_runs(self.run_log)

    def runs_between(self, start: float, end: float = float("inf")) -> int:
        return sum(1 for _, at in self.runs() if start <= at < end)


@dataclass
class Rule:
    """nftables rules in the router, removed by :meth:`heal` (idempotent)."""

    network: RoutedNetwork
    handles: list[tuple[str, int]]  # (chain, handle)
    healed_at: float | None = None

    def heal(self) -> float:
        """Remove the rules; the monotonic time they stopped acting."""
        if self.healed_at is None:
            for chain, handle in self.handles:
                self.network.nft("delete", "rule", "inet", "zjobs", chain, "handle",
                                 str(handle))
            self.healed_at = time.monotonic()
        return self.healed_at

    def dropped(self) -> int:
        """Packets the rules dropped so far (while they are in place)."""
        total = 0
        for chain, handle in self.handles:
            listing = self.network.nft("-a", "list", "chain", "inet", "zjobs", chain)
            for line in listing.splitlines():
                if line.rstrip().endswith(f"# handle {handle}"):
                    total += int(line.split("counter packets ")[1].split()[0])
        return total


class RoutedNetwork:
    """A client and processor hosts, each on its own link to a router that forwards between
    them; the faults happen in the router (see the module doc)."""

    def __init__(self, net: Network, workdir: Path, hosts: Iterable[str] = ("a", "b")) -> None:
        self.net = net
        self.workdir = workdir  # where the daemons write their runs
        self.router = net.host("rtr")
        self.client = self._attach("cli")
        self.hosts = {role: self._attach(role) for role in hosts}
        net.exec(self.router, "tee", "/proc/sys/net/ipv4/ip_forward", stdin="1\n")
        self.nft_script(
            "table inet zjobs {\n"
            "  chain cut { type filter hook forward priority 0; policy accept; }\n"
            "  chain lossin { type filter hook prerouting priority 0; policy accept; }\n"
            "  chain lossout { type filter hook postrouting priority 0; policy accept; }\n"
            "}\n")
        self.daemons: list[Daemon] = []

    def _attach(self, role: str) -> Host:
        ns = self.net.host(role)
        router_if = f"to-{role}"
        router_addr, addr = self.net.link(self.router, ns, if_a=router_if, if_b="to-rtr")
        self.net.ip("route", "add", "default", "via", router_addr, ns=ns)
        return Host(role, ns, addr, router_if, router_addr)

    def __repr__(self) -> str:
        return f"<RoutedNetwork {self.net.token} hosts={sorted(self.hosts)}>"

    # -- processes -------------------------------------------------------------------------

    def serve(self, role: str, name: str | None = None) -> Daemon:
        """A daemon on host ``role`` that writes down its runs."""
        host = self.hosts[role]
        log = self.workdir / f"runs-{role}-{len(self.daemons)}.log"
        peer = self.net.serve(host.ns, host.addr, name or f"proc-{role}",
                              job="jobs_netfaults:record",
                              extra=["--resources", "jobs_netfaults:run_log"],
                              env={"ZJOBS_RUN_LOG": str(log)})
        daemon = Daemon(host, peer, log)
        self.daemons.append(daemon)
        return daemon

    def driver(self, requests: Sequence[str], responses: Sequence[str], **load: Any) -> Driver:
        """Start ``netns_driver.py`` in the client namespace (options: see that module)."""
        driver = Driver(self.client.ns, {"requests": list(requests),
                                         "responses": list(responses), **load})
        self.net.started(driver)
        return driver

    def forward(self, daemons: Sequence[Daemon], delay_ms: float) -> dict[str, str]:
        """A forwarder in the router adding ``delay_ms`` each way to every endpoint of the
        daemons; maps each daemon endpoint to the router endpoint a client should use."""
        router_addr = self.client.gateway
        targets = [ep.removeprefix("tcp://") for d in daemons
                   for ep in (d.peer.requests, d.peer.responses)]
        forwarder = Forwarder(self.router, router_addr, targets, delay_ms)
        self.net.started(forwarder)
        return {f"tcp://{target}": f"tcp://{listen}"
                for listen, target in forwarder.listening.items()}

    # -- faults ----------------------------------------------------------------------------

    def nft(self, *args: str) -> str:
        return self.net.exec(self.router, "nft", *args)

    def nft_script(self, script: str) -> None:
        self.net.exec(self.router, "nft", "-f", "-", stdin=script)

    def _rule(self, rules: Iterable[tuple[str, str]]) -> Rule:
        """Add (chain, rule) pairs; one :class:`Rule` that removes them all."""
        handles = []
        for chain, rule in rules:
            out = self.nft("--echo", "--handle", "add", "rule", "inet", "zjobs", chain,
                           *rule.split())
            handles.append((chain, int(out.split("# handle ")[1].split()[0])))
        return Rule(self, handles)

    def cut(self, daemon: Daemon, path: NetPath = "both") -> Rule:
        """Drop, silently and both ways, what the router forwards between the client and the
        daemon's host (``both``) or one of the daemon's two connections (``requests``: the
        client's PUSH to its PULL; ``responses``: its PUB to the client's SUB)."""
        addr = daemon.host.addr
        if path == "both":
            matches = [f"ip daddr {addr}", f"ip saddr {addr}"]
        else:
            port = daemon.ports[path]
            matches = [f"ip daddr {addr} tcp dport {port}", f"ip saddr {addr} tcp sport {port}"]
        return self._rule(("cut", f"{match} counter drop") for match in matches)

    def loss(self, percent: float) -> Rule:
        """Drop ``percent`` % of the packets at random, each way, on the client's link."""
        drop = f"numgen random mod 1000 < {round(percent * 10)} counter drop"
        link = f'"{self.client.router_if}"'
        return self._rule([("lossin", f"iifname {link} {drop}"),
                           ("lossout", f"oifname {link} {drop}")])

    def link_down(self, role: str) -> float:
        """Take the router's link to a host down; the monotonic time it happened."""
        self.net.ip("link", "set", self.hosts[role].router_if, "down", ns=self.router)
        return time.monotonic()

    def link_up(self, role: str) -> float:
        self.net.ip("link", "set", self.hosts[role].router_if, "up", ns=self.router)
        return time.monotonic()

    def established(self, daemon: Daemon, path: NetPath = "both", *,
                    side: Literal["client", "host"] = "client") -> int:
        """How many tcp connections are up between the client and the daemon's endpoints
        (``path``), as the client's namespace sees them or as the daemon's host does. After
        a cut each side drops its connections only when its own keepalive gives up."""
        ports = list(daemon.ports.values()) if path == "both" else [daemon.ports[path]]
        if side == "client":
            ns, filters = self.client.ns, [f"dport = :{p}" for p in ports]
        else:
            ns, filters = daemon.host.ns, [f"sport = :{p}" for p in ports]
        out = self.net.exec(ns, "ss", "-Htn", "state", "established",
                            f"( {' or '.join(filters)} )")
        return len(out.splitlines())


def _tail(stream: IO[bytes], size: int = 3000) -> str:
    stream.seek(0)
    return stream.read().decode(errors="replace")[-size:]


class Forwarder:
    """``netns_forwarder.py`` running in a namespace; ``listening`` maps each address it
    listens on to its target."""

    def __init__(self, ns: str, listen: str, targets: Sequence[str], delay_ms: float) -> None:
        argv = ["ip", "netns", "exec", ns, sys.executable, str(TESTS / "netns_forwarder.py"),
                "--delay-ms", str(delay_ms), listen, *targets]
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, env=subprocess_env())
        self.listening: dict[str, str] = {}
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                if line.strip() == "ready":
                    break
                _, listen_at, target = line.split()
                self.listening[listen_at] = target
            else:
                raise AssertionError(f"forwarder ended early: {_tail(self._stderr)}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Close its standard input (it exits by itself); SIGKILL by PID if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@dataclass
class DriverResult:
    """What ``netns_driver.py`` printed when it was done."""

    calls: int
    answered: int
    errors: dict[str, int]
    per_processor: dict[str, int]
    resent: int
    replays: int
    unmatched: int
    records: list[list[Any]] = field(repr=False)
    suspicions: int = 0
    """Times a route (a processor's request endpoint) was taken out of rotation."""
    resets: int = 0
    """Times a route's connection was reset (its processor had gone silent)."""
    """One per call: [n, start, end, processor, error type, attempts, replay]."""


class Driver:
    """``netns_driver.py`` making calls from the client namespace (see that module)."""

    def __init__(self, ns: str, args: dict[str, Any]) -> None:
        argv = ["ip", "netns", "exec", ns, sys.executable, str(TESTS / "netns_driver.py"),
                json.dumps(args)]
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, env=subprocess_env())
        self.events: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, name="netns-driver-stdout",
                                        daemon=True)
        self._reader.start()
        self.started_at = 0.0
        """When the calls began (monotonic), once :meth:`wait_ready` returned."""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            self.events.append(event)
            (self._ready if event["event"] == "ready" else self._done).set()
        self._ready.set()
        self._done.set()

    def wait_ready(self) -> None:
        """Wait for the readiness handshake (fails the test if it does not come)."""
        if not self._ready.wait(START_TIMEOUT_S) or not self.events:
            raise AssertionError(f"the driver did not get ready: {_tail(self._stderr)}")
        self.started_at = self.events[0]["t"]

    def finish(self, timeout_s: float = 120.0, *, stop: bool = True) -> DriverResult:
        """Wait for the calls in flight (first asking it to make no more when ``stop``);
        what it counted."""
        if stop and self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        if not self._done.wait(timeout_s):
            raise AssertionError(f"the driver did not finish within {timeout_s}s")
        self.proc.wait(timeout_s)
        done = [e for e in self.events if e["event"] == "done"]
        assert self.proc.returncode == 0 and done, f"driver failed: {_tail(self._stderr)}"
        return DriverResult(**{k: v for k, v in done[0].items() if k != "event"})

    def stop(self) -> None:
        """End it: close its input (it stops calling), SIGKILL by PID if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
