"""What both clients share once built: the call engine and everything read from it.

As httpx's ``BaseClient`` holds what ``Client`` and ``AsyncClient`` have in common,
:class:`BaseClient` holds the engine and the counters and defaults it keeps, so the two
drivers only add their own I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zjobs.core.batching import MapFlow, map_window
from zjobs.core.engine import CallEngine
from zjobs.core.options import ClientOptions, check_call_options

__all__ = ["BaseClient"]


class BaseClient:
    """The engine-backed state of :class:`zjobs.Client` and :class:`zjobs.AsyncClient`.
    Not for use on its own."""

    _engine: CallEngine
    _options: ClientOptions
    topic: str

    @property
    def options(self) -> ClientOptions:
        """The :class:`~zjobs.ClientOptions` this client was built with (``expect_processors``
        filled in with the count it started with)."""
        return self._options

    @property
    def pending(self) -> int:
        """How many calls are waiting for a response (those held back to be coalesced too)."""
        return self._engine.calls_pending

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._engine.closed

    @property
    def ready(self) -> bool:
        """True once the readiness handshake has succeeded."""
        return self._engine.ready

    @property
    def timeout_s(self) -> float:
        """The default time one attempt of a call may take."""
        return self._engine.timeout_s

    @property
    def retries(self) -> int:
        """The default number of times an unanswered request is sent again."""
        return self._engine.retries

    @property
    def expect_processors(self) -> int:
        """How many distinct processors readiness waits for."""
        return self._engine.expect_processors

    @property
    def unmatched(self) -> int:
        """Responses on this client's topic that answered no pending call (late, or foreign)."""
        return self._engine.unmatched

    @property
    def resent(self) -> int:
        """Requests sent again because an attempt got no answer in time."""
        return self._engine.resent

    @property
    def replays(self) -> int:
        """Calls answered by a processor from its replay window (a repeat it had run)."""
        return self._engine.replays

    @property
    def coalesced(self) -> int:
        """Batches of coalesced calls sent (see the ``coalesce`` option)."""
        return self._engine.coalesced

    @property
    def returned(self) -> int:
        """Processor runs seen coming back after the client was ready (restarts)."""
        return self._engine.returned

    def _state(self) -> str:
        return "closed" if self.closed else "ready" if self._engine.ready else "new"

    # -- map: the decisions both drivers share ------------------------------------------

    def _batch_size(self, wanted: int) -> int:
        """How many values a batch may hold now (0: none; see ``CallEngine.batch_size``)."""
        return self._engine.batch_size(wanted)

    def _map_flow(self, values: Iterable[Any], timeout_s: float | None, retries: int | None,
                  batch_size: int, window: int | None) -> MapFlow:
        """The flow of one ``map`` call, its arguments checked now (not at the first next).

        Raises:
            OptionsError: bad ``timeout_s`` or ``retries`` (a ValueError).
            ValueError: bad ``batch_size`` or ``window``.
        """
        engine = self._engine
        check_call_options(engine.timeout_s if timeout_s is None else timeout_s,
                           engine.retries if retries is None else retries)
        size, in_flight = map_window(batch_size, window)
        return MapFlow(values, limit=lambda: self._batch_size(size), window=in_flight)
