"""ZAP authentication of CURVE clients: one pyzmq ``ThreadAuthenticator`` per zmq context,
shared by every CURVE server socket of that context, each server with its own key set.

Why ZAP domains: libzmq hands every CURVE handshake of a context to the single ZAP
handler bound at ``inproc://zeromq.zap.01`` in that context; a second authenticator
cannot even bind. Two processors with different allow lists in the same (default)
context would therefore share one list. Instead each :class:`~zjobs.transport.security.CurveServer`
puts its sockets in a ZAP domain of its own (``socket.zap_domain``), and the one shared
authenticator checks the client key against that domain's set, through pyzmq's public
per-domain credentials callback (``Authenticator.configure_curve_callback``). Allow-any
servers register a domain too, so they keep admitting every client when another server
starts the authenticator in their context.

The alternative, a private context per secured processor, was rejected: it breaks
``inproc://`` endpoints and the caller's choice of context, and two processors given the
same context would still collide.

The authenticator is reference-counted: it starts with the first domain registered in
a context and its thread (pyzmq's ``AuthenticationThread``) stops when the last one is
released. pyzmq has no call to remove a domain's callback, so every domain is registered
with one shared :class:`_Policies` callback that looks the domain up: a released domain
denies, and the authenticator keeps one small entry per domain it has seen until it stops.
Server sockets also set ``ZMQ_ZAP_ENFORCE_DOMAIN``: without it libzmq admits every CURVE
client when no handler is bound (fail open); with it, no handler means no client.

This module keeps the registry of running authenticators in a module global, because
the state it mirrors (the ZAP endpoint) is itself global to each zmq context.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import zmq

from zjobs.errors import BindError

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

__all__ = ["ZAP_ENDPOINT", "acquire", "release", "running_domains"]

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
"""Where libzmq looks for a context's ZAP handler (RFC 27)."""

_REBIND_S = 2.0  # how long a just-released ZAP endpoint may take to become free
_MAX_REPORTED = 1000  # denied keys remembered per domain, so reconnect storms log once


class _Policy:
    """Who may connect in one ZAP domain: a set of Z85 public keys, or anyone (None)."""

    def __init__(self, domain: str, keys: frozenset[bytes] | None) -> None:
        self.domain = domain
        self.keys = keys
        self._reported: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        """Is the Z85 client ``key`` allowed (logging a refusal once per key)?"""
        if self.keys is None or key in self.keys:
            log.debug("ZAP domain %s: admitted client key %s", domain, key.decode())
            return True
        if key in self._reported or len(self._reported) >= _MAX_REPORTED:
            log.debug("ZAP domain %s: refused client key %s", domain, key.decode())
        else:
            self._reported.add(key)
            log.warning("refused a CURVE client whose public key %s is not allowed",
                        key.decode())
        return False


class _Policies:
    """The per-domain policies of one authenticator: the credentials callback registered
    for every domain, read by the authenticator thread.

    A domain released while one of its handshakes is still queued is looked up after
    removal; it then denies.
    """

    def __init__(self) -> None:
        self.by_domain: dict[str, _Policy] = {}

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials-provider hook: is the Z85 client ``key`` allowed in ``domain``?"""
        policy = self.by_domain.get(domain)
        return policy is not None and policy.callback(domain, key)


class _Shared:
    """The authenticator of one context and the domains registered with it."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.policies = _Policies()
        self.users: dict[str, int] = {}
        self.auth = self._start(context)

    def _start(self, context: zmq.Context[zmq.Socket[bytes]]) -> ThreadAuthenticator:
        from zmq.auth.thread import ThreadAuthenticator  # imports asyncio: only when needed

        # libzmq frees an inproc name only once the closed socket is reaped, so the
        # endpoint of an authenticator stopped a moment ago may still look taken: retry
        # briefly before calling it a foreign handler.
        deadline = time.monotonic() + _REBIND_S
        while True:
            auth = ThreadAuthenticator(context, log=log.getChild("pyzmq"))
            try:
                auth.start()
                return auth
            except zmq.ZMQError as exc:
                auth.stop()  # closes the ZAP socket created before the failed bind
                if exc.errno == zmq.EADDRINUSE and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                reason = ("another ZAP authenticator already runs in this zmq context"
                          if exc.errno == zmq.EADDRINUSE else exc.strerror)
                raise BindError(ZAP_ENDPOINT, reason) from exc

    def register(self, domain: str, keys: frozenset[bytes] | None) -> None:
        """Admit ``keys`` (None: any key) in ``domain``."""
        self.policies.by_domain[domain] = _Policy(domain, keys)
        self.auth.configure_curve_callback(domain, credentials_provider=self.policies)

    def stop(self) -> None:
        self.auth.stop()


_lock = threading.Lock()
# Keyed by the libzmq context's address: zmq.asyncio.Context(shadow=...) and the plain
# Context it shadows are two Python objects over one ZAP endpoint.
_running: dict[int, _Shared] = {}


def acquire(context: zmq.Context[zmq.Socket[bytes]], domain: str,
            keys: frozenset[bytes] | None) -> None:
    """Register one user of ``domain`` in ``context``, starting its authenticator if needed.

    Args:
        context: the context of the server socket.
        domain: the socket's ZAP domain.
        keys: the Z85 public keys admitted in that domain; None admits every key.

    Raises:
        BindError: a foreign ZAP handler already occupies the context.
    """
    with _lock:
        shared = _running.get(context.underlying)
        if shared is None:
            shared = _running[context.underlying] = _Shared(context)
        if domain not in shared.users:
            shared.register(domain, keys)
        shared.users[domain] = shared.users.get(domain, 0) + 1


def release(context: zmq.Context[zmq.Socket[bytes]], domain: str) -> None:
    """Undo one :func:`acquire`; the last release in a context stops its authenticator."""
    with _lock:
        shared = _running.get(context.underlying)
        if shared is None or domain not in shared.users:
            return
        shared.users[domain] -= 1
        if shared.users[domain] > 0:
            return
        del shared.users[domain]
        shared.policies.by_domain.pop(domain, None)
        if not shared.users:
            del _running[context.underlying]
            shared.stop()


def running_domains(context: zmq.Context[zmq.Socket[bytes]]) -> frozenset[str]:
    """The domains registered in ``context`` (empty when no authenticator runs there)."""
    with _lock:
        shared = _running.get(context.underlying)
        return frozenset(shared.users) if shared is not None else frozenset()
