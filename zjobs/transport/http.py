"""Small HTTP servers in a background thread (the standard library's ``http.server``): a
processor's Prometheus endpoint and ``zjobs dashboard`` serve through :class:`HttpServer`.

Bind errors name the address, like the ZeroMQ ones; :meth:`HttpServer.close` stops the
thread and releases the port.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from zjobs.errors import BindError

__all__ = ["HttpServer", "parse_address"]


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6; port 0 picks a free one) as (host, port).

    Raises:
        ValueError: not HOST:PORT with a port from 0 to 65535.
    """
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {address!r} is not HOST:PORT "
                         "(e.g. 127.0.0.1:9100, or 0.0.0.0:9100 for every interface)")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never holds up close()


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpServer:
    """Serves HTTP with ``handler`` in a thread until closed.

    Args:
        address: ``HOST:PORT`` to listen on; port 0 picks one (see :attr:`address`).
        handler: the request handler class.
        name: names the thread (``zjobs-http-NAME``).

    Raises:
        ValueError: a malformed address.
        BindError: the address cannot be bound (it names it).
    """

    def __init__(self, address: str, handler: type[BaseHTTPRequestHandler], *,
                 name: str) -> None:
        host, port = parse_address(address)
        kind = _Server6 if ":" in host else _Server
        try:
            self._server: ThreadingHTTPServer | None = kind((host, port), handler)
        except OSError as exc:
            raise BindError(f"http://{address}", exc.strerror or str(exc)) from exc
        bound = self._server.server_address[1]
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        """Where it listens, the port resolved."""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"zjobs-http-{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._server is None else "serving"
        return f"<HttpServer http://{self.address}/ {state}>"

    def url(self, path: str = "/") -> str:
        """The address of a page on this server."""
        return f"http://{self.address}{path}"

    def close(self) -> None:
        """Stop serving and release the port; idempotent."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join()
