"""Resources: the mutable things a job needs, created once by whoever runs it and closed after.

A factory is either a plain callable returning the resources (closed by calling their
``close()`` if they have one) or a generator function (or any callable returning a
generator) that yields them once and cleans up after the yield, as pytest fixtures do::

    def open_db():
        conn = sqlite3.connect("results.db")
        try:
            yield conn
        finally:
            conn.close()
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Generator
from typing import Any, TypeAlias, cast

__all__ = ["ResourceFactory", "Resources"]

log = logging.getLogger(__name__)

ResourceFactory: TypeAlias = Callable[[], Any]


class Resources:
    """The opened resources of one processor run: ``value`` while open, then ``close()``."""

    def __init__(self, factory: ResourceFactory | None) -> None:
        self.factory = factory
        self.value: Any = None
        self._generator: Generator[Any, None, None] | None = None
        self._open = False

    def open(self) -> Any:
        """Create the resources by calling the factory; return them."""
        if self.factory is None:
            self._open = True
            return None
        made = self.factory()
        # A generator (from a generator function, or a callable that returns one) yields the
        # resources once and cleans up after the yield.
        if inspect.isgenerator(made):
            self._generator = cast("Generator[Any, None, None]", made)
            self.value = next(made)
        else:
            self.value = made
        self._open = True
        return self.value

    def close(self) -> None:
        """Close the resources once: finish the generator, or call ``close()`` on the value."""
        if not self._open:
            return
        self._open = False
        value, generator = self.value, self._generator
        self.value = self._generator = None
        if generator is not None:
            try:
                next(generator)
            except StopIteration:
                return
            generator.close()
            log.warning("resources factory %r yielded more than once", self.factory)
            return
        close = getattr(value, "close", None)
        if callable(close):
            close()
