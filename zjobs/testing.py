"""Helpers for testing code that uses zjobs: readiness probes and an in-thread processor.

Never ``sleep()`` and hope a subscription is up: probe it with pings (ZJP/1's readiness
rule) using :func:`wait_subscribed`, or let :class:`~zjobs.Client` do it for you.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from zjobs.core.job import Job
from zjobs.errors import NotReady, ReceiveTimeout, SendTimeout
from zjobs.processor.sync import ZmqProcessor
from zjobs.transport.receiver import McReceive
from zjobs.transport.sender import MpSend
from zjobs.wire.protocol import PONG

__all__ = ["running_processor", "wait_subscribed", "wait_until"]

_LATE_PONG_S = 0.01  # a quiet gap that ends the wait for late pongs


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0,
               interval_s: float = 0.005) -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)


def wait_subscribed(sender: MpSend, receiver: McReceive, *, topic: str | bytes = "",
                    timeout_s: float = 10.0) -> None:
    """Ping through ``sender`` until ``receiver`` gets a pong on ``topic``.

    After it returns, responses published on ``topic`` reach ``receiver``. Other responses
    the receiver gets meanwhile are discarded, so call it before real traffic.

    Raises:
        NotReady: no pong within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    interval = 0.002
    sent: set[Any] = set()
    while time.monotonic() < deadline:
        try:
            sent.add(sender.send(None, reply_to=topic, ping=True))
        except SendTimeout:
            pass  # no connection can take the ping yet: not ready, try again
        until = min(deadline, time.monotonic() + interval)
        while (left := until - time.monotonic()) > 0:
            try:
                response = receiver.receive(timeout=left)
            except ReceiveTimeout:
                break
            if response.status == PONG and response.id in sent:
                sent.discard(response.id)
                _swallow_late_pongs(receiver, sent)
                return
        interval = min(interval * 1.5, 0.1)
    raise NotReady(getattr(sender, "endpoints", []), timeout_s, 0, 1)


def _swallow_late_pongs(receiver: McReceive, sent: set[Any]) -> None:
    # Processors hold a pong until its subscriber is there, so the earlier probes are
    # answered too, right after the first: take them off the receiver, not the caller.
    while sent:
        try:
            response = receiver.receive(timeout=_LATE_PONG_S)
        except ReceiveTimeout:
            return
        if response.status == PONG:
            sent.discard(response.id)


@contextmanager
def running_processor(job: Job, **options: Any) -> Iterator[ZmqProcessor]:
    """A :class:`ZmqProcessor` serving ``job`` in a background thread for the ``with`` block.

    Endpoints default to ``tcp://127.0.0.1:*``; pass ``requests``/``responses`` (for example
    ``ipc://`` paths in a temporary folder) to choose. A pytest fixture is one line::

        @pytest.fixture
        def square_processor():
            with running_processor(square) as proc:
                yield proc
    """
    processor = ZmqProcessor(job, **options)
    try:
        processor.start()
        yield processor
    finally:
        processor.stop()
