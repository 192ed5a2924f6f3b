"""The ``zjobs`` command line: a thin click layer over the library."""

from zjobs.cli.commands import main

__all__ = ["main"]
