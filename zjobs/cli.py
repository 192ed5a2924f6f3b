"""The ``zjobs`` command line (a thin click layer over the library)."""

from __future__ import annotations

import click

import zjobs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(zjobs.__version__, prog_name="zjobs")
def main() -> None:
    """zjobs: event-driven jobs over ZeroMQ."""
