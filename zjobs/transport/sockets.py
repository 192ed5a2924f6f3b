"""Small helpers shared by everything that owns a ZeroMQ socket: bind, connect, options,
a processor's pair of bound sockets (:class:`ProcessorSockets`), and what every sender
and receiver has in common (:class:`SocketPeer`).

Errors name the endpoint; wildcard binds report the endpoint actually bound.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket as _os_socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import zmq

from zjobs.core.options import DEFAULT_MAX_MESSAGE_SIZE, Keepalive
from zjobs.errors import BindError, ClosedError, ConnectError
from zjobs.transport.keepalive import apply_keepalive
from zjobs.transport.reconnect import Reconnect
from zjobs.transport.watch import DisconnectWatch

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_RCVHWM",
    "DNS_SCHEMES",
    "ClientSecurity",
    "ProcessorSockets",
    "ServerSecurity",
    "SocketPeer",
    "bind",
    "change_endpoints",
    "check_resolvable",
    "connect",
    "connectable",
    "endpoint_list",
    "endpoint_problem",
    "is_dns_endpoint",
    "recv_multipart",
    "send_multipart",
]

DEFAULT_RCVHWM = 10_000
"""Responses a receiver holds unread per connection before its publisher drops for it.

That bounds a stalled receiver's memory: measured 11 to 16 MiB for 10,000 small responses
queued (libzmq's message and allocation overhead, about 1.1 to 1.6 KiB each), per processor
connected, plus the responses' own size beyond a few hundred bytes; what the publisher
dropped meanwhile is counted from ``seq`` gaps (``ZmqReceiver.gaps``)."""


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


def recv_multipart(socket: zmq.Socket[bytes], *, block: bool = True) -> list[bytes]:
    """Receive one message as a list of bytes, like ``Socket.recv_multipart`` at less cost
    per frame (pyzmq's version asks the socket for ``RCVMORE`` after each frame, through
    its option table; a frame received as a ``zmq.Frame`` already knows).

    Raises:
        zmq.Again: ``block`` is False and no message is queued (a multipart message is
            delivered whole, so this only happens before its first frame).
    """
    flags = 0 if block else _NOBLOCK
    recv = socket.recv
    frame = recv(flags, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = recv(flags, copy=False)
        frames.append(frame.bytes)
    return frames


def endpoint_list(endpoints: str | Iterable[str] | None) -> list[str]:
    """One endpoint or many, as a list."""
    if endpoints is None:
        return []
    if isinstance(endpoints, str):
        return [endpoints]
    return list(endpoints)


_TCP_ADDRESS = re.compile(r"^tcp://(?:[^;]*;)?(?P<host>\[[^\]]*\]|[^:\[\]/;]*):(?P<port>[^:/\]]*)$")
_PORT_MAX = 65535


def endpoint_problem(endpoint: str) -> str | None:
    """What is wrong with an endpoint that libzmq would misread, or None.

    libzmq takes ``localhost:5555`` for nothing useful ("Invalid argument") and binds a
    port beyond 65535 as that number modulo 65536, so both are refused here, naming the fix.
    """
    if "://" not in endpoint:
        hint = f" (did you mean tcp://{endpoint}?)" if re.fullmatch(r"[^:/]+:\d+", endpoint) \
            else ""
        return f"not an endpoint: write TRANSPORT://ADDRESS, such as tcp://HOST:PORT{hint}"
    tcp = _TCP_ADDRESS.match(endpoint)
    if tcp is not None and re.fullmatch(r"[+-]?\d+", tcp.group("port")):
        port = int(tcp.group("port"))
        if not 0 <= port <= _PORT_MAX:
            return f"port {tcp.group('port')} is out of range (0 to {_PORT_MAX})"
    return None


def check_resolvable(endpoint: str) -> None:
    """Raise :class:`ConnectError` at once when a tcp endpoint's host name does not resolve.

    libzmq resolves in the background and retries forever, so a misspelt host otherwise
    shows only as a timeout. IP addresses and wildcards are not looked up; names in the
    reserved ``.invalid`` domain fail without asking any resolver (RFC 6761); other names
    go to the system resolver (``/etc/hosts`` first, as configured).
    """
    tcp = _TCP_ADDRESS.match(endpoint)
    if tcp is None:
        return
    host = tcp.group("host").strip("[]")
    if host in ("", "*"):
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    reason = f"cannot resolve host {host!r}"
    if host.rstrip(".").lower().endswith(".invalid") or host.lower() == "invalid":
        raise ConnectError(endpoint, f"{reason} (the .invalid domain never resolves)")
    try:
        _os_socket.getaddrinfo(host, None, type=_os_socket.SOCK_STREAM)
    except (_os_socket.gaierror, UnicodeError) as exc:
        raise ConnectError(endpoint, f"{reason}: {exc}") from exc


def bind(socket: zmq.Socket[bytes], endpoint: str) -> str:
    """Bind ``endpoint`` and return the endpoint actually bound (wildcards resolved).

    An ``ipc://`` path where another socket still accepts connections is refused as in
    use, as a tcp port would be: libzmq would silently take the path over, leaving the
    other process unreachable to new peers. A file left by a process that died is reused.

    Raises:
        BindError: naming the endpoint and the reason (in use, malformed, a port out of
            range, not permitted).
    """
    problem = endpoint_problem(endpoint)
    if problem is not None:
        raise BindError(endpoint, problem)
    if endpoint.startswith("ipc://") and _ipc_held(endpoint[len("ipc://"):]):
        raise BindError(endpoint, "address already in use (another socket listens there)")
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as exc:
        reason = "address already in use" if exc.errno == zmq.EADDRINUSE else exc.strerror
        raise BindError(endpoint, reason) from exc
    last = socket.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) and last else endpoint


_IPC_PROBES = 10  # a socket being closed (close is asynchronous) stops listening within ms
_IPC_PROBE_INTERVAL_S = 0.02


def _ipc_held(path: str) -> bool:
    """True when something accepts connections on the unix socket at ``path``."""
    if not path or path == "*" or path.startswith("@"):
        return False  # a wildcard, or Linux's abstract namespace (libzmq refuses those itself)
    for attempt in range(_IPC_PROBES):
        if attempt:
            time.sleep(_IPC_PROBE_INTERVAL_S)
        with _os_socket.socket(_os_socket.AF_UNIX, _os_socket.SOCK_STREAM) as probe:
            probe.setblocking(False)
            try:
                probe.connect(path)
            except BlockingIOError:
                pass  # its backlog is full: it listens
            except OSError:
                return False  # no such file, or nobody listens (a stale file): free
        # Connected (or queued): someone listens; it may be a socket closing right now.
    return True


def connect(socket: zmq.Socket[bytes], endpoint: str) -> None:
    """Connect to ``endpoint``; raise :class:`ConnectError` naming it when it is malformed
    (see :func:`endpoint_problem`) or libzmq refuses it."""
    problem = endpoint_problem(endpoint)
    if problem is not None:
        raise ConnectError(endpoint, problem)
    try:
        socket.connect(endpoint)
    except zmq.ZMQError as exc:
        raise ConnectError(endpoint, exc.strerror) from exc


DNS_SCHEMES = ("dns://", "srv://")
"""Endpoint schemes that name processors by DNS (:class:`~zjobs.transport.dns.DnsMembership`
resolves them); ZeroMQ itself does not know them."""


def is_dns_endpoint(endpoint: str) -> bool:
    """True for ``dns://NAME:PORT`` and ``srv://NAME`` (endpoints to resolve first)."""
    return endpoint.startswith(DNS_SCHEMES)


_ANY_HOST = re.compile(r"^tcp://(0\.0\.0\.0|\*|\[::\]|\[\*\])(:\d+)$")


def connectable(endpoint: str) -> str:
    """The endpoint a local peer connects to: a wildcard host becomes loopback."""
    match = _ANY_HOST.match(endpoint)
    if match is None:
        return endpoint
    host = "[::1]" if match.group(1).startswith("[") else "127.0.0.1"
    return f"tcp://{host}{match.group(2)}"


class ProcessorSockets:
    """A processor's two bound sockets: PULL for requests and PUB for responses.

    Both get the options, keepalive and server security, then are bound (PULL first). If
    anything fails, both are closed before the error propagates. A
    :class:`~zjobs.transport.watch.DisconnectWatch` counts the senders' connections that
    close on the PULL socket (``sender_disconnects``), the only trace libzmq leaves of a
    request frame larger than ``max_message_size``.

    Args:
        context: the zmq context to create the sockets in.
        requests: endpoint to bind the PULL socket on.
        responses: endpoint to bind the PUB socket on.
        max_message_size: ZMQ_MAXMSGSIZE of the PULL socket.
        linger_ms: linger of the PUB socket (the PULL socket's is 0).
        rcvhwm: receive high-water mark of the PULL socket.
        sndhwm: send high-water mark of the PUB socket.
        keepalive: TCP keepalive on both sockets (ZMTP heartbeats, if asked for, on the PUB
            only); None: the kernel's defaults.
        security: server-side security for both sockets.
        pull_class: the PULL socket's class (e.g. ``zmq.asyncio.Socket``); None: the
            context's own.
        pub_class: the PUB socket's class; None: the context's own.

    Raises:
        BindError: an endpoint could not be bound (the error names it).
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        requests: str,
        responses: str,
        *,
        max_message_size: int,
        linger_ms: int,
        rcvhwm: int,
        sndhwm: int,
        keepalive: Keepalive | None,
        security: ServerSecurity | None,
        pull_class: type[zmq.Socket[Any]] | None = None,
        pub_class: type[zmq.Socket[Any]] | None = None,
    ) -> None:
        self._security = security
        self.pull: zmq.Socket[Any] | None = None
        self.pub: zmq.Socket[Any] | None = None
        self._watch: DisconnectWatch | None = None
        try:
            self.pull = _socket(context, zmq.PULL, pull_class)
            # XPUB: a PUB that also tells who subscribed (see transport/publisher.py).
            self.pub = _socket(context, zmq.XPUB, pub_class)
            self.pull.linger = 0
            self.pull.rcvhwm = rcvhwm
            self.pull.maxmsgsize = max_message_size
            self.pub.linger = linger_ms
            self.pub.sndhwm = sndhwm
            apply_keepalive(self.pull, keepalive)
            apply_keepalive(self.pub, keepalive)
            if security is not None:
                security.configure_server(self.pull)
                security.configure_server(self.pub)
            self.requests = bind(self.pull, requests)
            """The request endpoint bound (wildcards resolved)."""
            self.responses = bind(self.pub, responses)
            """The response endpoint bound (wildcards resolved)."""
            self._watch = DisconnectWatch(self.pull, self.requests, max_message_size)
        except BaseException:
            self.close()
            raise

    @property
    def sender_disconnects(self) -> int:
        """Sender connections closed on the request socket so far (see the class doc)."""
        return self._watch.disconnects if self._watch is not None else 0

    def close(self) -> None:
        """Close both sockets, then call the security's ``release_server(socket)`` for each
        if it has one. Idempotent."""
        release = getattr(self._security, "release_server", None)
        if self._watch is not None:
            self._watch.close()
        for sock in (self.pull, self.pub):
            if sock is not None:
                sock.close()
                if release is not None:
                    release(sock)  # after close: no handshake outlives the authenticator
        self.pull = self.pub = None


def _socket(context: zmq.Context[Any], kind: int,
            socket_class: type[zmq.Socket[Any]] | None) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = (context.socket(kind) if socket_class is None
                             else context.socket(kind, socket_class=socket_class))
    return sock


S = TypeVar("S", bound="zmq.Socket[Any]")

_SETTLE_ROUNDS = 5  # ms after a disconnect for libzmq's socket to drop the pipe (see below)


def push_options(socket: zmq.Socket[Any], *, linger_ms: int, sndhwm: int, immediate: bool,
                 send_timeout_s: float | None) -> None:
    """The options of a sender's PUSH socket (before it connects)."""
    socket.linger = linger_ms
    socket.sndhwm = sndhwm
    socket.immediate = immediate
    if send_timeout_s is not None:
        socket.sndtimeo = max(0, int(send_timeout_s * 1000))


def sub_options(socket: zmq.Socket[Any], *, rcvhwm: int) -> None:
    """The options of a receiver's SUB socket (before it connects)."""
    socket.linger = 0
    socket.rcvhwm = rcvhwm


class Connecting(Protocol):
    """What connects to a changing set of endpoints (a socket peer, a routed sender)."""

    @property
    def endpoints(self) -> list[str]:
        """The endpoints connected now."""
        ...

    def connect(self, endpoint: str) -> None:
        """Add one."""
        ...

    def disconnect(self, endpoint: str) -> None:
        """Drop one."""
        ...


def change_endpoints(peer: Connecting, wanted: Iterable[str]) -> None:
    """Connect ``peer`` to the endpoints in ``wanted`` it lacks, and disconnect the others."""
    wanted = list(wanted)
    for endpoint in wanted:
        if endpoint not in peer.endpoints:
            peer.connect(endpoint)
    for endpoint in [e for e in peer.endpoints if e not in wanted]:
        peer.disconnect(endpoint)


class SocketPeer(Generic[S]):
    """What every sender and receiver (sync or asyncio) has in common: one socket that
    connects to processors' endpoints.

    It lists the endpoints connected, serializes connecting and closing with a lock, raises
    :class:`~zjobs.errors.ClosedError` once closed, and closes when a ``with`` block ends.
    A subclass sets ``_role`` (named in that error), sets its socket's options and connects
    its first endpoints in its constructor (closing itself if that fails), and adds the
    sending or receiving.
    """

    _role: ClassVar[str] = "socket"

    def __init__(self, socket: S) -> None:
        self.endpoints: list[str] = []
        self._lock = threading.Lock()
        self._socket: S | None = socket
        self._closing = False  # set before close() waits for the lock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._socket is None

    def _live(self) -> S:
        if self._socket is None:
            raise ClosedError(f"{self._role} is closed")
        return self._socket

    def _setup(self, endpoints: str | Iterable[str] | None, options: Callable[[S], None], *,
               keepalive: Keepalive | None, reconnect: Reconnect | None,
               security: ClientSecurity | None) -> None:
        """A constructor's last step: apply ``options`` to the socket, then keepalive,
        reconnect and security, then connect ``endpoints``; if any of it fails, close and
        re-raise."""
        sock = self._live()
        try:
            options(sock)
            apply_keepalive(sock, keepalive)
            if reconnect is not None:
                reconnect.apply(sock)
            if security is not None:
                security.configure_client(sock)
            for endpoint in endpoint_list(endpoints):
                self.connect(endpoint)
        except BaseException:
            self.close()
            raise

    def connect(self, endpoint: str) -> None:
        """Connect to one more processor's endpoint.

        Raises:
            ConnectError: libzmq refused the endpoint (the error names it).
            ClosedError: already closed.
        """
        with self._lock:
            connect(self._live(), endpoint)
            self.endpoints.append(endpoint)

    def disconnect(self, endpoint: str) -> None:
        """Stop using one processor's endpoint (a membership change): no new messages go
        there, and its connection is dropped once what is queued for it has left (up to
        the socket's linger). An endpoint not connected is ignored.

        Raises:
            ClosedError: already closed.
        """
        with self._lock:
            sock = self._live()
            if endpoint not in self.endpoints:
                return
            try:
                sock.disconnect(endpoint)
            except zmq.ZMQError as exc:
                if exc.errno != errno.ENOENT:  # already gone inside libzmq: the same outcome
                    raise ConnectError(endpoint, exc.strerror) from exc
            # libzmq drops the connection's pipe from the socket's round-robin only once the
            # socket handles the I/O thread's "pipe terminated" command; until then a PUSH
            # keeps handing every Nth message to the dying pipe, which loses it (measured:
            # 75 of 200 sends right after disconnect). Sends wait on this lock meanwhile, and
            # ZMQ_EVENTS makes the socket handle its pending commands (0 of 200 lost after 1 ms).
            for _ in range(_SETTLE_ROUNDS):
                time.sleep(0.001)
                sock.getsockopt(zmq.EVENTS)
            self.endpoints.remove(endpoint)

    def _raise_if_unusable(self, exc: zmq.ZMQError) -> None:
        """Raise :class:`ClosedError` from ``exc`` if no retry can cure it (the context was
        terminated, the socket closed under us), after closing the socket, so that callers
        stop instead of looping; return for any other error. Call it with the lock held,
        or from the one thread that uses this socket."""
        if exc.errno not in (zmq.ETERM, zmq.ENOTSOCK) and self._socket is not None:
            return
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()  # lets a zmq_ctx_term that is waiting for this socket finish
        reason = "its zmq context was terminated" if exc.errno == zmq.ETERM else "it was closed"
        raise ClosedError(f"{self._role} is closed: {reason}") from exc

    def close(self, *, linger_ms: int | None = None) -> None:
        """Close the socket; idempotent. Queued messages get the socket's linger time
        (or ``linger_ms``: 0 discards them) to leave; pending asyncio sends and receives
        end."""
        self._closing = True
        with self._lock:
            if self._socket is not None:
                self._socket.close(linger=linger_ms)
                self._socket = None
