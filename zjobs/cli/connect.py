"""How client commands connect: --requests, --responses, --timeout, --dns-server and the
CURVE client options, gathered into a :class:`Target`."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import zmq

from zjobs.cli.app import RET_USAGE, CliError, option
from zjobs.client.sync import Client
from zjobs.core.membership import Membership
from zjobs.core.options import ClientOptions
from zjobs.transport.security import CurveClient
from zjobs.transport.sockets import check_resolvable, connectable, is_dns_endpoint


def check_connectable(endpoints: tuple[str, ...]) -> None:
    """Fail at once, with exit code 2, for an endpoint whose host does not resolve (libzmq
    would retry it silently until the timeout)."""
    for endpoint in endpoints:
        check_resolvable(connectable(endpoint))


def call_options(timeout_s: float, retries: int = 0) -> ClientOptions:
    """The :class:`~zjobs.ClientOptions` of client commands, from their flags: ``--timeout``
    bounds the readiness handshake, each attempt, and each send's wait for room alike;
    ``--retries`` (``send``) is the number of resends."""
    return ClientOptions(timeout_s=timeout_s, ready_timeout_s=timeout_s,
                         send_timeout_s=timeout_s, retries=retries)


@dataclass(frozen=True, slots=True)
class Target:
    """Where client commands connect, and how they call (built from the flags)."""

    requests: tuple[str, ...]
    responses: tuple[str, ...]
    options: ClientOptions
    security: CurveClient | None = None
    dns_server: str | None = None

    def check(self) -> None:
        """Refuse, with exit code 2, what would only show as a timeout later: unpaired
        endpoints and host names that do not resolve. (A dns:// or srv:// name stands for
        any number of processors, so those need not pair up.)"""
        dns = any(is_dns_endpoint(ep) for ep in self.requests + self.responses)
        if not dns and len(self.requests) != len(self.responses):
            raise CliError(f"{len(self.requests)} --requests but {len(self.responses)} "
                           "--responses: give one of each per processor", RET_USAGE)
        check_connectable(self.requests + self.responses)

    def client(self, context: zmq.Context[zmq.Socket[bytes]]) -> Client:
        """A connected client (readiness handshake not yet done); DNS endpoints are
        resolved now and watched while it runs."""
        requests = [connectable(ep) for ep in self.requests]
        responses = [connectable(ep) for ep in self.responses]
        membership = dns_membership(requests, responses, self.dns_server)
        if membership is None:
            return Client.connect(requests, responses, context=context,
                                  security=self.security, options=self.options)
        return Client.connect(membership=membership, context=context, security=self.security,
                              options=self.options)


_SERVER = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>\d+))?$")


def dns_membership(requests: list[str], responses: list[str],
                   server: str | None) -> Membership | None:
    """A DNS membership when an endpoint is dns:// or srv://; None for plain endpoints."""
    if not any(is_dns_endpoint(ep) for ep in (*requests, *responses)):
        if server is not None:
            raise CliError("--dns-server needs a dns://NAME:PORT or srv://NAME endpoint",
                           RET_USAGE)
        return None
    # Here, not at the top: dnspython takes ~0.1 s to import, paid only by DNS endpoints
    # (`zjobs ping` runs as a health probe every few seconds).
    from zjobs.transport.dns import DnsMembership

    nameservers, port = None, 53
    if server is not None:
        match = _SERVER.match(server)
        if match is None:
            raise CliError(f"--dns-server {server!r}: expected ADDR, ADDR:PORT or [ADDR]:PORT",
                           RET_USAGE)
        nameservers = [match.group("v6") or match.group("host")]
        port = int(match.group("port") or 53)
    try:
        return DnsMembership(requests, responses, nameservers=nameservers, port=port)
    except ValueError as exc:
        raise CliError(str(exc), RET_USAGE) from exc


DNS_SERVER = option(
    "--dns-server", metavar="ADDR[:PORT]",
    help="The DNS server for dns:// and srv:// endpoints (IPv6: [ADDR]:PORT) "
         "[default: those of /etc/resolv.conf].")

_CLIENT_OPTIONS = (
    option("--requests", multiple=True, required=True, metavar="EP",
           help="A processor's request endpoint; repeat to load-balance over several. "
                "dns://NAME:PORT (every A/AAAA record) or srv://NAME (SRV records) "
                "stands for all the processors behind a name, read again every 5 s."),
    option("--responses", multiple=True, required=True, metavar="EP",
           help="A processor's response endpoint; repeat, one per processor (dns:// and "
                "srv:// as for --requests)."),
    DNS_SERVER,
    option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
           show_default=True, metavar="S",
           help="Seconds to wait for the processor(s), and for each response."),
)

_CURVE_CLIENT_OPTIONS = (
    option("--server-key", metavar="FILE",
           help="The server's public key file (NAME.key): encrypt with CURVE."),
    option("--secret-key", metavar="FILE",
           help="This client's secret key file (NAME.key_secret), for servers that only "
                "admit known clients [default: a throwaway key pair]."),
)


def curve_client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --server-key and --secret-key to a command, passed to it as ``security``."""

    @functools.wraps(command)
    def wrapper(*, server_key: str | None, secret_key: str | None, **kwargs: Any) -> Any:
        if server_key is None:
            if secret_key is not None:
                raise CliError("--secret-key needs --server-key (the server's public key "
                               "file)", RET_USAGE)
            return command(security=None, **kwargs)
        return command(security=CurveClient(server_key, secret_key), **kwargs)

    for add in reversed(_CURVE_CLIENT_OPTIONS):
        wrapper = add(wrapper)
    return wrapper


def client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the connection options to a command, passed to it as ``target``."""

    @functools.wraps(command)
    def wrapper(*, requests: tuple[str, ...], responses: tuple[str, ...], timeout: float,
                security: CurveClient | None, dns_server: str | None,
                **kwargs: Any) -> Any:
        target = Target(requests, responses, call_options(timeout), security, dns_server)
        target.check()
        return command(target=target, **kwargs)

    outer = curve_client_options(wrapper)  # innermost, so listed after the others
    for add in reversed(_CLIENT_OPTIONS):
        outer = add(outer)
    return outer
