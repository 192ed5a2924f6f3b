"""``zjobs status``, ``top`` and ``dashboard``: every processor, from its heartbeats (the
views themselves are :mod:`zjobs.cli.top` and :mod:`zjobs.cli.dashboard`)."""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

import click
import zmq

from zjobs.cli.app import RET_ERROR, RET_USAGE, CliError, StopFlag, echo, echo_error, option
from zjobs.cli.connect import curve_client_options
from zjobs.cli.watch import Expected, Watch, expected_from_system
from zjobs.run.system import SystemFileError, load_system
from zjobs.transport.security import CurveClient
from zjobs.transport.sockets import connectable

_WATCH_OPTIONS = (
    click.argument("system_file", required=False, metavar="[FILE]",
                   type=click.Path(dir_okay=False)),
    option("--responses", multiple=True, metavar="EP",
           help="A processor's response endpoint to watch; repeat, one per processor."),
)


def watch_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add [FILE], --responses and the CURVE options; pass the command ``expected``, one
    entry per processor to watch (from the system file, then the endpoints)."""

    @functools.wraps(command)
    def wrapper(*, system_file: str | None, responses: tuple[str, ...],
                **kwargs: Any) -> Any:
        expected: list[Expected] = []
        if system_file is not None:
            try:
                expected += expected_from_system(load_system(system_file,
                                                             check_imports=False))
            except SystemFileError as exc:
                raise CliError(str(exc), RET_USAGE) from exc
        expected += [Expected(connectable(ep)) for ep in responses]
        if not expected:
            raise CliError("give a system FILE or --responses EP (one per processor)",
                           RET_USAGE)
        return command(expected=expected, **kwargs)

    outer = curve_client_options(wrapper)
    for add in reversed(_WATCH_OPTIONS):
        outer = add(outer)
    return outer


def _watch(expected: list[Expected], security: CurveClient | None,
           context: zmq.Context[zmq.Socket[bytes]]) -> Watch:
    try:
        return Watch(expected, context=context, security=security)
    except ValueError as exc:
        raise CliError(str(exc), RET_USAGE) from exc


@click.command()
@watch_options
@option("--json", "as_json", is_flag=True, help="Print the rows as a JSON array instead.")
@option("--wait", type=click.FloatRange(min=0), default=3.0, show_default=True, metavar="S",
        help="Seconds to wait for a heartbeat from every processor.")
def status(expected: list[Expected], as_json: bool, wait: float,
           security: CurveClient | None) -> None:
    """Show every processor once, from its heartbeats: one row each.

    Rows: name, instance, host:pid, state, requests/s and p50/p99 job duration over the
    last heartbeat interval, errors (failed + expired + bad requests), requests in flight,
    busy (share of the interval spent in jobs), last heartbeat. Watches the processors of a
    system FILE (each replica) and/or the --responses endpoints. Exits with 1 when one of
    them is missing (no heartbeat within --wait), stopped or gone.

    \b
    Examples:
      zjobs status examples/pipeline/system.toml
      zjobs status --responses tcp://127.0.0.1:5556 --json
    """
    from zjobs.cli.top import print_status  # rich loads only for the commands that draw

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with _watch(expected, security, context) as watch:
            watch.wait_heard(wait)
            rows = watch.rows()
            problems = watch.problems()
    finally:
        context.term()
    if as_json:
        echo(json.dumps([row.as_json() for row in rows]))
    else:
        print_status(rows)
    for problem in problems:
        echo_error(problem)
    if problems:
        sys.exit(RET_ERROR)


@click.command()
@watch_options
@option("--refresh", type=click.FloatRange(min=0.05), default=0.5, show_default=True,
        metavar="S", help="Seconds between screen refreshes.")
def top(expected: list[Expected], refresh: float, security: CurveClient | None) -> None:
    """Show every processor live, from its heartbeats, busiest first; q or Ctrl-C quits.

    The columns are those of zjobs status, plus a sparkline of each processor's throughput
    (one point per heartbeat). Watches the processors of a system FILE and/or the
    --responses endpoints.

    \b
    Examples:
      zjobs top examples/pipeline/system.toml
      zjobs top --responses tcp://127.0.0.1:5556 --responses tcp://127.0.0.1:5558
    """
    from zjobs.cli.top import run_top  # rich loads only for the commands that draw

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with _watch(expected, security, context) as watch:
            run_top(watch, refresh_s=refresh)
    except KeyboardInterrupt:
        pass
    finally:
        context.term()


@click.command()
@watch_options
@option("--http", "address", default="127.0.0.1:8765", show_default=True, metavar="HOST:PORT",
        help="Where to serve the page (port 0 picks one; 0.0.0.0 for every interface).")
def dashboard(expected: list[Expected], address: str, security: CurveClient | None) -> None:
    """Serve a web page of every processor, live, from its heartbeats, until Ctrl-C.

    Each processor gets a card with its state, requests/s, p50/p99 job duration, errors
    and requests in flight, and plots of throughput, latency and errors that update every
    second without a reload. The page is self-contained (no internet needed). Once serving
    it prints one line: dashboard http://HOST:PORT/

    \b
    Examples:
      zjobs dashboard examples/pipeline/system.toml
      zjobs dashboard --responses tcp://127.0.0.1:5556 --http 0.0.0.0:8765
    """
    from zjobs.cli.dashboard import Dashboard

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    stop = StopFlag()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with _watch(expected, security, context) as watch:
            try:
                page = Dashboard(address)
            except ValueError as exc:
                raise CliError(str(exc), RET_USAGE) from exc
            with page:
                echo(f"dashboard {page.url}")
                while not stop.raised:
                    watch.poll(0.25)
                    page.update(watch)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        context.term()
