"""The publishing side of a processor: sequence numbers on every message, and heartbeats.

A :class:`Publisher` wraps a processor's PUB socket. :meth:`Publisher.publish` adds the
next ``"seq"`` to each message's header; a background thread publishes a
:class:`~zjobs.wire.heartbeat.Heartbeat` every interval, also while a long job runs, so that
receivers can tell a busy processor from a dead one. Both share the socket under a lock
(ZeroMQ sockets may change threads behind a full memory barrier), so the numbers leave
in order.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping

import zmq

from zjobs.transport.sockets import send_multipart
from zjobs.wire.heartbeat import RUNNING, STOPPED, Heartbeat, with_seq

__all__ = ["Publisher"]

log = logging.getLogger(__name__)


_FAULTS = frozenset(getattr(signal, name) for name in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL")
                   if hasattr(signal, name))


def _keep_signals_away() -> None:
    # Process signals (SIGTERM, SIGINT...) must reach the thread that serves: a processor
    # run() in the main thread waits in zmq_poll, which only a signal delivered to that
    # thread interrupts. libzmq blocks them in its own threads for the same reason.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.valid_signals()) - _FAULTS)


class Publisher:
    """Numbers and publishes a processor's messages, and sends its heartbeats.

    It does not own the socket: close the socket after :meth:`close`.

    Args:
        socket: the processor's bound PUB socket.
        name: the processor name (in heartbeats).
        instance: the processor run's id (in heartbeats).
        heartbeat_interval_s: seconds between heartbeats; None sends none (messages are
            still numbered).
        counters: returns the counters to put in each heartbeat.
    """

    def __init__(
        self,
        socket: zmq.Socket[bytes],
        *,
        name: str,
        instance: str,
        heartbeat_interval_s: float | None = 1.0,
        counters: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        if heartbeat_interval_s is not None and heartbeat_interval_s <= 0:
            raise ValueError("heartbeat_interval_s must be positive (or None)")
        self.socket = socket
        self.name = name
        self.instance = instance
        self.heartbeat_interval_s = heartbeat_interval_s
        self.seq = 0
        """The sequence number of the last message published."""
        self._counters = counters
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        every = (f"every {self.heartbeat_interval_s}s" if self.heartbeat_interval_s
                 else "no heartbeats")
        return f"<Publisher {self.name!r} seq={self.seq} {every}>"

    def publish(self, frames: list[bytes]) -> None:
        """Publish one message (topic, header, body...) with the next sequence number."""
        with self._lock:
            if self._closed:
                return
            self.seq = seq = self.seq + 1
            # PUB never blocks: at a subscriber's high-water mark the message is dropped
            # for that subscriber (which sees a gap in the numbers).
            send_multipart(self.socket, with_seq(frames, seq), block=False)

    def heartbeat(self, state: str = RUNNING) -> None:
        """Publish a heartbeat now."""
        interval_s = self.heartbeat_interval_s or 0.0
        beat = Heartbeat(self.name, self.instance, max(1, round(interval_s * 1000)), state,
                         self._counters())
        self.publish(beat.to_frames())

    def start(self) -> None:
        """Publish a first heartbeat and keep publishing one every interval in a thread."""
        if self.heartbeat_interval_s is None or self._thread is not None:
            return
        self.heartbeat()
        self._thread = threading.Thread(target=self._beat, name=f"zjobs-heartbeat-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        _keep_signals_away()
        interval = self.heartbeat_interval_s
        assert interval is not None
        while not self._stop.wait(interval):
            try:
                self.heartbeat()
            except Exception:  # a heartbeat must never take the processor down
                log.exception("processor %s: heartbeat failed", self.name)

    def close(self) -> None:
        """Stop the heartbeats; if they were on, publish a last one saying "stopped".

        Idempotent. Messages published afterwards are discarded.
        """
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
            self.heartbeat(STOPPED)
        with self._lock:
            self._closed = True
