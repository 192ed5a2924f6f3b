"""The publishing side of a processor: sequence numbers on every message, and heartbeats.

A :class:`Publisher` wraps a processor's PUB socket. :meth:`Publisher.publish` adds the
next ``"seq"`` to each message's header; a background thread publishes a
:class:`~zjobs.wire.heartbeat.Heartbeat` every interval, also while a long job runs, so that
receivers can tell a busy processor from a dead one; each heartbeat also says where the
processor runs (host, pid) and its load over the interval since the previous one (requests
in flight, jobs finished, their p50/p99 durations). Both share the socket under a lock
(ZeroMQ sockets may change threads behind a full memory barrier), so the numbers leave
in order.

Publishing waits for the subscriber. On an XPUB socket the publisher reads the
subscriptions and holds a response whose topic nobody has subscribed to yet, for up to
``hold_s``, publishing it as soon as the subscription arrives. A client's request and
response connections reconnect independently (after a processor restarts, or a network
path heals): requests can arrive before the client's subscription does, and a PUB socket
would drop their answers. Held messages are bounded in count and bytes; past the bound or
the time they are published anyway (and lost if still nobody listens), counted in
:attr:`Publisher.unheard`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket as _socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final

import zmq

from zjobs.core.load import LoadSnapshot
from zjobs.transport.sockets import send_multipart
from zjobs.wire.heartbeat import RUNNING, STOPPED, Heartbeat, with_seq

__all__ = ["DEFAULT_HOLD_S", "Publisher"]

DEFAULT_HOLD_S: Final = 5.0
"""How long a response waits for its subscriber to (re)connect before it is published anyway."""
_MAX_HELD: Final = 10_000
_MAX_HELD_BYTES: Final = 64 * 1024 * 1024
_SUBSCRIBE: Final = 1  # first byte of an XPUB subscription message (0: unsubscription)

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
        hold_s: on an XPUB socket, how long a message whose topic nobody subscribed to
            waits for a subscriber (0: never hold).
        load: returns the processor's load (:meth:`zjobs.core.load.LoadMeter.snapshot`);
            each heartbeat carries the difference since the previous one. None sends no load.
    """

    def __init__(
        self,
        socket: zmq.Socket[bytes],
        *,
        name: str,
        instance: str,
        heartbeat_interval_s: float | None = 1.0,
        counters: Callable[[], Mapping[str, int]] = dict,
        hold_s: float = DEFAULT_HOLD_S,
        load: Callable[[], LoadSnapshot] | None = None,
    ) -> None:
        if heartbeat_interval_s is not None and heartbeat_interval_s <= 0:
            raise ValueError("heartbeat_interval_s must be positive (or None)")
        self.socket = socket
        self.name = name
        self.instance = instance
        self.heartbeat_interval_s = heartbeat_interval_s
        self.seq = 0
        """The sequence number of the last message published."""
        self.held = 0
        """Messages that waited for their subscriber (published once it came, or not)."""
        self.unheard = 0
        """Held messages published with still nobody subscribed (after hold_s, or past
        the bound on held messages): lost to a subscriber that never came."""
        self._counters = counters
        self._load = load
        self._host = _socket.gethostname()
        self._last_load = LoadSnapshot()
        self._last_beat = time.monotonic()
        self._lock = threading.Lock()
        self._hold_s = hold_s
        self._xpub = socket.type == zmq.XPUB
        self._subscriptions: set[bytes] = set()
        self._heard: set[bytes] = set()  # topics seen to have a subscriber
        self._waiting: deque[tuple[float, list[bytes], int]] = deque()
        self._waiting_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        every = (f"every {self.heartbeat_interval_s}s" if self.heartbeat_interval_s
                 else "no heartbeats")
        return f"<Publisher {self.name!r} seq={self.seq} {every}>"

    def publish(self, frames: list[bytes]) -> None:
        """Publish one message (topic, header, body...) with the next sequence number;
        hold it first if nobody has subscribed to its topic yet (see the module doc)."""
        with self._lock:
            if self._closed:
                return
            topic = frames[0]
            if (self._xpub and topic not in self._heard and self._hold_s > 0
                    and topic[:1] != b"\x00"):  # protocol topics (heartbeats) never wait
                self._read_subscriptions()
                if not self._subscribed(topic):
                    self._hold(frames)
                    return
            self._send(frames)

    def flush(self) -> None:
        """Take in new subscriptions: publish the held messages they wait for, and those
        held too long. The heartbeat thread calls it every interval."""
        with self._lock:
            if self._xpub and not self._closed:
                self._read_subscriptions()

    def _send(self, frames: list[bytes]) -> None:
        self.seq = seq = self.seq + 1
        # PUB never blocks: at a subscriber's high-water mark the message is dropped
        # for that subscriber (which sees a gap in the numbers).
        send_multipart(self.socket, with_seq(frames, seq), block=False)

    def _subscribed(self, topic: bytes) -> bool:
        if topic in self._subscriptions or any(topic.startswith(prefix)
                                               for prefix in self._subscriptions):
            self._heard.add(topic)
            return True
        return False

    def _hold(self, frames: list[bytes]) -> None:
        size = sum(len(frame) for frame in frames)
        self.held += 1
        self._waiting.append((time.monotonic() + self._hold_s, frames, size))
        self._waiting_bytes += size
        while len(self._waiting) > _MAX_HELD or self._waiting_bytes > _MAX_HELD_BYTES:
            self._release_oldest()

    def _release_oldest(self) -> None:
        _, frames, size = self._waiting.popleft()
        self._waiting_bytes -= size
        if not self._subscribed(frames[0]):
            self.unheard += 1
        self._send(frames)

    def _read_subscriptions(self) -> None:
        # XPUB passes on the first subscription to a topic and the last unsubscription.
        sock = self.socket
        changed = False
        while int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            message = sock.recv(zmq.NOBLOCK)
            if not message:
                continue
            if message[0] == _SUBSCRIBE:
                self._subscriptions.add(message[1:])
                changed = True
            else:
                self._subscriptions.discard(message[1:])
                self._heard.clear()  # a topic heard before may have lost its subscriber
        if not self._waiting:
            return
        now = time.monotonic()
        if changed:
            kept: deque[tuple[float, list[bytes], int]] = deque()
            for entry in self._waiting:
                if self._subscribed(entry[1][0]):
                    self._waiting_bytes -= entry[2]
                    self._send(entry[1])
                else:
                    kept.append(entry)
            self._waiting = kept
        while self._waiting and self._waiting[0][0] <= now:
            self._release_oldest()

    def heartbeat(self, state: str = RUNNING) -> None:
        """Publish a heartbeat now (from one thread at a time: the window is per call)."""
        interval_s = self.heartbeat_interval_s or 0.0
        load = None
        if self._load is not None:
            now, snapshot = time.monotonic(), self._load()
            load = snapshot.since(self._last_load).heartbeat_load(now - self._last_beat)
            self._last_load, self._last_beat = snapshot, now
        beat = Heartbeat(self.name, self.instance, max(1, round(interval_s * 1000)), state,
                         self._counters(), host=self._host, pid=os.getpid(), load=load)
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
                self.flush()
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
            self.flush()
            self.heartbeat(STOPPED)
        with self._lock:
            while self._waiting:  # their subscribers had their chance
                self._release_oldest()
            self._closed = True
