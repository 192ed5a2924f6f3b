"""Either client behind one synchronous face, so one test serves both (see
``test_client_behaviour``); the ``connect`` fixture in ``conftest.py`` makes them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from zjobs import AsyncClient, Client

T = TypeVar("T")
WAIT_S = 30.0


def _mirror(source: asyncio.Future[Any]) -> Future[Any]:
    # A concurrent future completed as ``source`` is (on the loop's thread).
    target: Future[Any] = Future()

    def copy(_: asyncio.Future[Any]) -> None:
        if source.cancelled():
            target.cancel()
        elif (error := source.exception()) is not None:
            target.set_exception(error)
        else:
            target.set_result(source.result())

    source.add_done_callback(copy)
    return target


def _failed(error: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(error)
    return future


def _submitted(submit: Callable[[], Future[Any]]) -> Future[Any]:
    try:
        return submit()
    except Exception as exc:
        return _failed(exc)


class Driven:
    """Either client behind one synchronous face: ``call``, ``submit`` (a concurrent
    future), ``submit_many`` (a burst), ``ping``, ``wait_ready``, ``close`` and the counters."""

    def __init__(self, kind: str, requests: Any, responses: Any, **options: Any) -> None:
        self.kind = kind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        if kind == "sync":
            self.client: Any = Client.connect(requests, responses, **options)
            return
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient.connect(requests, responses, **options)

        self.client = self._run(make())

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT_S * 4) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, request: Any, **options: Any) -> Any:
        if self._loop is None:
            return self.client.call(request, **options)
        return self._run(self.client.call(request, **options))

    def submit(self, request: Any, **options: Any) -> Future[Any]:
        if self._loop is None:
            future: Future[Any] = self.client.submit(request, **options)
            return future
        return asyncio.run_coroutine_threadsafe(self.client.call(request, **options),
                                                self._loop)

    def submit_many(self, requests: Iterable[Any], **options: Any) -> list[Future[Any]]:
        """Submit every request in one go, as a user makes a burst: a loop of ``submit``,
        or for the async client a loop of ``await submit`` in one task (one call sent per
        cross-thread hop would be a trickle, never a burst). A submit that raised is a
        future failed with its error, and the ones after it are still made."""
        if self._loop is None:
            return [_submitted(partial(self.client.submit, request, **options))
                    for request in requests]

        async def submit_all() -> list[Future[Any]]:
            futures = []
            for request in requests:
                try:
                    futures.append(_mirror(await self.client.submit(request, **options)))
                except Exception as exc:
                    futures.append(_failed(exc))
            return futures

        return self._run(submit_all())

    def wait_ready(self, timeout_s: float = WAIT_S) -> None:
        if self._loop is None:
            self.client.wait_ready(timeout_s)
        else:
            self._run(self.client.wait_ready(timeout_s))

    def ping(self, timeout_s: float = WAIT_S) -> float:
        if self._loop is None:
            return float(self.client.ping(timeout_s))
        return float(self._run(self.client.ping(timeout_s)))

    def update(self, requests: list[str], responses: list[str]) -> None:
        if self._loop is None:
            self.client.update_endpoints(requests, responses)
            return

        async def update() -> None:
            self.client.update_endpoints(requests, responses)

        self._run(update())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)  # counters: resent, replays, returned, ...

    def close(self) -> None:
        if self._loop is None:
            self.client.close()
        else:
            self._run(self.client.aclose())

    def shutdown(self) -> None:
        self.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(WAIT_S)
            self._loop.close()
