"""AsyncZmqProcessor: serves a job on an event loop with many requests in flight at once.

Every request takes one of ``concurrency`` slots from the moment it is read until its
response is published. With all slots taken the processor stops reading its PULL socket,
so requests wait in ZeroMQ's queues (bounded by the high-water marks, then senders wait)
instead of piling up in memory: that is the backpressure. Responses are published as each
job finishes, out of order; ids keep them correlated.

The rules for answering (validation, pings, deadlines, the replay window) and the job-call
flow (cache, run, put, JobFailed) are :class:`~zjobs.core.handler.RequestHandler`'s, shared
with the sync processors; this processor only drives that flow by awaiting each call of
the job (see :mod:`zjobs.processor.async_job`).

Serve it inside a running loop with ``await processor.serve()`` or ``async with``, or in
a thread with its own loop with :meth:`~AsyncZmqProcessor.start`/``stop()`` from sync code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Self

import zmq
import zmq.asyncio

from zjobs.client.aio import AsyncClient
from zjobs.core import tracing
from zjobs.core.async_job import is_async_job
from zjobs.core.async_resources import AsyncResources
from zjobs.core.job import Job, describe_job
from zjobs.core.options import DEFAULT_CONCURRENCY, ProcessorOptions
from zjobs.core.resources import ResourceFactory
from zjobs.errors import StartError, Timeout
from zjobs.processor.async_job import JobCalls
from zjobs.processor.base import BaseZmqProcessor, build_options
from zjobs.transport.async_receiver import recv_nowait
from zjobs.transport.publisher import Publisher
from zjobs.transport.sockets import ServerSecurity
from zjobs.wire.protocol import BatchRequest, Request

__all__ = ["DEFAULT_CONCURRENCY", "AsyncZmqProcessor"]

log = logging.getLogger(__name__)

_BURST = 100  # messages taken without yielding to the loop, so finished jobs get to publish


class _Slots(asyncio.Semaphore):
    """The concurrency limit: one slot per request, or per batch item, being answered."""

    taken = 0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.taken += 1
        return True

    def release(self) -> None:
        self.taken -= 1
        super().release()


class AsyncZmqProcessor(BaseZmqProcessor):
    """A :class:`~zjobs.Processor` that serves a job on an asyncio event loop.

    Args:
        job: an async job (``async def run(request, resources)``, optionally async
            ``get_cache``/``put_cache``, or an ``async def`` function), or a sync job with
            ``threads=True``.
        options: how to serve (:class:`~zjobs.ProcessorOptions`), the same options as
            :class:`~zjobs.ZmqProcessor`'s, with these two meaningful here: ``concurrency``,
            how many requests may be in flight at once (:data:`DEFAULT_CONCURRENCY` when
            None), and ``threads``, to run the job's sync methods in a pool of
            ``concurrency`` threads instead of on the loop (required for a sync job, whose
            resources must then be thread-safe). Its fields may also be given as keywords,
            which override it.
        resources: a factory for the resources passed to the job: as for
            :class:`~zjobs.ZmqProcessor`, or a coroutine function or an async generator
            function (see :mod:`zjobs.core.async_resources`); opened and closed inside the loop.
        context: the zmq context (the shared instance by default).
        security: server-side security (e.g. CURVE) for both sockets. If it has a
            ``release_server(socket)`` method, that is called after each socket is closed.

    Raises:
        BindError: an endpoint could not be bound (the error names it).
        TypeError: ``job`` is not a job, is a sync job without ``threads=True``, or a
            keyword is not an option.
        OptionsError: an option's value cannot be used.
    """

    def __init__(
        self,
        job: Job,
        options: ProcessorOptions | None = None,
        *,
        resources: ResourceFactory | None = None,
        context: zmq.Context[Any] | None = None,
        security: ServerSecurity | None = None,
        **fields: Any,
    ) -> None:
        options = build_options(options, fields, "AsyncZmqProcessor")
        if not options.threads and not is_async_job(job):
            raise TypeError(f"{describe_job(job)} is a sync job: pass threads=True to run it in "
                            "a thread pool (its resources must then be thread-safe), or serve it "
                            "with ZmqProcessor")
        self.concurrency = options.concurrency or DEFAULT_CONCURRENCY
        """How many requests may be in flight at once."""
        self._resources = AsyncResources(resources)
        self._calls: JobCalls | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots: _Slots | None = None
        self._tasks: set[asyncio.Task[None]] = set()
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
        self._setup(job, options, context=context, security=security,
                    pull_class=zmq.asyncio.Socket, pub_class=zmq.Socket)

    def __repr__(self) -> str:
        ep = getattr(self, "endpoints", None)
        where = f" requests={ep.requests} responses={ep.responses}" if ep else ""
        return (f"<AsyncZmqProcessor {self.name!r} {self._state} "
                f"in_flight={self.in_flight}/{self.concurrency}{where}>")

    # -- state and peers (state, counters, sender(), receiver(), client(): the base's) -------

    @property
    def in_flight(self) -> int:
        """How many requests are being answered right now (each item of a batch counts)."""
        slots = self._slots
        return len(self._tasks) if slots is None else slots.taken

    def async_client(self, **options: Any) -> AsyncClient:
        """An :class:`~zjobs.aio.AsyncClient` connected to this processor."""
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
        if self.options.threads:
            self._pool = ThreadPoolExecutor(self.concurrency,
                                            thread_name_prefix=f"zjobs-pool-{self.name}")
        self._handler = self._new_handler(value)
        self._calls = JobCalls(self.job, self._pool)
        self._slots = _Slots(self.concurrency)

    async def _serve(self) -> None:
        handler, pub = self._handler, self._sockets.pub
        assert handler is not None and pub is not None
        # Numbered responses and heartbeats, as ZmqProcessor publishes them.
        self._publisher = Publisher(pub, name=self.name, instance=self.instance,
                                    heartbeat_interval_s=self.options.heartbeat_interval_s,
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
        crash, self._crash = self._crash, None
        if crash is not None:
            raise crash  # a task publishing a response failed

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
            # A message waiting, then a slot, then the message: with every slot taken
            # nothing more is read, and no slot is held while nothing comes (the items of
            # a batch being answered may take every slot).
            await pull.poll()
            await slots.acquire()
            frames = recv_nowait(pull)
            if frames is None:
                slots.release()
                continue
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
        if isinstance(admitted, Request | BatchRequest):
            answer = (self._answer(admitted) if isinstance(admitted, Request)
                      else self._answer_batch(admitted))
            task = asyncio.create_task(answer)
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
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Not a job's failure (that is an answer): publishing broke. Stop serving.
            log.error("processor %s: answering a request failed", self.name, exc_info=exc)
            self._crashed(exc)
            self.request_stop()

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
        handler, calls = self._handler, self._calls
        assert handler is not None and calls is not None
        return await calls.drive(handler.flow(request))

    async def _answer_batch(self, batch: BatchRequest) -> None:
        # Each item's flow, awaited. The batch holds the slot it was read with; each further
        # slot free while items are left starts one more worker, so the items run
        # concurrently within ``concurrency``.
        handler, calls, slots = self._handler, self._calls, self._slots
        assert handler is not None and calls is not None and slots is not None
        answer = handler.batch_answer(batch)
        items = enumerate(batch.items)  # shared: each item goes to the next free worker
        left = len(batch.items)

        async def work(group: asyncio.TaskGroup, extra: bool) -> None:
            nonlocal left
            try:
                for index, item in items:
                    left -= 1
                    while left > 0 and not slots.locked():
                        await slots.acquire()  # free: returns at once
                        group.create_task(work(group, True))
                    await calls.drive(handler.item_flow(answer, index, item))
            finally:
                if extra:
                    slots.release()

        started = handler.load.start()  # a batch counts as one run
        try:
            with tracing.run_span(self.name, batch.meta):
                async with asyncio.TaskGroup() as group:
                    group.create_task(work(group, False))
        finally:
            handler.load.finish(started)
        self._publish(answer.frames())

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

        If serving dies of anything but a job's failure (a job raising KeyboardInterrupt, a
        socket error), the processor stops and the next :meth:`stop` raises
        :class:`~zjobs.CrashedError` from it.

        Raises:
            StartError: the resources factory raised (the processor is then stopped).
        """
        self._claim("start()")

        def main() -> None:
            try:
                asyncio.run(self._serving())
            except StartError:
                pass  # raised by start()
            except BaseException as exc:  # kept for stop(): the thread has no caller
                log.error("processor %s crashed", self.name, exc_info=exc)
                self._crashed(exc)

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
            CrashedError: serving in the background thread had died (raised once).
        """
        self.request_stop()
        with self._lock:
            never_ran = self._state == "created"
            if never_ran:
                self._state = "stopped"
        if never_ran:
            self._close_metrics()
            self._sockets.close()
            self._done.set()
            return
        if self._loop_thread is threading.current_thread():
            return
        if not self._done.wait(timeout_s):
            raise Timeout(f"processor {self.name!r} did not stop within {timeout_s}s: "
                          f"{self.in_flight} job(s) still running")
        if self._thread is not None:
            self._thread.join()  # it ends right after closing everything
            self._raise_crash()

    close = stop

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until serving has ended (stopped, or crashed); True once it has."""
        return self._done.wait(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
