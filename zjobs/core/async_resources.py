"""Resources for async jobs: opened and closed inside the processor's event loop.

Besides what :class:`zjobs.core.resources.Resources` accepts (a plain callable or a generator
function), the factory may be a coroutine function or an async generator function::

    async def open_http():
        async with httpx.AsyncClient() as client:
            yield client

The value of a plain or coroutine factory is closed by awaiting its ``aclose()``, or by
calling its ``close()`` (awaited when that returns an awaitable).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator
from typing import Any

from zjobs.core.resources import ResourceFactory, Resources

__all__ = ["AsyncResources"]

log = logging.getLogger(__name__)


async def _close_value(value: Any) -> None:
    aclose = getattr(value, "aclose", None)
    if callable(aclose):
        await aclose()
        return
    close = getattr(value, "close", None)
    if callable(close):
        result = close()
        if inspect.isawaitable(result):
            await result


class AsyncResources:
    """The opened resources of one async processor run: ``value`` while open, then ``close()``."""

    def __init__(self, factory: ResourceFactory | None) -> None:
        self.factory = factory
        self.value: Any = None
        self._agen: AsyncGenerator[Any, None] | None = None
        self._sync: Resources | None = None
        self._open = False

    async def open(self) -> Any:
        """Create the resources (awaiting an async factory); return them."""
        factory = self.factory
        if factory is None:
            pass
        elif inspect.isasyncgenfunction(factory):
            self._agen = factory()
            self.value = await anext(self._agen)
        elif inspect.isgeneratorfunction(factory):
            self._sync = Resources(factory)
            self.value = self._sync.open()
        else:
            value = factory()
            self.value = await value if inspect.isawaitable(value) else value
        self._open = True
        return self.value

    async def close(self) -> None:
        """Close the resources once: finish the (async) generator, or close the value."""
        if not self._open:
            return
        self._open = False
        value, agen, sync = self.value, self._agen, self._sync
        self.value = self._agen = self._sync = None
        if sync is not None:
            sync.close()
        elif agen is not None:
            try:
                await anext(agen)
            except StopAsyncIteration:
                return
            await agen.aclose()
            log.warning("resources factory %r yielded more than once", self.factory)
        elif value is not None:
            await _close_value(value)
