"""The transport-free core of a processor: one request's frames in, its response frames out.

Validation, pings, deadlines, the replay window, the cache, running the job and turning
failures into JobFailed responses all live here, so every processor (threaded, in-memory,
asyncio) behaves the same and the rules are tested without sockets. A batch request (the
batch extension) runs each of its items through the same flow
(:meth:`RequestHandler.item_flow`), into one :class:`BatchAnswer`.

The job-call flow (cache, run, put, answer or fail) is written once, as a generator
(:meth:`RequestHandler.flow`): it yields each call of the job it needs as a
:class:`JobCall` and is sent back what the call returned, or thrown what it raised. The
sync processors drive it by calling the job directly (:meth:`RequestHandler.handle`); the
asyncio processor drives the same generator and awaits each call (as httpx's auth flows
are generators that its sync and async clients both run).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeAlias

from zjobs.core import tracing
from zjobs.core.dedup import JOINED, ReplayWindow, mark_replay
from zjobs.core.job import MISS, GetCache, Job, PutCache, run_job
from zjobs.core.load import LoadMeter
from zjobs.wire.batch import BATCH, DEFAULT_BATCH_MAX, EXTENSIONS_KEY
from zjobs.wire.codec import decode_header, encode
from zjobs.wire.protocol import (
    DEADLINE_EXCEEDED,
    JOB_FAILED,
    BatchRequest,
    Id,
    InvalidRequest,
    Request,
    ResponseEncoder,
    is_batch,
    parse_batch,
    parse_request,
    read_request,
    topic_bytes,
)

__all__ = ["BatchAnswer", "Counters", "Flow", "ItemFlow", "JobCall", "JobStep", "RequestHandler",
           "new_instance_id"]

_NIL = encode(None)

log = logging.getLogger(__name__)


def new_instance_id() -> str:
    """A random id for one run of a processor (16 hex characters)."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Counters:
    """What a processor has done; every received message lands in exactly one outcome.

    ``received == ok + failed + expired + bad_requests + pongs`` once the processor is idle.
    ``cache_hits`` is a part of ``ok``; ``dropped`` is the part of ``bad_requests`` that had no
    usable reply_to and was not answered; ``replays`` is the part of ``ok + failed + expired``
    answered from the replay window (repeated ids) instead of running the job again.
    Each item of a batch counts as a request (a batch refused as a whole counts once, in
    ``bad_requests``); ``batches`` counts the batch messages taken up.
    """

    received: int = 0
    ok: int = 0
    failed: int = 0
    expired: int = 0
    bad_requests: int = 0
    dropped: int = 0
    cache_hits: int = 0
    pongs: int = 0
    replays: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and JSON)."""
        return {name: getattr(self, name) for name in self.__slots__}


JobStep: TypeAlias = Literal["get_cache", "run", "put_cache"]
"""Which method of the job a :class:`JobCall` is for (its name)."""


class JobCall(NamedTuple):
    """One call the job-call flow asks its driver to make: the job's ``step`` method with
    ``args``. The driver sends back what the call returned, or throws in what it raised.

    (A named tuple and a plain string, not a dataclass and an enum: this is the per-request
    hot path, and both are several times cheaper to make and to look up.)
    """

    step: JobStep
    args: tuple[Any, ...]


Flow: TypeAlias = Generator[JobCall, Any, list[bytes]]
"""The job-call flow of one admitted request; its return value is the response frames."""

ItemFlow: TypeAlias = Generator[JobCall, Any, None]
"""The job-call flow of one item of a batch; it records the item's outcome in its
:class:`BatchAnswer`."""


class _Tally:
    # Mutable twin of Counters, touched only by the processor's own thread.
    __slots__ = Counters.__slots__

    def __init__(self) -> None:
        self.received = self.ok = self.failed = self.expired = 0
        self.bad_requests = self.dropped = self.cache_hits = self.pongs = self.replays = 0
        self.batches = 0

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
        replay_window: when given, requests marked ``"dedup": true`` are remembered in it:
            a repeat whose ``(reply_to, id)`` was answered recently is answered again from
            it, marked ``"replay": true``, instead of running the job again; a repeat of a
            request still running is answered by that request's response.
        batch_max: most items taken in one batch request (the batch extension, advertised
            in every pong); 0 turns the extension off: batches are then refused with
            BadRequest, as a processor without it refuses them.
    """

    def __init__(
        self,
        job: Job,
        *,
        name: str,
        resources: Any = None,
        instance: str | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        replay_window: ReplayWindow | None = None,
        batch_max: int = DEFAULT_BATCH_MAX,
    ) -> None:
        if batch_max < 0:
            raise ValueError("batch_max must not be negative")
        self.job = job
        self.replay_window = replay_window
        self.name = name
        self.resources = resources
        self.instance = instance or new_instance_id()
        self.batch_max = batch_max
        advertised = {EXTENSIONS_KEY: [BATCH], "batch_max": batch_max} if batch_max else None
        self.encoder = ResponseEncoder(name, self.instance, advertised)
        self._run = run_job(job)
        self.has_get_cache = isinstance(job, GetCache)
        """The job has ``get_cache``: the flow asks it before running."""
        self.has_put_cache = isinstance(job, PutCache)
        """The job has ``put_cache``: the flow calls it after each successful run."""
        self._methods: dict[str, Callable[..., Any]] = {"run": self._run}
        if isinstance(job, GetCache):
            self._methods["get_cache"] = job.get_cache
        if isinstance(job, PutCache):
            self._methods["put_cache"] = job.put_cache
        self._direct = not (self.has_get_cache or self.has_put_cache)
        self._clock_ms = clock_ms
        self._tally = _Tally()
        self._drops = _DropLog()
        self.load = LoadMeter()
        """Job runs and their durations: :meth:`handle` ticks it; a processor that calls the
        job itself (asyncio) ticks it around its own calls."""

    @property
    def counters(self) -> Counters:
        """A snapshot of the counters."""
        return self._tally.snapshot()

    def handle(self, frames: Sequence[bytes]) -> list[bytes] | None:
        """The response frames for one request message, or None when it must be dropped."""
        if self._direct and len(frames) == 2:
            # The usual request, to a job without a cache: run at once, without building its
            # flow (admit() and flow() decide the same for it; the results are the same).
            self._tally.received += 1
            try:
                read = read_request(frames)
            except InvalidRequest as exc:
                return self._refuse(exc)
            if type(read) is tuple:
                if not (read[3] and self.replay_window is not None):
                    return self._run_direct(*read)
                read = Request(read[0], read[2], read[1], dedup=read[3])
            assert isinstance(read, Request)
            if (read.ping or read.deadline_ms is not None or read.meta is not None
                    or (read.dedup and self.replay_window is not None)):
                admitted: Request | BatchRequest | list[bytes] | None = self._admit(read)
            else:
                return self._run_direct(read.id, read.reply_to, read.value, read.dedup)
        else:
            admitted = self.admit(frames)
        if not isinstance(admitted, Request | BatchRequest):
            return admitted
        started = self.load.start()  # a batch counts as one run
        try:
            with tracing.run_span(self.name, admitted.meta):
                if isinstance(admitted, BatchRequest):
                    return self.drive(self.batch_flow(admitted))
                return self.drive(self.flow(admitted))
        finally:
            self.load.finish(started)

    def _run_direct(self, rid: Id, reply_to: str | bytes | None, value: Any,
                    dedup: bool) -> list[bytes]:
        # flow(), drive() and answer() for a job without get_cache/put_cache, in one call, for
        # a request without meta (no span to run in) and not kept in a replay window. The
        # Request is built only to fail.
        load = self.load
        started = load.start()
        try:
            try:
                result = self._run(value, self.resources)
            except KeyboardInterrupt:
                raise  # it stops the processor, as drive() lets it
            except BaseException as exc:  # a job must not stop the processor
                return self.fail(Request(rid, value, reply_to, dedup=dedup), exc)
            try:
                body = self.encoder.encode_value(result)
            except BaseException as exc:  # an unencodable value is a job failure
                return self.fail(Request(rid, value, reply_to, dedup=dedup), exc)
            self._tally.ok += 1
            return self.encoder.ok(topic_bytes(reply_to), rid, body)
        finally:
            load.finish(started)

    # admit() then flow() are every rule of answering a request; handle() drives the flow
    # by calling the job directly, the asyncio processor by awaiting it.

    def admit(self, frames: Sequence[bytes]) -> Request | BatchRequest | list[bytes] | None:
        """Validate a request message and answer what needs no job.

        Returns:
            The :class:`Request` when the job must answer it (cache, then run), or the
            :class:`BatchRequest` whose items it must answer (see :meth:`batch_flow`);
            otherwise the frames to publish at once (bad request, ping, expired deadline,
            replay), or None when there is nothing to publish (dropped, or a repeat of a
            request still running, which that request's response answers).
        """
        tally = self._tally
        tally.received += 1
        if self.batch_max and is_batch(frames):
            return self._admit_batch(frames)
        try:
            request = parse_request(frames)
        except InvalidRequest as exc:
            return self._refuse(exc)
        return self._admit(request)

    def _admit(self, request: Request) -> Request | list[bytes] | None:
        # admit() for a parsed request: ping, replay window, deadline.
        tally = self._tally
        if request.ping:
            tally.pongs += 1
            return self.encoder.pong(topic_bytes(request.reply_to), request.id, request.meta)
        window = self.replay_window if request.dedup else None
        if window is not None:
            seen = window.claim((topic_bytes(request.reply_to), request.id))
            if seen is JOINED:
                return None  # counted when the original completes
            if seen is not None:
                tally.replays += 1
                if seen.failed:
                    tally.failed += 1
                else:
                    tally.ok += 1
                return mark_replay(seen.frames)
        if request.deadline_ms is not None and self._clock_ms() > request.deadline_ms:
            joined = 0 if window is None else window.release(
                (topic_bytes(request.reply_to), request.id))
            tally.expired += 1 + joined
            tally.replays += joined
            error = {"type": DEADLINE_EXCEEDED,
                     "message": f"deadline {request.deadline_ms} passed before the job started"}
            return self.encoder.error(topic_bytes(request.reply_to), request.id, error,
                                      request.meta)
        return request

    def _refuse(self, exc: InvalidRequest) -> list[bytes] | None:
        tally = self._tally
        tally.bad_requests += 1
        if exc.topic is None:
            tally.dropped += 1
            self._drops.warn(self.name, exc.message)
            return None
        error = {"type": exc.error_type, "message": exc.message}
        return self.encoder.error(exc.topic, exc.id, error, exc.meta)

    def answer(self, request: Request, value: Any, *, cached: bool = False) -> list[bytes]:
        """The ok response frames for the job's (or the cache's) ``value``, counted as ok.

        Raises:
            EncodeError: ``value`` cannot be encoded (nothing is counted); answer with
                :meth:`fail` instead, which names the error ``EncodeError`` as ZJP/1 asks.
        """
        body = self.encoder.encode_value(value)
        tally = self._tally
        tally.ok += 1
        if cached:
            tally.cache_hits += 1
        topic = topic_bytes(request.reply_to)
        frames = self.encoder.ok(topic, request.id, body, cached=cached, meta=request.meta)
        if self.replay_window is not None and request.dedup:
            joined = self.replay_window.complete((topic, request.id), frames)
            tally.ok += joined
            tally.replays += joined
        return frames

    def fail(self, request: Request, exc: BaseException) -> list[bytes]:
        """The JobFailed response frames for what the job (or its cache) raised."""
        self._tally.failed += 1
        tracing.record_failure(exc)
        error = self._job_failed(request.id, exc)
        topic = topic_bytes(request.reply_to)
        frames = self.encoder.error(topic, request.id, error, request.meta)
        if self.replay_window is not None and request.dedup:
            joined = self.replay_window.complete((topic, request.id), frames, failed=True)
            self._tally.failed += joined
            self._tally.replays += joined
        return frames

    def _job_failed(self, rid: Id, exc: BaseException, item: int | None = None) -> dict[str, Any]:
        kind = type(exc).__name__
        where = "" if item is None else f" (batch item {item})"
        log.debug("processor %s: job failed for id %r%s", self.name, rid, where, exc_info=exc)
        try:
            text = str(exc)
        except Exception:  # a broken __str__ must not stop the processor
            text = "<exception text unavailable>"
        return {"type": JOB_FAILED, "message": f"{kind}: {text}", "exception": kind}

    def flow(self, request: Request) -> Flow:
        """The job-call flow of an admitted request: ``get_cache`` (a hit is answered
        cached), else ``run`` and answer, then ``put_cache``; whatever a call raises is a
        JobFailed answer, except that a failing ``put_cache`` is only logged.

        Yields each :class:`JobCall` for the driver to make; returns the response frames.
        A driver throws in every exception of a call except those that must stop the
        processor instead (KeyboardInterrupt, or the cancellation of an asyncio task).
        """
        if self.has_get_cache:
            try:
                hit = yield JobCall("get_cache", (request.value, self.resources))
                if hit is not MISS:
                    return self.answer(request, hit, cached=True)
            except GeneratorExit:
                raise
            except BaseException as exc:
                return self.fail(request, exc)
        try:
            value = yield JobCall("run", (request.value, self.resources))
            frames = self.answer(request, value)  # an unencodable value is a job failure
        except GeneratorExit:
            raise
        except BaseException as exc:  # a job must not stop the processor, SystemExit included
            return self.fail(request, exc)
        if self.has_put_cache:
            try:
                yield JobCall("put_cache", (request.value, value, self.resources))
            except GeneratorExit:
                raise
            except BaseException:
                log.warning("processor %s: put_cache failed for id %r", self.name,
                            request.id, exc_info=True)
        return frames

    def drive(self, flow: Flow) -> list[bytes]:
        """Run ``flow`` to its end by calling the job's methods in this thread.

        Raises:
            KeyboardInterrupt: from the job; it stops the processor instead of failing the job.
        """
        methods = self._methods
        try:
            call = next(flow)
            while True:
                try:
                    result = methods[call.step](*call.args)
                except KeyboardInterrupt:
                    flow.close()
                    raise
                except BaseException as exc:
                    call = flow.throw(exc)
                else:
                    call = flow.send(result)
        except StopIteration as done:
            frames: list[bytes] = done.value
            return frames

    # -- the batch extension: every item through the flow, one response ------------------

    def _admit_batch(self, frames: Sequence[bytes]) -> BatchRequest | list[bytes] | None:
        tally = self._tally
        try:
            batch = parse_batch(frames, self.batch_max)
        except InvalidRequest as exc:
            return self._refuse(exc)  # refused whole: one received, one bad request
        count = len(batch.items)
        tally.received += count - 1
        tally.batches += 1
        key = (topic_bytes(batch.reply_to), batch.id)
        window = self.replay_window if batch.dedup else None
        if window is not None:
            seen = window.claim(key)
            if seen is JOINED:
                return None  # counted when the original completes
            if seen is not None:
                self._count_batch(seen.frames, count, replays=1)
                return mark_replay(seen.frames)
        if batch.deadline_ms is not None and self._clock_ms() > batch.deadline_ms:
            joined = 0 if window is None else window.release(key)
            tally.expired += count * (1 + joined)
            tally.replays += count * joined
            error = {"type": DEADLINE_EXCEEDED,
                     "message": f"deadline {batch.deadline_ms} passed before the batch started"}
            return self.encoder.error(key[0], batch.id, error, batch.meta)
        return batch

    def _count_batch(self, frames: list[bytes], count: int, *, replays: int) -> None:
        # Count the outcomes of a batch response for each time it answered (a replay, or
        # repeats joined to the original), from the error types in its header.
        failed = expired = 0
        errors = decode_header(frames[1]).get("errors") or ()
        for _, error in errors:
            if error.get("type") == DEADLINE_EXCEEDED:
                expired += 1
            else:
                failed += 1
        tally = self._tally
        tally.ok += (count - failed - expired) * replays
        tally.failed += failed * replays
        tally.expired += expired * replays
        tally.replays += count * replays

    def batch_answer(self, batch: BatchRequest) -> BatchAnswer:
        """A new :class:`BatchAnswer` for a batch :meth:`admit` returned."""
        return BatchAnswer(self, batch)

    def batch_flow(self, batch: BatchRequest) -> Flow:
        """The job-call flow of an admitted batch: each item's :meth:`item_flow` in turn;
        returns the batch response frames. (A processor that runs items concurrently drives
        the items' flows itself, into one :meth:`batch_answer`.)"""
        answer = BatchAnswer(self, batch)
        for index, item in enumerate(batch.items):
            yield from self.item_flow(answer, index, item)
        return answer.frames()

    def item_flow(self, answer: BatchAnswer, index: int, item: Any) -> ItemFlow:
        """:meth:`flow` for item ``index`` of a batch, recording its outcome in ``answer``:
        the batch's deadline when the item starts, ``get_cache``, ``run``, ``put_cache``."""
        if not answer.due(index):
            return
        if self.has_get_cache:
            try:
                hit = yield JobCall("get_cache", (item, self.resources))
                if hit is not MISS:
                    answer.ok(index, hit, cached=True)
                    return
            except GeneratorExit:
                raise
            except BaseException as exc:
                answer.fail(index, exc)
                return
        try:
            value = yield JobCall("run", (item, self.resources))
            answer.ok(index, value)  # an unencodable value is this item's failure
        except GeneratorExit:
            raise
        except BaseException as exc:  # one item must not stop the others
            answer.fail(index, exc)
            return
        if self.has_put_cache:
            try:
                yield JobCall("put_cache", (item, value, self.resources))
            except GeneratorExit:
                raise
            except BaseException:
                log.warning("processor %s: put_cache failed for id %r (batch item %d)",
                            self.name, answer.request.id, index, exc_info=True)


class BatchAnswer:
    """The response to one batch, filled item by item, in any order.

    Each item goes through :meth:`RequestHandler.item_flow`: :meth:`due` (the batch's
    deadline), then :meth:`ok` with its value or :meth:`fail` with what was raised;
    :meth:`frames` then counts the outcomes and returns the response.
    """

    __slots__ = ("_bodies", "_errors", "_expired", "_handler", "_hits", "request")

    def __init__(self, handler: RequestHandler, request: BatchRequest) -> None:
        self._handler = handler
        self.request = request
        self._bodies = [_NIL] * len(request.items)
        self._errors: list[tuple[int, dict[str, Any]]] = []
        self._hits = 0
        self._expired = 0

    def due(self, index: int) -> bool:
        """True when item ``index`` may start now; else it is answered DeadlineExceeded."""
        deadline = self.request.deadline_ms
        if deadline is None or self._handler._clock_ms() <= deadline:
            return True
        self._expired += 1
        self._errors.append((index, {
            "type": DEADLINE_EXCEEDED,
            "message": f"deadline {deadline} passed before batch item {index} started"}))
        return False

    def ok(self, index: int, value: Any, *, cached: bool = False) -> None:
        """Item ``index`` answered ``value`` (from the cache when ``cached``).

        Raises:
            EncodeError: ``value`` cannot be encoded (nothing is recorded); answer with
                :meth:`fail` instead.
        """
        self._bodies[index] = self._handler.encoder.encode_value(value)
        if cached:
            self._hits += 1

    def fail(self, index: int, exc: BaseException) -> None:
        """Item ``index`` failed with ``exc`` (JobFailed)."""
        self._errors.append((index, self._handler._job_failed(self.request.id, exc, index)))

    def frames(self) -> list[bytes]:
        """Count the items' outcomes and return the batch response frames (once)."""
        handler, request = self._handler, self.request
        count = len(self._bodies)
        failed = len(self._errors) - self._expired
        tally = handler._tally
        tally.ok += count - len(self._errors)
        tally.failed += failed
        tally.expired += self._expired
        tally.cache_hits += self._hits
        self._errors.sort(key=lambda entry: entry[0])
        topic = topic_bytes(request.reply_to)
        frames = handler.encoder.batch(topic, request.id, self._bodies, self._errors,
                                       cached=self._hits == count, meta=request.meta)
        window = handler.replay_window
        if window is not None and request.dedup:
            joined = window.complete((topic, request.id), frames, failed=failed > 0)
            if joined:
                handler._count_batch(frames, count, replays=joined)
        return frames
