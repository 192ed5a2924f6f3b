"""AsyncZmqProcessor: serves a job on an event loop with many requests in flight at once.

Every request takes one of ``concurrency`` slots from the moment it is read until its
response is published. With all slots taken the processor stops reading its PULL socket,
so requests wait in ZeroMQ's queues (bounded by the high-water marks, then senders wait)
instead of piling up in memory: that is the backpressure. Responses are published as each
job finishes, out of order; ids keep them correlated.

The rules for answering (validation, pings, deadlines, the cache, JobFailed) are
:class:`~zjobs.core.handler.RequestHandler`'s, shared with the sync processors; only calling
the job differs (see :mod:`zjobs.processor.async_job`).

Serve it inside a running loop with ``await processor.serve()`` or ``async with``, or in
a thread with its own loop with :meth:`~AsyncZmqProcessor.start`/``stop()`` from sync code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Self

import zmq
import zmq.asyncio

from zjobs.core import tracing
from zjobs.core.async_resources import AsyncResources
from zjobs.core.handler import new_instance_id
from zjobs.core.job import MISS, Job, describe_job, run_job
from zjobs.core.resources import ResourceFactory
from zjobs.errors import StartError, Timeout
from zjobs.processor.async_job import JobCalls, is_async_job
from zjobs.processor.sync import BaseZmqProcessor, Endpoints
from zjobs.transport.async_receiver import recv_nowait
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE, Keepalive
from zjobs.transport.publisher import Publisher
from zjobs.transport.sockets import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ProcessorSockets,
    ServerSecurity,
)
from zjobs.wire.protocol import Request

if TYPE_CHECKING:
    from zjobs.client.aio import AsyncClient

__all__ = ["DEFAULT_CONCURRENCY", "AsyncZmqProcessor"]

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 100
"""How many requests an :class:`AsyncZmqProcessor` has in flight unless told otherwise."""

_BURST = 100  # messages taken without yielding to the loop, so finished jobs get to publish


def _interrupts(exc: BaseException) -> bool:
    """True for an exception that must stop the processor instead of failing the job."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    # The job may raise CancelledError itself (e.g. from a future it awaited): that is a job
    # failure. Only a cancellation of the task running it is ours.
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
    return False


class AsyncZmqProcessor(BaseZmqProcessor):
    """A :class:`~zjobs.Processor` that serves a job on an asyncio event loop.

    Args:
        job: an async job (``async def run(request, resources)``, optionally async
            ``get_cache``/``put_cache``, or an ``async def`` function), or a sync job with
            ``threads=True``.
        requests: endpoint to bind the PULL socket on (``tcp://127.0.0.1:*`` picks a port).
        responses: endpoint to bind the PUB socket on.
        name: written into every response; defaults to the job's name.
        resources: a factory for the resources passed to the job: as for
            :class:`~zjobs.ZmqProcessor`, or a coroutine function or an async generator
            function (see :mod:`zjobs.core.async_resources`); opened and closed inside the loop.
        concurrency: how many requests may be in flight at once (at least 1).
        threads: run the job's sync methods in a pool of ``concurrency`` threads instead of
            on the loop. Required for a sync job, whose resources must then be thread-safe.
        context: the zmq context (the shared instance by default).
        max_message_size: largest request frame accepted (ZMQ_MAXMSGSIZE).
        linger_ms: how long published responses may still flush after the sockets close.
        rcvhwm: requests queued in ZeroMQ before senders are held back.
        sndhwm: responses queued per subscriber before the publisher drops for that subscriber.
        security: server-side security (e.g. CURVE) for both sockets. If it has a
            ``release_server(socket)`` method, that is called after each socket is closed.
        dedup_size: how many recent responses are kept to answer a repeated request id
            without running the job again; 0 turns this off.
        dedup_ttl_s: how long after a request was taken up a repeat of it is answered from
            that window.
        heartbeat_interval_s: seconds between heartbeats; None sends none.
        keepalive: TCP keepalive on both sockets, dropping dead peers' connections.
        metrics: ``HOST:PORT`` to serve Prometheus metrics on (needs ``zjobs[metrics]``).

    The options shared with :class:`~zjobs.ZmqProcessor` mean the same there and here.

    Raises:
        BindError: an endpoint could not be bound (the error names it).
        TypeError: ``job`` is not a job, or is a sync job without ``threads=True``.
        ValueError: ``concurrency`` is below 1.
    """

    def __init__(
        self,
        job: Job,
        *,
        requests: str = "tcp://127.0.0.1:*",
        responses: str = "tcp://127.0.0.1:*",
        name: str | None = None,
        resources: ResourceFactory | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        threads: bool = False,
        context: zmq.Context[Any] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        linger_ms: int = 1000,
        rcvhwm: int = 1000,
        sndhwm: int = 100_000,
        security: ServerSecurity | None = None,
        dedup_size: int = 10_000,
        dedup_ttl_s: float = 60.0,
        heartbeat_interval_s: float | None = 1.0,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        metrics: str | None = None,
    ) -> None:
        run_job(job)
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self._check_options(dedup_size, dedup_ttl_s, heartbeat_interval_s)
        if not threads and not is_async_job(job):
            raise TypeError(f"{describe_job(job)} is a sync job: pass threads=True to run it in "
                            "a thread pool (its resources must then be thread-safe), or serve it "
                            "with ZmqProcessor")
        self.job = job
        self.name = name or describe_job(job)
        self.instance = new_instance_id()
        self.concurrency = concurrency
        self.threads = threads
        self.dedup_size = dedup_size
        self.dedup_ttl_s = dedup_ttl_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.context = context or zmq.Context.instance()
        self._resources = AsyncResources(resources)
        self._handler = None
        self._calls: JobCalls | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._state = "created"
        self._lock = threading.Lock()
        self._stop_flag = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._opened = threading.Event()
        self._opened_in_loop: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None
        self._done = threading.Event()
        self._serve_task: asyncio.Task[None] | None = None
        self._publisher: Publisher | None = None
        # Publishing never waits (PUB drops at its high-water mark), so a plain PUB socket
        # used from the loop's thread is enough.
        self._sockets = ProcessorSockets(
            self.context, requests, responses, max_message_size=max_message_size,
            linger_ms=linger_ms, rcvhwm=rcvhwm, sndhwm=sndhwm, keepalive=keepalive,
            security=security, pull_class=zmq.asyncio.Socket, pub_class=zmq.Socket)
        self.endpoints = Endpoints(self._sockets.requests, self._sockets.responses)
        try:
            self._serve_metrics(metrics)
        except BaseException:
            self._sockets.close()
            raise

    def __repr__(self) -> str:
        ep = getattr(self, "endpoints", None)
        where = f" requests={ep.requests} responses={ep.responses}" if ep else ""
        return (f"<AsyncZmqProcessor {self.name!r} {self._state} "
                f"in_flight={self.in_flight}/{self.concurrency}{where}>")

    # -- state and peers (state, counters, sender(), receiver(), client(): the base's) -------

    @property
    def in_flight(self) -> int:
        """How many requests are being answered right now."""
        return len(self._tasks)

    def async_client(self, **options: Any) -> AsyncClient:
        """An :class:`~zjobs.aio.AsyncClient` connected to this processor."""
        from zjobs.client.aio import AsyncClient

        options.setdefault("context", self.context)
        return AsyncClient.connect(self.connect_endpoints.requests,
                                   self.connect_endpoints.responses, **options)

    # -- serving -------------------------------------------------------------------------

    async def serve(self) -> None:
        """Open the resources and serve in the running event loop until stopped.

        :meth:`request_stop` (or :meth:`stop`) stops gracefully: reading stops, the jobs in
        flight finish and publish, then the resources and sockets are closed and this
        returns. Cancelling the task running ``serve()`` stops at once instead: jobs in
        flight are cancelled unanswered, then everything is closed.

        Raises:
            StartError: the resources factory raised.
            ClosedError: the processor already served.
        """
        self._claim("serve()")
        await self._serving()

    async def _serving(self) -> None:
        self._loop_thread = threading.current_thread()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._stop_flag.is_set():
            self._wake.set()
        try:
            try:
                await self._open()
            except BaseException as exc:
                self._start_error = exc
                raise
            finally:
                self._opened.set()
                if self._opened_in_loop is not None:
                    self._opened_in_loop.set()
            await self._serve()
        finally:
            await self._finish()

    async def _open(self) -> None:
        try:
            value = await self._resources.open()
        except Exception as exc:
            raise self._resources_failed(exc) from exc
        if self.threads:
            self._pool = ThreadPoolExecutor(self.concurrency,
                                            thread_name_prefix=f"zjobs-pool-{self.name}")
        self._handler = self._new_handler(value)
        self._calls = JobCalls(self.job, self._pool)
        self._slots = asyncio.Semaphore(self.concurrency)

    async def _serve(self) -> None:
        handler, pub = self._handler, self._sockets.pub
        assert handler is not None and pub is not None
        # Numbered responses and heartbeats, as ZmqProcessor publishes them.
        self._publisher = Publisher(pub, name=self.name, instance=self.instance,
                                    heartbeat_interval_s=self.heartbeat_interval_s,
                                    counters=lambda: handler.counters.as_dict(),
                                    load=handler.load.snapshot)
        self._publisher.start()
        try:
            await self._serve_until_stopped()
        finally:
            self._publisher.close()  # a last heartbeat says "stopped", after the last response

    async def _serve_until_stopped(self) -> None:
        assert self._wake is not None
        log.debug("processor %s serving on %s", self.name, self.endpoints)
        reader = asyncio.create_task(self._read(), name=f"zjobs-reader-{self.name}")
        stop = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait((reader, stop), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            for task in self._tasks:
                task.cancel()
            raise
        finally:
            reader.cancel()
            stop.cancel()
            await asyncio.wait((reader, stop))
            await self._drain()
        if not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]

    async def _drain(self) -> None:
        # Graceful stop: wait for the jobs in flight (they publish as they finish).
        try:
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        except asyncio.CancelledError:
            for task in self._tasks:
                task.cancel()
            raise

    async def _read(self) -> None:
        pull, slots, take = self._sockets.pull, self._slots, self._take
        assert isinstance(pull, zmq.asyncio.Socket) and slots is not None
        while True:
            # A slot first, then a message: with every slot taken nothing more is read.
            await slots.acquire()
            try:
                frames = await pull.recv_multipart()
            except BaseException:
                slots.release()
                raise
            take(frames)
            for _ in range(_BURST):  # take what is already queued while slots are free
                if slots.locked():
                    break
                queued = recv_nowait(pull)
                if queued is None:
                    break
                await slots.acquire()  # free: returns at once
                take(queued)
            else:
                await asyncio.sleep(0)

    def _take(self, frames: list[bytes]) -> None:
        assert self._handler is not None and self._slots is not None
        admitted = self._handler.admit(frames)
        if isinstance(admitted, Request):
            task = asyncio.create_task(self._answer(admitted))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
            return
        self._slots.release()
        if admitted is not None:
            self._publish(admitted)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        assert self._slots is not None
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("processor %s: answering a request failed", self.name,
                      exc_info=task.exception())

    def _publish(self, frames: list[bytes]) -> None:
        assert self._publisher is not None
        self._publisher.publish(frames)

    async def _answer(self, request: Request) -> None:
        assert self._handler is not None
        load = self._handler.load
        started = load.start()
        try:
            with tracing.run_span(self.name, request.meta):
                frames = await self._respond(request)
        finally:
            load.finish(started)
        self._publish(frames)

    async def _respond(self, request: Request) -> list[bytes]:
        # RequestHandler._execute's flow, with the job's methods awaited.
        handler, calls = self._handler, self._calls
        assert handler is not None and calls is not None
        resources = handler.resources
        if calls.get_cache is not None:
            try:
                hit = await calls.get_cache(request.value, resources)
                if hit is not MISS:
                    return handler.answer(request, hit, cached=True)
            except BaseException as exc:
                if _interrupts(exc):
                    raise
                return handler.fail(request, exc)
        try:
            value = await calls.run(request.value, resources)
            frames = handler.answer(request, value)
        except BaseException as exc:  # a job must not stop the processor, SystemExit included
            if _interrupts(exc):
                raise
            return handler.fail(request, exc)
        if calls.put_cache is not None:
            try:
                await calls.put_cache(request.value, value, resources)
            except Exception:
                handler.cache_put_failed(request)
        return frames

    # -- stopping ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the processor to stop gracefully; safe from any thread (and before it serves)."""
        self._stop_flag.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # the loop is closed: serving is over

    async def _finish(self) -> None:
        self._state = "stopping"
        try:
            await self._resources.close()
        except Exception:
            log.exception("processor %s: closing resources failed", self.name)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._close_metrics()
            self._sockets.close()
            self._state = "stopped"
            self._done.set()
            log.debug("processor %s stopped: %s", self.name, self.counters.as_dict())

    # -- in an existing loop: async with ---------------------------------------------------

    async def __aenter__(self) -> Self:
        """Serve in the running loop (a task) until the block ends; return once serving.

        Raises:
            StartError: the resources factory raised.
        """
        opened = self._opened_in_loop = asyncio.Event()
        task = asyncio.create_task(self.serve(), name=f"zjobs-serve-{self.name}")
        waiter = asyncio.create_task(opened.wait())
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task.done():
            task.result()  # raises StartError (or ClosedError)
        self._serve_task = task
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.request_stop()
        if self._serve_task is not None:
            await self._serve_task

    # -- from sync code: a thread with its own loop ----------------------------------------

    def run(self) -> None:
        """Serve in the calling thread, on a new event loop, until :meth:`request_stop`.

        Raises:
            StartError: the resources factory raised.
        """
        self._claim("run()")
        asyncio.run(self._serving())

    def start(self) -> Self:
        """Serve in a background thread with its own event loop; return once serving.

        Raises:
            StartError: the resources factory raised (the processor is then stopped).
        """
        self._claim("start()")

        def main() -> None:
            try:
                asyncio.run(self._serving())
            except StartError:
                pass  # raised by start()
            except Exception:
                log.exception("processor %s crashed", self.name)

        self._thread = threading.Thread(target=main, name=f"zjobs-processor-{self.name}",
                                        daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        return self

    def stop(self, timeout_s: float | None = 10.0) -> None:
        """Stop gracefully and wait for it (jobs in flight finish and publish); idempotent.

        From any thread but the processor's own (after :meth:`start`, or while
        :meth:`run`/:meth:`serve` runs elsewhere); inside its loop, this only requests the
        stop: use ``async with``, or :meth:`request_stop` and await :meth:`serve`'s task.

        Raises:
            Timeout: the jobs in flight did not finish within ``timeout_s``.
        """
        self.request_stop()
        with self._lock:
            never_ran = self._state == "created"
            if never_ran:
                self._state = "stopped"
        if never_ran:
            self._close_metrics()
            self._sockets.close()
            return
        if self._loop_thread is threading.current_thread():
            return
        if not self._done.wait(timeout_s):
            raise Timeout(f"processor {self.name!r} did not stop within {timeout_s}s: "
                          f"{self.in_flight} job(s) still running")
        if self._thread is not None:
            self._thread.join()  # it ends right after closing everything

    close = stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
