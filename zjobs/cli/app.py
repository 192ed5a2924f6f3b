"""The ``zjobs`` click group and what its commands share: exit codes, errors, options, output.

Parse, build settings, configure logging, call the library, map errors to the exit codes
below with a one-line message on stderr. Options may also come from the environment:
``ZJOBS_<COMMAND>_<OPTION>`` (click's convention, e.g. ``ZJOBS_SERVE_REQUESTS``) or, for
every command, ``ZJOBS_<OPTION>`` (e.g. ``ZJOBS_REQUESTS``). The commands live in one
module per family and are registered on :data:`main` in :mod:`zjobs.cli`.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import click

import zjobs
from zjobs.cli.logs import FORMATS
from zjobs.errors import BindError, ConnectError, KeyFileError, LoadError, OptionsError, ZJobsError

RET_OK = 0
"""Success."""
RET_ERROR = 1
"""An error response, a timeout, or a processor that failed while running."""
RET_USAGE = 2
"""Bad input: options, JSON, MODULE:OBJECT, an endpoint that cannot be bound or connected,
a key file that cannot be used."""
RET_INTERRUPTED = 130
"""Stopped by Ctrl-C (SIGINT) while waiting: 128 + 2, as shells report it."""


class CliError(click.ClickException):
    """An error shown as one line on stderr (``Error: ...``), exiting with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = RET_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # a ClassVar in click's stubs


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LoadError, BindError, ConnectError, KeyFileError, OptionsError) as exc:
            raise CliError(str(exc), RET_USAGE) from exc
        except ZJobsError as exc:
            raise CliError(str(exc), RET_ERROR) from exc


class _Option(click.Option):
    """An option that falls back to ``ZJOBS_<NAME>`` after ``ZJOBS_<COMMAND>_<NAME>``."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        value = super().resolve_envvar_value(ctx)
        if value is None and self.allow_from_autoenv and self.name:
            value = os.environ.get(f"ZJOBS_{self.name.upper()}") or None
        return value


option = functools.partial(click.option, cls=_Option)


def renamed(*decls: str, **attrs: Any) -> Callable[[Callable[..., Any]], Any]:
    """A hidden option under a deprecated flag (``--cache``), still read, like its
    environment variable; :func:`take_renamed` merges it into the option's new name."""
    return option(*decls, hidden=True, **attrs)


def take_renamed(old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """The value of an option given by its new or its deprecated name (a warning for the old)."""
    if old_value is None:
        return new_value
    echo(f"Warning: {old} is deprecated; use {new}", sys.stderr)
    if new_value is not None:
        raise CliError(f"{old} and {new} are the same option: give {new} only", RET_USAGE)
    return old_value


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "auto_envvar_prefix": "ZJOBS"})
@click.version_option(zjobs.__version__, "-V", "--version", prog_name="zjobs")
def main() -> None:
    """zjobs: event-driven jobs over ZeroMQ.

    Serve a job as a daemon, call it, watch its responses, check its health. Every option
    can also be set in the environment, as ZJOBS_<COMMAND>_<OPTION> or ZJOBS_<OPTION>
    (for example ZJOBS_SERVE_REQUESTS or ZJOBS_REQUESTS).

    Exit codes: 0 success, 1 error response or timeout, 2 bad input, 130 Ctrl-C.

    \b
    Example:
      zjobs demo
    """


# -- input and output ---------------------------------------------------------------------


def echo(text: str, file: TextIO | None = None) -> None:
    click.echo(text, file=file)
    (file or sys.stdout).flush()


def echo_error(text: str) -> None:
    echo(f"Error: {text}", sys.stderr)


# -- options several commands take --------------------------------------------------------


LOG_FORMAT = option("--log-format", type=click.Choice(FORMATS), default="text",
                    show_default=True,
                    help="Logs as text lines, or as one JSON object per line (time, level, "
                         "logger, message, pid).")


LOG_LEVEL = option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                                    case_sensitive=False),
                   default="INFO", show_default=True, help="Logging level (logs go to stderr).")


class StopFlag:
    """A signal handler that only raises a flag, which the command's main loop polls."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, signum: int, frame: object) -> None:
        self.raised = True
