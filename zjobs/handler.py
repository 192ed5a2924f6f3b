"""The transport-free core of a processor: one request's frames in, its response frames out.

Validation, pings, deadlines, the cache, running the job and turning failures into
JobFailed responses all live here, so every processor (threaded, in-memory, asyncio)
behaves the same and the rules are tested without sockets.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zjobs.job import MISS, GetCache, Job, PutCache, run_job
from zjobs.protocol import (
    DEADLINE_EXCEEDED,
    JOB_FAILED,
    InvalidRequest,
    Request,
    ResponseEncoder,
    parse_request,
    topic_bytes,
)

__all__ = ["Counters", "RequestHandler", "new_instance_id"]

log = logging.getLogger(__name__)


def new_instance_id() -> str:
    """A random id for one run of a processor (16 hex characters)."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Counters:
    """What a processor has done; every received message lands in exactly one outcome.

    ``received == ok + failed + expired + bad_requests + pongs`` once the processor is idle.
    ``cache_hits`` is a part of ``ok``; ``dropped`` is the part of ``bad_requests`` that had no
    usable reply_to and was not answered.
    """

    received: int = 0
    ok: int = 0
    failed: int = 0
    expired: int = 0
    bad_requests: int = 0
    dropped: int = 0
    cache_hits: int = 0
    pongs: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and JSON)."""
        return {name: getattr(self, name) for name in self.__slots__}


class _Tally:
    # Mutable twin of Counters, touched only by the processor's own thread.
    __slots__ = Counters.__slots__

    def __init__(self) -> None:
        self.received = self.ok = self.failed = self.expired = 0
        self.bad_requests = self.dropped = self.cache_hits = self.pongs = 0

    def snapshot(self) -> Counters:
        return Counters(*(getattr(self, name) for name in self.__slots__))


class _DropLog:
    """Logs dropped messages as warnings, at most one line a second under a flood."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._suppressed = 0

    def warn(self, name: str, reason: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        log.warning("processor %s dropped a message with no usable reply_to: %s%s",
                    name, reason, more)
        self._suppressed = 0
        self._next = now + self.interval_s


class RequestHandler:
    """Answers request frames for one job with the given resources.

    Args:
        job: an object with ``run(request, resources)`` or a function of the same shape;
            ``get_cache``/``put_cache`` are used when present.
        name: the processor name written into every response.
        resources: the opened resources passed to every call.
        instance: this processor run's id (random when not given).
        clock_ms: wall clock in unix milliseconds, for deadlines.
    """

    def __init__(
        self,
        job: Job,
        *,
        name: str,
        resources: Any = None,
        instance: str | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.job = job
        self.name = name
        self.resources = resources
        self.instance = instance or new_instance_id()
        self.encoder = ResponseEncoder(name, self.instance)
        self._run = run_job(job)
        self._get_cache = job.get_cache if isinstance(job, GetCache) else None
        self._put_cache = job.put_cache if isinstance(job, PutCache) else None
        self._clock_ms = clock_ms
        self._tally = _Tally()
        self._drops = _DropLog()

    @property
    def counters(self) -> Counters:
        """A snapshot of the counters."""
        return self._tally.snapshot()

    def handle(self, frames: Sequence[bytes]) -> list[bytes] | None:
        """The response frames for one request message, or None when it must be dropped."""
        tally = self._tally
        tally.received += 1
        try:
            request = parse_request(frames)
        except InvalidRequest as exc:
            tally.bad_requests += 1
            if exc.topic is None:
                tally.dropped += 1
                self._drops.warn(self.name, exc.message)
                return None
            error = {"type": exc.error_type, "message": exc.message}
            return self.encoder.error(exc.topic, exc.id, error, exc.meta)
        topic = topic_bytes(request.reply_to)
        if request.ping:
            tally.pongs += 1
            return self.encoder.pong(topic, request.id, request.meta)
        if request.deadline_ms is not None and self._clock_ms() > request.deadline_ms:
            tally.expired += 1
            error = {"type": DEADLINE_EXCEEDED,
                     "message": f"deadline {request.deadline_ms} passed before the job started"}
            return self.encoder.error(topic, request.id, error, request.meta)
        return self._execute(request, topic)

    def _execute(self, request: Request, topic: bytes) -> list[bytes]:
        encoder, tally = self.encoder, self._tally
        if self._get_cache is not None:
            try:
                hit = self._get_cache(request.value, self.resources)
                body = None if hit is MISS else encoder.encode_value(hit)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                return self._failed(request, topic, exc)
            if body is not None:
                tally.ok += 1
                tally.cache_hits += 1
                return encoder.ok(topic, request.id, body, cached=True, meta=request.meta)
        try:
            value = self._run(request.value, self.resources)
            body = encoder.encode_value(value)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a job must not stop the processor, SystemExit included
            return self._failed(request, topic, exc)
        if self._put_cache is not None:
            try:
                self._put_cache(request.value, value, self.resources)
            except Exception:
                log.warning("processor %s: put_cache failed for id %r", self.name, request.id,
                            exc_info=True)
        tally.ok += 1
        return encoder.ok(topic, request.id, body, meta=request.meta)

    def _failed(self, request: Request, topic: bytes, exc: BaseException) -> list[bytes]:
        self._tally.failed += 1
        kind = type(exc).__name__
        log.debug("processor %s: job failed for id %r", self.name, request.id, exc_info=exc)
        error = {"type": JOB_FAILED, "message": f"{kind}: {exc}", "exception": kind}
        return self.encoder.error(topic, request.id, error, request.meta)
