"""CurveZMQ for zjobs sockets: :class:`CurveServer` for processors, :class:`CurveClient`
for senders, receivers and clients.

CURVE encrypts and authenticates every frame between two sockets. The server proves it
holds the secret key matching the public key the client was given; with an allow list,
the server admits only clients whose public keys are listed (checked through ZAP, see
:mod:`zjobs.transport.security.zap`), on both the request and the response socket.

Example::

    server = CurveServer("keys/server.key_secret", allow_clients="keys/clients")
    with ZmqProcessor(job, requests="tcp://*:5555", responses="tcp://*:5556",
                      security=server) as processor:
        ...
    client = Client.connect("tcp://host:5555", "tcp://host:5556",
                            security=CurveClient("keys/server.key", "keys/alice.key_secret"))
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Iterable
from typing import Any

import zmq

from zjobs.transport.security import zap
from zjobs.transport.security.keys import (
    KeyPair,
    StrPath,
    check_key,
    load_allowed_keys,
    load_public_key,
)

__all__ = ["CurveClient", "CurveServer"]

log = logging.getLogger(__name__)


def _key_pair(keys: KeyPair | StrPath) -> KeyPair:
    return keys if isinstance(keys, KeyPair) else KeyPair.load(keys)


class CurveServer:
    """Server-side CURVE security for a processor (a
    :class:`~zjobs.transport.sockets.ServerSecurity`).

    A processor applies it to both its sockets, so a client must pass CURVE, and the allow
    list when there is one, to send requests and to receive responses. One instance may
    secure several processors; they then share its allow list.

    Args:
        keys: the server's key pair, or the path of its secret certificate
            (``NAME.key_secret``).
        allow_clients: the clients admitted: a directory whose ``*.key`` certificates hold
            their public keys (read once, here), or an iterable of Z85 public keys. None
            admits any client that knows the server's public key: traffic is encrypted but
            clients are not authenticated.

    Raises:
        KeyFileError: a key file or the key directory is missing or unusable (names it).
        ValueError: a key given as bytes is not a Z85 CURVE key.
    """

    def __init__(self, keys: KeyPair | StrPath, *,
                 allow_clients: StrPath | Iterable[bytes] | None = None) -> None:
        self.keys = _key_pair(keys)
        self.allow_source: str | None = None
        """Where the allowed keys came from (the directory), if from a directory."""
        self.allowed: frozenset[bytes] | None
        """The Z85 public keys admitted; None when any client is."""
        if allow_clients is None:
            self.allowed = None
        elif isinstance(allow_clients, str | os.PathLike):
            self.allow_source = os.fspath(allow_clients)
            self.allowed = load_allowed_keys(allow_clients)
        else:
            self.allowed = frozenset(check_key(key) for key in allow_clients)
        self.domain = f"zjobs-{secrets.token_hex(8)}"
        """The ZAP domain of this server's sockets (unique per instance)."""
        self._held: dict[zmq.Socket[bytes], zmq.Context[zmq.Socket[bytes]]] = {}
        self._lock = threading.Lock()
        self._announced = False

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for child processes (ProcessorProcess); sockets held stay here.
        state = dict(self.__dict__)
        del state["_held"], state["_lock"]
        state["_announced"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._held = {}
        self._lock = threading.Lock()

    @property
    def public_key(self) -> bytes:
        """The server's Z85 public key, which clients need."""
        return self.keys.public

    @property
    def authenticated(self) -> bool:
        """True when only listed client keys are admitted."""
        return self.allowed is not None

    def describe(self) -> str:
        """One line for logs: encrypted, and who may connect."""
        if self.allowed is None:
            return ("CURVE on: encrypted but unauthenticated "
                    "(any client that knows the server public key may connect)")
        source = f" from {self.allow_source}" if self.allow_source else ""
        count = len(self.allowed)
        return f"CURVE on: encrypted, {count} allowed client key{'s' * (count != 1)}{source}"

    def __repr__(self) -> str:
        allowed = "any" if self.allowed is None else len(self.allowed)
        return (f"<CurveServer public={self.public_key.decode()} allowed={allowed} "
                f"sockets={len(self._held)}>")

    def configure_server(self, socket: zmq.Socket[bytes]) -> None:
        """Make ``socket`` a CURVE server in this instance's ZAP domain (before it binds).

        Starts the context's shared authenticator if none runs; :meth:`release_server`
        undoes it once the socket is closed.

        Raises:
            BindError: a ZAP handler not started by zjobs already occupies the context.
        """
        socket.curve_secretkey = self.keys.secret
        socket.curve_publickey = self.keys.public
        socket.curve_server = True
        socket.zap_domain = self.domain.encode()
        try:
            socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        except (AttributeError, zmq.ZMQError):  # libzmq < 4.3: stays safe while ZAP runs
            log.debug("this libzmq cannot enforce ZAP; relying on the authenticator running")
        with self._lock:
            if socket in self._held:
                return
            zap.acquire(socket.context, self.domain, self.allowed)
            self._held[socket] = socket.context
            announce, self._announced = not self._announced, True
        if announce:
            if self.allowed is None:
                log.warning("%s", self.describe())
            else:
                log.info("%s", self.describe())

    def release_server(self, socket: zmq.Socket[bytes]) -> None:
        """Release what :meth:`configure_server` acquired for ``socket``; call it after
        closing the socket (closing first keeps unauthenticated clients out). Idempotent."""
        with self._lock:
            context = self._held.pop(socket, None)
        if context is not None:
            zap.release(context, self.domain)

    def close(self) -> None:
        """Release every socket still held (for sockets configured by hand). Idempotent."""
        with self._lock:
            held = list(self._held.items())
            self._held.clear()
        for _, context in held:
            zap.release(context, self.domain)


class CurveClient:
    """Client-side CURVE security (a :class:`~zjobs.transport.sockets.ClientSecurity`) for senders,
    receivers and clients.

    Args:
        server_key: the server's Z85 public key (bytes), or the path of a certificate that
            holds it (normally the server's ``NAME.key``).
        keys: this client's key pair, or the path of its secret certificate; None makes an
            ephemeral pair, enough for a server without an allow list.

    Raises:
        KeyFileError: a key file is missing or unusable (names it).
        ValueError: a key given as bytes is not a Z85 CURVE key.
    """

    def __init__(self, server_key: bytes | StrPath, keys: KeyPair | StrPath | None = None) -> None:
        if isinstance(server_key, bytes):
            self.server_key = check_key(server_key)
        else:
            self.server_key = load_public_key(server_key)
        self.keys = KeyPair.generate() if keys is None else _key_pair(keys)

    @property
    def public_key(self) -> bytes:
        """This client's Z85 public key (what a server's allow list must contain)."""
        return self.keys.public

    def __repr__(self) -> str:
        return (f"<CurveClient public={self.public_key.decode()} "
                f"server={self.server_key.decode()}>")

    def configure_client(self, socket: zmq.Socket[bytes]) -> None:
        """Make ``socket`` a CURVE client of the server (before it connects)."""
        socket.curve_serverkey = self.server_key
        socket.curve_publickey = self.keys.public
        socket.curve_secretkey = self.keys.secret
