"""Watching a membership source from an asyncio task (the twin of
:class:`~zjobs.client.watcher.MembershipWatcher`).

Readings run in the loop's default executor, so a DNS query (bounded by its timeout) never
blocks the loop; the decision after each one is the shared
:class:`~zjobs.core.membership.MembershipTracker`'s, and ``apply`` runs on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Self

from zjobs.client.watcher import DEFAULT_INTERVAL_S, read_members
from zjobs.core.membership import Members, Membership, MembershipTracker

__all__ = ["AsyncMembershipWatcher"]

log = logging.getLogger(__name__)


class AsyncMembershipWatcher:
    """Reads ``source`` every ``interval_s`` seconds in a task; calls ``apply`` with each new
    set. Start it with :meth:`start` (or ``async with``) on a running loop.

    Args:
        source: where the set comes from.
        apply: called on the loop with the new set, e.g.
            ``lambda m: client.update_endpoints(m.requests, m.responses)``.
        interval_s: seconds between readings.
        current: the set already in use; None reads the source once in :meth:`start` and
            applies it (raising :class:`~zjobs.errors.MembershipError` if that fails).
    """

    def __init__(self, source: Membership, apply: Callable[[Members], None], *,
                 interval_s: float = DEFAULT_INTERVAL_S, current: Members | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.source = source
        self.interval_s = interval_s
        self._apply = apply
        self._first = current
        self.tracker: MembershipTracker | None = None
        """Counts of readings, changes and failures (once started)."""
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "watching" if self._task is not None and not self._task.done() else "idle"
        return f"<AsyncMembershipWatcher {state} {self.source!r} every {self.interval_s}s>"

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> Self:
        """Take the first reading if none was given, then start the task.

        Raises:
            MembershipError: the first reading failed.
        """
        if self._task is not None:
            return self
        current = self._first
        if current is None:
            current = await asyncio.to_thread(self.source.members)
            self._apply(current)
        self.tracker = MembershipTracker(self.source, current)
        self._task = asyncio.get_running_loop().create_task(self._run(self.tracker),
                                                            name="zjobs-membership")
        return self

    async def _run(self, tracker: MembershipTracker) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            change = tracker.read(await asyncio.to_thread(read_members, self.source))
            if change is None:
                continue
            try:
                self._apply(change)
            except Exception:
                log.exception("membership %r: applying %s failed", self.source, change)

    async def close(self) -> None:
        """Stop the task (a reading in progress finishes in its thread). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
