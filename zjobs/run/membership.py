"""A system file as a membership source: its processors' endpoints, read again when it changes.

Edit the file (add a replica, move a processor to another host), and every client watching
it connects to the new endpoints and drops the removed ones, without a restart. Wildcard
hosts (``tcp://*:5555``) are reached on loopback, as ``zjobs up`` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from zjobs.core.membership import Members
from zjobs.errors import MembershipError
from zjobs.run.system import SystemFileError, load_system
from zjobs.transport.sockets import connectable

__all__ = ["SystemFileMembership"]


class SystemFileMembership:
    """The endpoints of some processors of a system file (every replica of each).

    Args:
        path: the system file.
        processors: the keys of the processors (``[processors.KEY]``) to call; requests go
            to all of them, load balanced, and responses come from all of them.

    The file is parsed again only when its modification time or size changed; its job
    references are not imported (the code may live on other hosts).
    """

    def __init__(self, path: str | Path, processors: str | Iterable[str]) -> None:
        self.path = Path(path)
        self.processors = [processors] if isinstance(processors, str) else list(processors)
        if not self.processors:
            raise ValueError("name at least one processor of the system file")
        self._stamp: tuple[int, int] | None = None
        self._members: Members | None = None

    def __repr__(self) -> str:
        return f"<SystemFileMembership {str(self.path)!r} processors={self.processors}>"

    def members(self) -> Members:
        """The named processors' endpoints, as the file says now.

        Raises:
            MembershipError: the file cannot be read or is invalid, or does not declare a
                named processor.
        """
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise MembershipError(str(self.path), f"cannot read: {exc.strerror}") from exc
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp and self._members is not None:
            return self._members
        try:
            system = load_system(self.path, check_imports=False)
        except SystemFileError as exc:
            raise MembershipError(str(self.path), str(exc.problems[0])) from exc
        requests: list[str] = []
        responses: list[str] = []
        for key in self.processors:
            spec = system.processors.get(key)
            if spec is None:
                raise MembershipError(str(self.path), f"no processor {key!r} (declared: "
                                                      f"{', '.join(sorted(system.processors))})")
            requests += map(connectable, spec.requests)
            responses += map(connectable, spec.responses)
        self._stamp, self._members = stamp, Members(requests, responses)
        return self._members
