"""Membership: which processors a client talks to, as a set that may change while it runs.

A :class:`Membership` is anything with a ``members()`` method returning the current
:class:`Members` (request and response endpoints). Sources: :class:`StaticMembership` (a
fixed list, today's behaviour), :class:`~zjobs.transport.dns.DnsMembership` (A/AAAA or SRV
records) and :class:`~zjobs.run.membership.SystemFileMembership` (a system file).

:class:`MembershipTracker` holds the one decision both watchers (a thread for
:class:`~zjobs.Client`, a task for asyncio) make after each reading, transport-free: apply
a new set, ignore an unchanged one, and when a reading fails (a name that stops resolving,
a DNS server that does not answer, a file that no longer parses) **keep the last known set**
and count the failure. Keeping it is the safe side: a processor that really went away is
dropped by its connection's heartbeats and its calls are retried, while dropping every
processor on a transient DNS failure would stop all work. Only the first reading, with no
set to keep, raises: :meth:`Client.connect <zjobs.Client.connect>` fails with
:class:`~zjobs.errors.MembershipError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from zjobs.errors import MembershipError

__all__ = ["Members", "Membership", "MembershipTracker", "StaticMembership"]

log = logging.getLogger(__name__)


def _endpoints(endpoints: str | Iterable[str]) -> tuple[str, ...]:
    items = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    # Sorted and unique: two readings of the same set compare equal whatever the order.
    return tuple(sorted(set(items)))


@dataclass(frozen=True, slots=True, init=False)
class Members:
    """The endpoints of the processors visible now: where requests go (their PULL sockets)
    and where responses come from (their PUB sockets). Sorted, without duplicates."""

    requests: tuple[str, ...]
    responses: tuple[str, ...]

    def __init__(self, requests: str | Iterable[str], responses: str | Iterable[str]) -> None:
        object.__setattr__(self, "requests", _endpoints(requests))
        object.__setattr__(self, "responses", _endpoints(responses))

    def __bool__(self) -> bool:
        return bool(self.requests) or bool(self.responses)


@runtime_checkable
class Membership(Protocol):
    """A source of the current set of processors, read again by a watcher every few seconds.

    ``members()`` must return within a bounded time (DNS queries have timeouts) and raise
    :class:`~zjobs.errors.MembershipError` when it cannot tell the set (the watcher then
    keeps the last one); it is called from one thread at a time.
    """

    def members(self) -> Members:
        """The endpoints visible now."""
        ...


class StaticMembership:
    """A fixed set of endpoints: what ``Client.connect(requests, responses)`` always had."""

    def __init__(self, requests: str | Iterable[str], responses: str | Iterable[str]) -> None:
        self._members = Members(requests, responses)

    def __repr__(self) -> str:
        return (f"<StaticMembership requests={list(self._members.requests)} "
                f"responses={list(self._members.responses)}>")

    def members(self) -> Members:
        """Always the same endpoints."""
        return self._members


class MembershipTracker:
    """What a watcher does with each reading of a source (shared by the sync and asyncio
    watchers; no threads, no sockets).

    Args:
        source: named in log lines.
        current: the set in use (the first reading, applied at connect).
    """

    def __init__(self, source: object, current: Members) -> None:
        self.source = source
        self.current = current
        self.readings = 0
        """Readings taken since the first (successful or not)."""
        self.changes = 0
        """Readings that changed the set (each one applied)."""
        self.failures = 0
        """Readings that failed; the last known set was kept."""
        self.last_error: MembershipError | None = None
        """The error of the latest reading, None once a reading succeeds again."""

    def read(self, reading: Members | MembershipError) -> Members | None:
        """The set to apply after ``reading``, or None to keep the current one."""
        self.readings += 1
        if isinstance(reading, Members) and not reading:
            # Nothing at all is treated as a failed reading, never as "drop everybody".
            reading = MembershipError(str(self.source), "no processors found")
        if isinstance(reading, MembershipError):
            if self.last_error is None or str(self.last_error) != str(reading):
                log.warning("membership %r: %s; keeping the last known %d processor(s)",
                            self.source, reading, len(self.current.requests))
            self.failures += 1
            self.last_error = reading
            return None
        if self.last_error is not None:
            log.info("membership %r: resolving again", self.source)
            self.last_error = None
        if reading == self.current:
            return None
        log.info("membership %r: %d -> %d processor(s): requests %s", self.source,
                 len(self.current.requests), len(reading.requests), list(reading.requests))
        self.changes += 1
        self.current = reading
        return reading
