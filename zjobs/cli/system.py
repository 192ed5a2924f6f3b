"""``zjobs up``: start the processors and links of a system file, supervised, or check it,
or export it as systemd units."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TextIO

import click

from zjobs.cli.app import LOG_FORMAT, LOG_LEVEL, RET_ERROR, RET_USAGE, CliError, echo, option
from zjobs.cli.logs import child_json_line, configure_logging, json_line
from zjobs.errors import StartError
from zjobs.run.export import write_systemd
from zjobs.run.supervisor import Supervisor
from zjobs.run.system import SystemFileError, load_system, start_system


def _json_echo(text: str, file: TextIO | None = None) -> None:
    """A line of zjobs' own as a JSON log object (``--log-format json``)."""
    echo(json_line(text, level="WARNING" if file is sys.stderr else "INFO"), file)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@option("--check", is_flag=True,
        help="Only validate FILE: report every mistake with its line, start nothing.")
@option("--only", metavar="NAME,...",
        help="Start only these processors and links (on several hosts, each starts its part).")
@option("--export", nargs=2, type=(click.Choice(["systemd"]), click.Path(file_okay=False)),
        metavar="systemd DIR", default=None,
        help="Start nothing: write systemd units for FILE into DIR (one per processor and "
             "link, a template for replicas, SYSTEM.target for all), supervised by systemd.")
@LOG_LEVEL
@LOG_FORMAT
def up(file: str, check: bool, only: str | None, export: tuple[str, str] | None,
       log_level: str, log_format: str) -> None:
    """Start the processors and links described in FILE, supervised, until SIGTERM or Ctrl-C.

    Each processor replica runs as a `zjobs serve` daemon (handed its settings from the
    file), each link as `zjobs link`, in child processes whose output is shown prefixed
    with their name (their logs and errors on stderr, the lines scripts read on stdout).
    A child that dies is restarted with a backoff. Once everything answers it prints where
    everything listens and a line starting with "ready:". SIGTERM or Ctrl-C stops every
    child gracefully and exits with 0. With --check, mistakes are listed as
    FILE:LINE: problem, exit code 2.

    With --export systemd DIR the same processes become systemd units instead (ExecStart
    runs this environment's zjobs); install them with
    cp -r DIR/* /etc/systemd/system/ && systemctl daemon-reload &&
    systemctl enable --now SYSTEM.target.

    \b
    Example:
      zjobs up examples/pipeline/system.toml
      zjobs up --check examples/pipeline/system.toml
      zjobs up --export systemd units/ examples/pipeline/system.toml
    """
    configure_logging(log_level, log_format)
    try:
        system = load_system(file, only=None if only is None else only.split(","))
    except SystemFileError as exc:
        for problem in exc.problems:
            echo(f"Error: {problem}", sys.stderr)
        sys.exit(RET_USAGE)
    if check:
        echo(f"{file}: ok: {len(system.processors)} processor(s), "
             f"{len(system.links)} link(s)")
        return
    if export is not None:
        try:
            written = write_systemd(system, export[1])
        except SystemFileError as exc:
            for problem in exc.problems:
                echo(f"Error: {problem}", sys.stderr)
            sys.exit(RET_USAGE)
        for path in written:
            echo(f"wrote {path}")
        echo(f"install: cp -r {export[1]}/* /etc/systemd/system/ && systemctl daemon-reload "
             f"&& systemctl enable --now {_target_name(written)}")
        return
    say = _json_echo if log_format == "json" else echo  # json: every line an object
    # Children's logs and Error: lines go to stderr, the lines scripts read to stdout.
    if log_format == "text":
        supervisor = Supervisor(out=say, child_err=lambda child, line: echo(
            f"{child} | {line}", sys.stderr))
    else:
        supervisor = Supervisor(
            out=say, child_out=lambda child, line: echo(child_json_line(child, line)),
            child_err=lambda child, line: echo(child_json_line(child, line), sys.stderr))
    previous = {sig: signal.signal(sig, lambda signum, frame: supervisor.request_stop())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    failure: StartError | None = None
    try:
        start_system(system, supervisor, log_format=log_format)
        say(f"ready: {system.name}: {len(supervisor.children)} process(es); "
            "Ctrl-C or SIGTERM stops them")
        supervisor.run()
        say(f"stopping {system.name}")
    except StartError as exc:
        failure = None if supervisor.stop_requested else exc
    finally:
        killed = supervisor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if killed:
        say(f"Warning: {killed} process(es) did not stop within "
            f"{supervisor.stop_timeout_s}s and were killed", sys.stderr)
    if failure is not None:
        raise CliError(str(failure), RET_ERROR)
    say(f"stopped {system.name}")


def _target_name(paths: list[Path]) -> str:
    return next((p.name for p in paths if p.suffix == ".target"), "")
