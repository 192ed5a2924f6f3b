"""DNS membership against a real DNS server (dnsmasq on loopback, a port of its own)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dns_server import DnsServer

import zjobs
from zjobs.testing import running_processor, wait_until
from zjobs.transport.dns import DnsMembership


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 now (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free port")


# Record data: the tcp endpoints these names resolve to (their ports included) are only
# compared, never bound or connected; the processors a test calls bind tcp://127.0.0.1:*.
HOSTS = {"a.svc.test": ["127.0.0.5", "127.0.0.6"], "six.svc.test": ["::1"],
         "box.svc.test": ["127.0.0.7"]}
SRV = [("_requests._tcp.s.svc.test", "a.svc.test", 7001),
       ("_requests._tcp.s.svc.test", "box.svc.test", 7002)]


@pytest.fixture
def server() -> Iterator[DnsServer]:
    dns = DnsServer("127.0.0.1", free_port(), HOSTS, srv=SRV)
    try:
        probe = DnsMembership("dns://box.svc.test:1", (), nameservers=["127.0.0.1"],
                              port=dns.port, timeout_s=0.5)
        wait_until(lambda: _resolves(probe), timeout_s=30, interval_s=0.05)
        yield dns
    finally:
        dns.close()


def _resolves(membership: DnsMembership) -> bool:
    try:
        return bool(membership.members())
    except zjobs.MembershipError:
        return False


def membership(server: DnsServer, requests: str | list[str], responses: str | list[str] = (),
               timeout_s: float = 2.0) -> DnsMembership:
    return DnsMembership(requests, responses, nameservers=[server.address], port=server.port,
                         timeout_s=timeout_s)


def test_a_and_aaaa_records_give_one_endpoint_per_address(server: DnsServer) -> None:
    got = membership(server, ["dns://a.svc.test:5555", "dns://six.svc.test:5555"],
                     "dns://a.svc.test:5556").members()
    assert got.requests == ("tcp://127.0.0.5:5555", "tcp://127.0.0.6:5555", "tcp://[::1]:5555")
    assert got.responses == ("tcp://127.0.0.5:5556", "tcp://127.0.0.6:5556")


def test_srv_records_carry_the_ports(server: DnsServer) -> None:
    got = membership(server, ["srv://_requests._tcp.s.svc.test", "ipc:///tmp/kept"]).members()
    assert got.requests == ("ipc:///tmp/kept", "tcp://127.0.0.5:7001", "tcp://127.0.0.6:7001",
                            "tcp://127.0.0.7:7002")


def test_a_change_of_records_is_seen_at_the_next_reading(server: DnsServer) -> None:
    source = membership(server, "dns://box.svc.test:1")
    assert source.members().requests == ("tcp://127.0.0.7:1",)
    server.set_hosts({**HOSTS, "box.svc.test": ["127.0.0.7", "127.0.0.8"]})
    wait_until(lambda: len(source.members().requests) == 2, timeout_s=10)


@pytest.mark.parametrize(("endpoint", "reason"), [
    ("dns://nope.svc.test:1", "no such name nope.svc.test"),
    ("srv://a.svc.test", "a.svc.test has no SRV records"),
    ("srv://_x._tcp.nope.svc.test", "no such name"),
])
def test_names_that_do_not_resolve_are_clear_errors(server: DnsServer, endpoint: str,
                                                    reason: str) -> None:
    with pytest.raises(zjobs.MembershipError) as info:
        membership(server, endpoint).members()
    assert info.value.source == endpoint
    assert reason in info.value.reason


def test_a_server_that_does_not_answer_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # receives, never answers
        silent.bind(("127.0.0.1", 0))
        source = DnsMembership("dns://a.svc.test:1", (), nameservers=["127.0.0.1"],
                               port=silent.getsockname()[1], timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(zjobs.MembershipError, match=r"no answer .* within 0.3s"):
            source.members()
        assert time.monotonic() - start < 5  # bounded: never a hang


def test_malformed_dns_endpoints_are_refused() -> None:
    for bad in ("dns://a.svc.test", "dns://a.svc.test:x", "srv://a:1"):
        with pytest.raises(ValueError, match="expected dns://NAME:PORT or srv://NAME"):
            DnsMembership(bad, (), nameservers=["127.0.0.1"])


def test_client_connects_to_the_processors_a_name_resolves_to(server: DnsServer) -> None:
    with running_processor(lambda r, _: r, name="dnsproc",
                           requests="tcp://127.0.0.1:*", responses="tcp://127.0.0.1:*") as proc:
        eps = proc.connect_endpoints
        req_port, res_port = eps.requests.rsplit(":", 1)[1], eps.responses.rsplit(":", 1)[1]
        server.set_hosts({**HOSTS, "proc.svc.test": ["127.0.0.1"]})
        source = membership(server, f"dns://proc.svc.test:{req_port}",
                            f"dns://proc.svc.test:{res_port}")
        wait_until(lambda: _resolves(source), timeout_s=10)
        with zjobs.Client.connect(membership=source, timeout_s=10) as client:
            assert client.call_response(3).processor == "dnsproc"
        with pytest.raises(zjobs.MembershipError, match="no such name"):
            zjobs.Client.connect(membership=membership(server, "dns://gone.svc.test:1",
                                                       "dns://gone.svc.test:2"))


# -- the command line ----------------------------------------------------------------------


def _ports(proc: zjobs.ZmqProcessor) -> tuple[str, str]:
    eps = proc.connect_endpoints
    return eps.requests.rsplit(":", 1)[1], eps.responses.rsplit(":", 1)[1]


def test_send_and_ping_resolve_dns_endpoints(server: DnsServer, ipc_dir: Path) -> None:
    from click.testing import CliRunner

    from zjobs.cli import main

    with running_processor(lambda r, _: r, name="clidns") as proc:
        req, res = _ports(proc)
        server.set_hosts({**HOSTS, "cli.svc.test": ["127.0.0.1"]})
        dns = ["--requests", f"dns://cli.svc.test:{req}", "--responses",
               f"dns://cli.svc.test:{res}", "--dns-server", f"127.0.0.1:{server.port}"]
        result = CliRunner().invoke(main, ["send", *dns, '"hi"'])
        assert result.exit_code == 0, result.output
        line = json.loads(result.output)
        assert (line["value"], line["processor"]) == ("hi", "clidns")
        result = CliRunner().invoke(main, ["ping", *dns])
        assert result.exit_code == 0 and "processors=1" in result.output, result.output
        result = CliRunner().invoke(main, ["ping", *dns[:4], "--dns-server",
                                           f"127.0.0.1:{server.port}", "--timeout", "1",
                                           "--requests", "dns://nope.svc.test:1"])
        assert result.exit_code == 1
        assert "no such name nope.svc.test" in result.output
        result = CliRunner().invoke(main, ["ping", "--requests", f"ipc://{ipc_dir}/a.req",
                                           "--responses", f"ipc://{ipc_dir}/a.pub",
                                           "--dns-server", "127.0.0.1"])
        assert result.exit_code == 2 and "needs a dns://" in result.output


def test_a_link_follows_its_downstream_by_dns(server: DnsServer) -> None:
    import signal

    from jobs_interop import Peer, zjobs_command

    with running_processor(lambda r, _: r + 1, name="up") as up, \
            running_processor(lambda r, _: r * 10, name="down1",
                              requests="tcp://127.0.0.1:*") as down1:
        req, _ = _ports(down1)
        server.set_hosts({**HOSTS, "down.svc.test": ["127.0.0.1"]})
        eps = up.connect_endpoints
        link = Peer([*zjobs_command(), "link", "--from", eps.responses, "--from-requests",
                     eps.requests, "--to-requests", f"dns://down.svc.test:{req}",
                     "--dns-server", f"127.0.0.1:{server.port}", "--name", "dnslink"],
                    wait_listening=False)
        try:
            wait_until(lambda: any(line.startswith("forwarding ") for line in link.lines),
                       timeout_s=60)
            with zjobs.Pipeline.connect(eps.requests, down1.connect_endpoints.responses,
                                        timeout_s=20) as chain:
                assert chain.call_response(4).processor == "down1"
        finally:
            assert link.stop(signal.SIGTERM) == 0, link.diagnostics()
