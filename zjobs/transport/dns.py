"""DNS membership: the processors behind a name, read again while clients run.

Endpoints are written with two schemes of their own, beside plain ZeroMQ endpoints:

``dns://NAME:PORT``
    every A and AAAA record of NAME, each with PORT: what a Kubernetes headless Service
    answers (one address per ready pod), or any name with several addresses.
``srv://NAME``
    every SRV record of NAME (e.g. ``_requests._tcp.score.default.svc.cluster.local``,
    which Kubernetes publishes for a named port), each target's A/AAAA records with the
    record's port.

Anything else (``tcp://10.0.0.5:5555``, ``ipc://...``) is kept as it is, so a list may mix
both. Resolution uses dnspython rather than the system resolver (``getaddrinfo``), which
has no SRV records, no per-query timeout (a dead server can block a reading for
``attempts x timeout`` of resolv.conf, uninterruptibly), no choice of server, and no way to
tell "no such name" from "no answer". Every query here is bounded by ``timeout_s``.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterable, Sequence

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from zjobs.core.membership import Members
from zjobs.errors import MembershipError
from zjobs.transport.sockets import endpoint_list

__all__ = ["DnsMembership"]

_DNS = re.compile(r"^dns://(?P<name>[^:/\s]+):(?P<port>\d{1,5})$")
_SRV = re.compile(r"^srv://(?P<name>[^:/\s]+)$")


class _NoRecords(MembershipError):
    """The name exists but has no records of the type asked (try the other family)."""


def _tcp(address: str, port: int) -> str:
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"tcp://{host}:{port}"


class DnsMembership:
    """A :class:`~zjobs.core.membership.Membership` whose endpoints are DNS names.

    Args:
        requests: request endpoints: ``dns://NAME:PORT``, ``srv://NAME`` or plain ones.
        responses: response endpoints, likewise (usually the same name, another port).
        nameservers: the DNS servers to ask (addresses); None: those of /etc/resolv.conf.
        port: the servers' port.
        timeout_s: the longest one reading may take, all its queries together.

    Raises:
        ValueError: an endpoint with a DNS scheme is malformed.

    Example::

        membership = DnsMembership("dns://score.default.svc.cluster.local:5555",
                                   "dns://score.default.svc.cluster.local:5556")
        client = Client.connect(membership=membership)   # re-read every few seconds
    """

    def __init__(
        self,
        requests: str | Iterable[str],
        responses: str | Iterable[str],
        *,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        timeout_s: float = 2.0,
    ) -> None:
        self.requests = endpoint_list(requests)
        self.responses = endpoint_list(responses)
        for endpoint in (*self.requests, *self.responses):
            if (endpoint.startswith("dns://") and not _DNS.match(endpoint)) or (
                    endpoint.startswith("srv://") and not _SRV.match(endpoint)):
                raise ValueError(f"{endpoint!r}: expected dns://NAME:PORT or srv://NAME")
        self.timeout_s = timeout_s
        if nameservers is None:
            self._resolver = dns.resolver.Resolver(configure=True)
        else:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
        self._resolver.port = port
        self._resolver.lifetime = timeout_s
        self._resolver.cache = None  # every reading asks the server: it is the point
        self._deadline = 0.0

    def __repr__(self) -> str:
        return (f"<DnsMembership requests={self.requests} responses={self.responses} "
                f"nameservers={self._resolver.nameservers}>")

    def members(self) -> Members:
        """Resolve every name now.

        Raises:
            MembershipError: a name does not exist, has no records, or the servers did not
                answer within ``timeout_s`` (the error names the endpoint).
        """
        self._deadline = time.monotonic() + self.timeout_s
        return Members(self._resolve_all(self.requests), self._resolve_all(self.responses))

    def _resolve_all(self, endpoints: list[str]) -> list[str]:
        resolved: list[str] = []
        for endpoint in endpoints:
            resolved += self.resolve(endpoint)
        return resolved

    def resolve(self, endpoint: str) -> list[str]:
        """The ZeroMQ endpoints one endpoint stands for now (itself if it is not DNS).

        Raises:
            MembershipError: as for :meth:`members`.
        """
        if self._deadline < time.monotonic():  # called alone, not from members()
            self._deadline = time.monotonic() + self.timeout_s
        match = _DNS.match(endpoint)
        if match is not None:
            port = int(match.group("port"))
            return [_tcp(address, port) for address in self._addresses(match.group("name"),
                                                                         endpoint)]
        match = _SRV.match(endpoint)
        if match is None:
            return [endpoint]
        found: list[str] = []
        for record in self._query(match.group("name"), "SRV", endpoint):
            target = record.target.to_text(omit_final_dot=True)
            found += [_tcp(address, record.port)
                      for address in self._addresses(target, endpoint)]
        return found

    def _addresses(self, name: str, endpoint: str) -> list[str]:
        # NXDOMAIN and timeouts hold for both families: only "no records" asks the other.
        addresses: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                addresses += [r.to_text() for r in self._query(name, rdtype, endpoint)]
            except _NoRecords:
                pass
        if not addresses:
            raise MembershipError(endpoint, f"{name} has no A or AAAA records")
        return addresses

    def _query(self, name: str, rdtype: str, endpoint: str) -> dns.resolver.Answer:
        left = self._deadline - time.monotonic()
        timed_out = MembershipError(endpoint, f"no answer for {name} {rdtype} within "
                                              f"{self.timeout_s}s from "
                                              f"{', '.join(map(str, self._resolver.nameservers))}")
        if left <= 0:
            raise timed_out
        try:
            return self._resolver.resolve(dns.name.from_text(name), rdtype, search=False,
                                          lifetime=left)
        except dns.resolver.NXDOMAIN as exc:
            raise MembershipError(endpoint, f"no such name {name}") from exc
        except dns.resolver.NoAnswer as exc:
            raise _NoRecords(endpoint, f"{name} has no {rdtype} records") from exc
        except dns.exception.Timeout as exc:
            raise timed_out from exc
        except dns.exception.DNSException as exc:  # NoNameservers (SERVFAIL, REFUSED), ...
            raise MembershipError(endpoint, f"{name} {rdtype}: {exc}") from exc
