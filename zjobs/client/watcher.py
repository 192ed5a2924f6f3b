"""Watching a membership source from a thread: read it every few seconds, apply changes.

:class:`MembershipWatcher` is what ``Client.connect(membership=...)`` starts; the decision
after each reading (apply, ignore, keep the last set on failure) is
:class:`~zjobs.core.membership.MembershipTracker`'s, shared with the asyncio watcher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Self

from zjobs.core.membership import Members, Membership, MembershipTracker
from zjobs.errors import MembershipError

__all__ = ["DEFAULT_INTERVAL_S", "MembershipWatcher", "read_members"]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
"""How often a membership source is read again by default (seconds)."""


def read_members(source: Membership) -> Members | MembershipError:
    """One reading of ``source``: its members, or the error that stopped it (a source that
    raises anything else is logged with its traceback and counted as a failed reading)."""
    try:
        return source.members()
    except MembershipError as exc:
        return exc
    except Exception as exc:
        log.exception("membership %r: reading failed", source)
        return MembershipError(repr(source), f"{type(exc).__name__}: {exc}")


class MembershipWatcher:
    """Reads ``source`` every ``interval_s`` seconds in a thread and calls ``apply`` with
    each new set (never with an unchanged one, nor on a failed reading: the last known set
    is kept, see :mod:`zjobs.core.membership`).

    Args:
        source: where the set comes from.
        apply: called from the watcher's thread with the new set, e.g.
            ``lambda m: client.update_endpoints(m.requests, m.responses)``.
        interval_s: seconds between readings.
        current: the set already in use; None reads the source once now and applies it.

    Raises:
        MembershipError: ``current`` is None and the first reading failed.
    """

    def __init__(self, source: Membership, apply: Callable[[Members], None], *,
                 interval_s: float = DEFAULT_INTERVAL_S, current: Members | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if current is None:
            current = source.members()
            apply(current)
        self.source = source
        self.interval_s = interval_s
        self.tracker = MembershipTracker(source, current)
        """Counts of readings, changes and failures, and the latest error."""
        self._apply = apply
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zjobs-membership", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._stop.is_set() else "watching"
        return (f"<MembershipWatcher {state} {self.source!r} every {self.interval_s}s "
                f"processors={len(self.tracker.current.requests)}>")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def current(self) -> Members:
        """The set in use."""
        return self.tracker.current

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            change = self.tracker.read(read_members(self.source))
            if change is None or self._stop.is_set():
                continue
            try:
                self._apply(change)
            except Exception:
                log.exception("membership %r: applying %s failed", self.source, change)

    def close(self) -> None:
        """Stop watching (waits for a reading in progress, bounded by the source's own
        timeouts). Idempotent."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
