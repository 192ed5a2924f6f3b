"""``zjobs send``, ``ping`` and ``listen``: call processors, check them, watch their
responses."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click
import zmq

from zjobs.cli import console
from zjobs.cli.app import (
    RET_ERROR,
    RET_INTERRUPTED,
    RET_OK,
    RET_USAGE,
    CliError,
    echo,
    echo_error,
    option,
)
from zjobs.cli.connect import (
    Target,
    call_options,
    check_connectable,
    client_options,
    curve_client_options,
)
from zjobs.client.sync import Client
from zjobs.core.options import DEFAULT_MAX_MESSAGE_SIZE
from zjobs.errors import ZJobsError
from zjobs.transport.receiver import ZmqReceiver
from zjobs.transport.security import CurveClient
from zjobs.transport.sockets import connectable
from zjobs.wire.codec import encode
from zjobs.wire.jsonvalues import from_json


def _interrupted(what: str) -> NoReturn:
    """Ctrl-C ended a wait: say what was interrupted and exit 130, as shells expect."""
    echo(f"interrupted {what}", sys.stderr)
    sys.exit(RET_INTERRUPTED)


def _warn_if_too_large(value: Any) -> None:
    """A request larger than processors accept by default is never answered: say so."""
    try:
        size = len(encode(value))
    except ZJobsError:
        return  # the send itself reports it
    if size > DEFAULT_MAX_MESSAGE_SIZE:
        echo(f"Warning: the request is {size} bytes, more than {DEFAULT_MAX_MESSAGE_SIZE} "
             "(the largest request frame a processor accepts unless served with a larger "
             "--max-message-size): a smaller limit drops the connection, and the request "
             "gets no answer", sys.stderr)


def parse_payload(text: str, where: str) -> Any:
    """The msgpack value a JSON text stands for (reversible JSON form accepted).

    Raises:
        CliError: invalid JSON (exit code 2), naming ``where`` it came from.
    """
    try:
        return from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise CliError(f"{where}: invalid JSON: {exc}", RET_USAGE) from exc
    except ValueError as exc:
        raise CliError(f"{where}: {exc}", RET_USAGE) from exc


class _Connected:
    """A client on a private context, closed (and the context terminated) on exit."""

    def __init__(self, target: Target) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            self.client = target.client(self.context)
        except BaseException:
            self.context.destroy(linger=0)
            raise

    def __enter__(self) -> Client:
        return self.client

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            self.client.close()
        except Exception:
            if kind is None or not issubclass(kind, KeyboardInterrupt):
                raise
            # A Ctrl-C can land anywhere inside the client and leave it unable to close
            # cleanly; the process is ending: close every socket of the private context.
            self.context.destroy(linger=0)
            return
        self.context.term()


# -- send ---------------------------------------------------------------------------------


def _stdin_values() -> Iterator[Any]:
    for number, line in enumerate(sys.stdin, start=1):
        if line.strip():
            value = parse_payload(line, f"stdin line {number}")
            _warn_if_too_large(value)
            yield value


@click.command()
@client_options
@option("--count", type=click.IntRange(min=1), metavar="N",
        help="Send PAYLOAD N times and print a summary instead of the responses.")
@option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
        help="Requests in flight at once.")
@option("--retries", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
        help="Send a request again, with the same id, after each --timeout without an "
             "answer, up to N times (processors answer a repeat from their replay window "
             "instead of running the job twice).")
@option("--json", "as_json", is_flag=True,
        help="With --count: print the summary as one JSON object.")
@click.argument("payload", required=False)
def send(target: Target, count: int | None, concurrency: int, retries: int, as_json: bool,
         payload: str | None) -> None:
    """Send requests and print each response as one JSON line.

    PAYLOAD is a JSON value; without it, one JSON value per line is read from stdin.
    Bytes are written {"$bytes": "<base64>"} both ways (see the README). Exits with 1
    when a response is an error or does not come in time (the reason goes to stderr).

    With --count N the payload is sent N times, --concurrency K at a time, and a summary
    is printed (count, errors, requests per second, latency p50/p99; --json for JSON).
    Ctrl-C stops it, prints the summary so far and exits with 130.

    \b
    Examples:
      zjobs send --requests tcp://127.0.0.1:5555 --responses tcp://127.0.0.1:5556 7
      printf '1\\n2\\n3\\n' | zjobs send --requests tcp://127.0.0.1:5555 \\
          --responses tcp://127.0.0.1:5556
      zjobs send --requests tcp://127.0.0.1:5555 --responses tcp://127.0.0.1:5556 \\
          --count 10000 --concurrency 100 7
    """
    value = parse_payload(payload, "PAYLOAD") if payload is not None else None
    if count is not None and payload is None:
        raise CliError("--count needs a PAYLOAD to repeat", RET_USAGE)
    if payload is not None:
        _warn_if_too_large(value)
    target = dataclasses.replace(target, options=call_options(target.options.timeout_s,
                                                              retries))
    code = RET_OK
    waiting = True
    try:
        with _Connected(target) as client:
            client.wait_ready()
            waiting = False
            if count is not None:
                code = _send_repeatedly(client, value, count, concurrency, as_json)
            else:
                values = iter([value]) if payload is not None else _stdin_values()
                ok = console.send_each(client, values, concurrency=concurrency,
                                       timeout_s=target.options.timeout_s, write=echo,
                                       error=echo_error)
                code = RET_OK if ok else RET_ERROR
    except KeyboardInterrupt:
        _interrupted("while waiting for the processor(s) to answer a ping" if waiting
                     else "while sending")
    if code != RET_OK:
        sys.exit(code)


def _send_repeatedly(client: Client, value: Any, count: int, concurrency: int,
                     as_json: bool) -> int:
    """Send ``value`` ``count`` times (a progress bar on a terminal); print a summary and
    return the exit code."""
    bar = (click.progressbar(length=count, label="sending", file=sys.stderr)
           if sys.stderr.isatty() else None)
    try:
        summary = console.send_repeatedly(
            client, value, count, concurrency=concurrency,
            on_sent=None if bar is None else functools.partial(bar.update, 1))
    finally:
        if bar is not None:
            bar.render_finish()
    echo(console.json_line(summary.as_dict()) if as_json else summary.line())
    failure = summary.failure()
    if summary.interrupted:
        echo(failure or "interrupted", sys.stderr)
        return RET_INTERRUPTED
    if failure is not None:
        echo_error(failure)
    return RET_OK if summary.ok else RET_ERROR


# -- ping ---------------------------------------------------------------------------------


@click.command()
@client_options
@option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def ping(target: Target, as_json: bool) -> None:
    """Check that processors answer: exit 0 and print the round-trip time, or exit 1.

    With several --requests endpoints every processor must answer. Suitable as a
    container health check (wildcard hosts such as tcp://*:5555 are reached on loopback).
    Ctrl-C while waiting exits with 130.

    \b
    Example:
      zjobs ping --requests tcp://127.0.0.1:5555 --responses tcp://127.0.0.1:5556
    """
    try:
        with _Connected(target) as client:
            client.wait_ready()
            rtt = client.ping()
    except KeyboardInterrupt:
        _interrupted(f"while waiting for a pong from {len(target.requests)} processor(s)")
    if as_json:
        echo(console.json_line({"rtt_ms": round(rtt * 1000, 3),
                                "processors": client.expect_processors}))
    else:
        echo(f"pong rtt_ms={rtt * 1000:.3f} processors={client.expect_processors}")


# -- listen -------------------------------------------------------------------------------


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum: int, frame: object) -> NoReturn:
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # once: cleanup is not interrupted
        signal.signal(stop_signal, signal.SIG_IGN)
    raise _Interrupted


@click.command()
@option("--responses", multiple=True, required=True, metavar="EP",
        help="A processor's response endpoint; repeat to listen to several.")
@option("--topic", multiple=True, metavar="T",
        help="Only responses whose topic starts with T; repeat for more [default: all].")
@option("--count", type=click.IntRange(min=1), metavar="N", help="Exit after N responses.")
@option("--pongs", is_flag=True, help="Also show pongs (answers to readiness pings).")
@curve_client_options
def listen(responses: tuple[str, ...], topic: tuple[str, ...], count: int | None,
           pongs: bool, security: CurveClient | None) -> None:
    """Print the responses of processors as JSON lines, until Ctrl-C.

    Every response published is shown, whoever sent the request: this is how to watch an
    event-driven system. Each line has id, status, cached, processor, instance, meta and
    value (or error); bytes are written {"$bytes": "<base64>"}.

    \b
    Example:
      zjobs listen --responses tcp://127.0.0.1:5556
    """
    check_connectable(responses)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    # Installed even where SIGINT was inherited as ignored (a background job of a script),
    # like serve does: listening stops on Ctrl-C or SIGTERM, nothing else.
    previous = {signum: signal.signal(signum, _raise_interrupted)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ZmqReceiver([connectable(ep) for ep in responses], topics=topic or ("",),
                         context=context, security=security) as receiver:
            console.listen(receiver, echo, count=count, pongs=pongs)
    except _Interrupted:
        pass
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python's final
        # flush of stdout from complaining.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        context.term()
