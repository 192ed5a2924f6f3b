"""``zjobs dashboard``: a web page of every processor, live, from its heartbeats.

A :class:`Dashboard` serves two things over HTTP (:class:`~zjobs.transport.http.HttpServer`,
the standard library's server in a thread): ``/``, one self-contained page
(``dashboard.html``: no scripts or fonts from elsewhere, the plots are inline SVG), and
``/api/state``, the :class:`~zjobs.cli.watch.Watch` rows with their history as JSON,
which the page polls every second. The thread that polls the watch publishes each state
with :meth:`Dashboard.update`; the HTTP threads only hand out the latest one.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from importlib.resources import files
from typing import Any

from zjobs.cli.watch import Watch
from zjobs.transport.http import HttpServer

__all__ = ["Dashboard", "dashboard_state"]


def dashboard_state(watch: Watch) -> dict[str, Any]:
    """What the page shows: every row, each with its recent history."""
    processors = []
    for row in watch.rows():
        item = row.as_json()
        history = watch.history(row.instance) if row.instance else None
        item["history"] = history.as_json() if history is not None else None
        processors.append(item)
    return {"time_ms": time.time_ns() // 1_000_000, "heartbeats": watch.monitor.heartbeats,
            "problems": watch.problems(), "processors": processors}


class Dashboard:
    """Serves the dashboard page and the latest state given to :meth:`update`.

    Args:
        address: ``HOST:PORT`` to listen on (port 0 picks one, see :attr:`url`).

    Raises:
        ValueError: a malformed address.
        BindError: the address cannot be bound.
    """

    def __init__(self, address: str = "127.0.0.1:8765") -> None:
        page = files("zjobs.cli").joinpath("dashboard.html").read_bytes()
        self._state = b'{"processors": []}'
        self._lock = threading.Lock()
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(page, "text/html; charset=utf-8")
                elif path == "/api/state":
                    with dashboard._lock:
                        body = dashboard._state
                    self._send(body, "application/json")
                else:
                    self.send_error(404)

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per poll would drown the terminal

        self._http = HttpServer(address, Handler, name="dashboard")
        self.url = self._http.url("/")
        """The page's address."""

    def __repr__(self) -> str:
        return f"<Dashboard {self.url}>"

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, watch: Watch) -> None:
        """Publish what ``watch`` knows now (call from the thread that polls it)."""
        body = json.dumps(dashboard_state(watch)).encode()
        with self._lock:
            self._state = body

    def close(self) -> None:
        """Stop serving; idempotent."""
        self._http.close()
