"""The terminal views of a :class:`~zjobs.cli.watch.Watch`, drawn with rich: the one-shot
table of ``zjobs status`` and the live screen of ``zjobs top``."""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from collections.abc import Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group, JustifyMethod
from rich.live import Live
from rich.table import Table
from rich.text import Text

from zjobs.cli.watch import GONE, MISSING, Row, Watch, format_duration, sparkline
from zjobs.wire.heartbeat import RUNNING, STOPPED

__all__ = ["Keys", "print_status", "run_top", "status_table", "top_view"]

_STYLES = {RUNNING: "green", STOPPED: "yellow", GONE: "red", MISSING: "bold red"}
_SPARK_WIDTH = 30


def _rate(row: Row) -> str:
    return "-" if row.requests_per_s is None else f"{row.requests_per_s:.1f}"


def _busy(row: Row) -> str:
    return "-" if row.busy is None else f"{row.busy * 100:.0f}%"


def _seen(row: Row) -> str:
    return "never" if row.last_seen_s is None else f"{row.last_seen_s:.1f}s"


def _where(row: Row) -> str:
    return f"{row.host}:{row.pid}" if row.host or row.pid else row.endpoint


def status_table(rows: Sequence[Row], *, watch: Watch | None = None,
                 title: str | None = None) -> Table:
    """The processors as a table, one row each; with ``watch``, a throughput sparkline."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    columns: list[tuple[str, JustifyMethod]] = [
        ("NAME", "left"), ("INSTANCE", "left"), ("HOST:PID", "left"), ("STATE", "left"),
        ("REQ/S", "right"), ("P50", "right"), ("P99", "right"), ("ERRORS", "right"),
        ("IN FLIGHT", "right"), ("BUSY", "right"), ("LAST SEEN", "right")]
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=True)
    if watch is not None:
        table.add_column("THROUGHPUT", no_wrap=True)
    for row in rows:
        cells: list[str | Text] = [row.name or "?", row.instance[:8], _where(row),
                 Text(row.state, style=_STYLES.get(row.state, "")), _rate(row),
                 format_duration(row.p50_s), format_duration(row.p99_s), str(row.errors),
                 "-" if row.in_flight is None else str(row.in_flight), _busy(row),
                 _seen(row)]
        if watch is not None:
            history = watch.history(row.instance) if row.instance else None
            cells.append(Text(sparkline(history.requests_per_s if history else [],
                                        _SPARK_WIDTH), style="cyan"))
        table.add_row(*cells)
    return table


def print_status(rows: Sequence[Row], console: Console | None = None) -> None:
    """Print the status table (to a pipe or file, at full width: never cut)."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=250)
    console.print(status_table(rows))


def top_view(watch: Watch) -> Group:
    """What ``zjobs top`` shows: a summary line and the live table."""
    rows = watch.rows()
    serving = sum(row.ok for row in rows)
    total = sum(row.requests_per_s or 0.0 for row in rows if row.ok)
    head = Text.assemble(("zjobs top", "bold"),
                         f"  {serving}/{len(rows)} serving  {total:.1f} req/s  "
                         f"heartbeats {watch.monitor.heartbeats}  (q quits)")
    return Group(head, status_table(rows, watch=watch))


class Keys:
    """Single key presses from a terminal, without waiting for Enter (cbreak mode, restored
    on exit); on anything but a terminal, no keys."""

    def __init__(self, stream: TextIO = sys.stdin) -> None:
        self._fd = stream.fileno() if stream.isatty() else None
        self._saved: list[Any] | None = None

    def __enter__(self) -> Keys:
        if self._fd is not None:
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None and self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def pressed(self) -> str:
        """The keys pressed since the last call ("" if none)."""
        if self._fd is None:
            return ""
        keys = ""
        while select.select([self._fd], [], [], 0)[0]:
            data = os.read(self._fd, 64)
            if not data:
                break
            keys += data.decode(errors="replace")
        return keys


def run_top(watch: Watch, console: Console | None = None, *, refresh_s: float = 0.5,
            keys: Keys | None = None) -> None:
    """Show :func:`top_view` full screen, refreshed every ``refresh_s``, until ``q`` (or
    Ctrl-C, which raises KeyboardInterrupt to the caller after the screen is restored)."""
    with keys or Keys() as pressed, Live(top_view(watch), console=console or Console(),
                                         screen=True, auto_refresh=False) as live:
        while "q" not in pressed.pressed().lower():
            watch.poll(refresh_s)
            live.update(top_view(watch), refresh=True)
