"""Small helpers shared by everything that owns a ZeroMQ socket: bind, connect, options.

Errors name the endpoint; wildcard binds report the endpoint actually bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

import zmq

from zjobs.errors import BindError, ConnectError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ClientSecurity",
    "ServerSecurity",
    "bind",
    "connect",
    "connectable",
    "endpoint_list",
    "send_multipart",
]

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""Largest frame a processor accepts (ZMQ_MAXMSGSIZE); a peer sending more is disconnected."""


class ServerSecurity(Protocol):
    """Configures a binding socket (processor side) before it binds, e.g. as a CURVE server.

    An implementation that acquires something per socket (``CurveServer`` starts a ZAP
    authenticator) may also define ``release_server(socket)``; processors call it after
    closing each socket.
    """

    def configure_server(self, socket: zmq.Socket[bytes]) -> None:
        """Set the socket's security options."""
        ...


class ClientSecurity(Protocol):
    """Configures a connecting socket (client side) before it connects, e.g. as a CURVE client."""

    def configure_client(self, socket: zmq.Socket[bytes]) -> None:
        """Set the socket's security options."""
        ...


_MORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)


def send_multipart(socket: zmq.Socket[bytes], frames: list[bytes], *,
                   block: bool = True) -> None:
    """Send ``frames`` as one message, like ``Socket.send_multipart`` at less cost per frame.

    pyzmq's version checks every frame's type and combines ``enum.Flag`` values per frame;
    on the hot path the frames are known to be bytes, so plain int flags do.

    Raises:
        zmq.Again: ``block`` is False and the message cannot be queued now (nothing was sent:
            libzmq queues a multipart message atomically, so the first frame fails).
    """
    flags = 0 if block else _NOBLOCK
    send = socket.send
    for frame in frames[:-1]:
        send(frame, flags | _MORE)
    send(frames[-1], flags)


def endpoint_list(endpoints: str | Iterable[str] | None) -> list[str]:
    """One endpoint or many, as a list."""
    if endpoints is None:
        return []
    if isinstance(endpoints, str):
        return [endpoints]
    return list(endpoints)


def bind(socket: zmq.Socket[bytes], endpoint: str) -> str:
    """Bind ``endpoint`` and return the endpoint actually bound (wildcards resolved).

    Raises:
        BindError: naming the endpoint and the reason (in use, malformed, not permitted).
    """
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as exc:
        reason = "address already in use" if exc.errno == zmq.EADDRINUSE else exc.strerror
        raise BindError(endpoint, reason) from exc
    last = socket.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) and last else endpoint


def connect(socket: zmq.Socket[bytes], endpoint: str) -> None:
    """Connect to ``endpoint``; raise :class:`ConnectError` naming it when libzmq refuses."""
    try:
        socket.connect(endpoint)
    except zmq.ZMQError as exc:
        raise ConnectError(endpoint, exc.strerror) from exc


_ANY_HOST = re.compile(r"^tcp://(0\.0\.0\.0|\*|\[::\]|\[\*\])(:\d+)$")


def connectable(endpoint: str) -> str:
    """The endpoint a local peer connects to: a wildcard host becomes loopback."""
    match = _ANY_HOST.match(endpoint)
    if match is None:
        return endpoint
    host = "[::1]" if match.group(1).startswith("[") else "127.0.0.1"
    return f"tcp://{host}{match.group(2)}"
