"""``zjobs keygen``, ``bench`` and ``demo``: CURVE key pairs, the benchmark, a demo system."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import click

import zjobs
from zjobs.cli.app import RET_ERROR, CliError, echo, option
from zjobs.demo import run_demo
from zjobs.transport.security import write_key_pair

# -- keygen -------------------------------------------------------------------------------


@click.command()
@click.argument("name")
@option("--dir", "directory", type=click.Path(file_okay=False), default=".",
        show_default=True, metavar="DIR", help="Folder to write the key files to.")
@option("--force", is_flag=True, help="Overwrite existing key files of that name.")
def keygen(name: str, directory: str, force: bool) -> None:
    """Write a CURVE key pair: NAME.key (public) and NAME.key_secret (secret, mode 0600).

    Give the public file to the other side: a client needs the server's NAME.key
    (--server-key); a server admits the clients whose NAME.key files are in its
    --allow-clients folder (the example writes alice's pair straight there; in practice
    only alice.key is copied to the server). Keep NAME.key_secret where only its owner can
    read it. DIR is created if missing.

    \b
    Example:
      zjobs keygen server --dir keys
      zjobs keygen alice --dir keys/clients
    """
    try:
        public, secret = write_key_pair(name, directory, overwrite=force)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc
    echo(f"public={public} secret={secret}")


# -- bench --------------------------------------------------------------------------------


@click.command()
@option("--quick", is_flag=True, help="A smoke run of a few seconds instead of minutes.")
@option("--rounds", type=click.IntRange(min=1), default=None, metavar="N",
        help="Rounds per figure; the median is shown (default 3, 1 with --quick).")
@option("--long", is_flag=True,
        help="Measure memory growth over 10,000,000 calls instead of 1,000,000.")
@option("--json", "json_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
        help="Also write the results as JSON, to compare runs.")
def bench(quick: bool, rounds: int | None, long: bool, json_path: str | None) -> None:
    """Measure zjobs against a hand-written pyzmq + msgpack loop, in one run.

    Both use the same sockets (PUSH -> PULL, PUB -> SUB) and message layout, with the
    processor in a separate process: the pipelined idioms (a list comprehension of
    200,000 submits, a window of 1,000) and sequential latency over tcp and ipc, asyncio
    (gather and map, against a raw zmq.asyncio loop), sum(client.map(...)) against the raw
    per-message loop, cache hits, a 64 KiB payload, 1 vs 2 processes, and memory (client
    RSS per call in flight, client and processor growth over 1,000,000 calls). Every
    figure with a target says met or missed. Ratios zjobs / raw are what to read: absolute
    numbers depend on the machine. Same as `python benchmarks/run.py`; it needs a source
    checkout (the harness, benchmarks/harness.py, is not installed with the package).

    \b
    Example:
      zjobs bench --quick
      zjobs bench --json results.json
    """
    harness = load_harness(BENCHMARKS)
    settings = harness.Settings.quick() if quick else harness.Settings()
    if long:
        settings.rss_requests = 10_000_000
    if rounds is not None:
        settings.rounds = rounds
    results = harness.run(settings, out=echo)
    if json_path is not None:
        harness.write_json(results, Path(json_path))
        echo(f"results written to {json_path}")


BENCHMARKS = Path(zjobs.__file__).resolve().parent.parent / "benchmarks"
"""Where a source checkout keeps the benchmark harness, next to the package."""


def load_harness(folder: Path) -> ModuleType:
    """Import ``benchmarks/harness.py`` of the source checkout zjobs runs from.

    The folder goes on ``sys.path`` (and so to the processes the harness spawns, which
    import its jobs by module name).

    Raises:
        CliError: no harness there, as when zjobs is installed from a wheel.
    """
    if not (folder / "harness.py").is_file():
        raise CliError(f"zjobs bench needs a source checkout of zjobs: no benchmark harness "
                       f"at {folder / 'harness.py'} (clone the repository and run it there, "
                       "or python benchmarks/run.py)", RET_ERROR)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module("harness")


# -- demo ---------------------------------------------------------------------------------


@click.command()
def demo() -> None:
    """Run a small system of processors in this process and print what flows.

    Three processors serve in threads over inproc: square feeds describe (a chain of two
    jobs), and lookup is a slow job with a cache. Takes well under a second.

    \b
    Example:
      zjobs demo
    """
    run_demo(echo)
