"""The ``zjobs`` command line (a thin click layer over the library).

Parse, build settings, configure logging, call the library, map errors to the exit codes
below with a one-line message on stderr. Options may also come from the environment:
``ZJOBS_<COMMAND>_<OPTION>`` (click's convention, e.g. ``ZJOBS_SERVE_REQUESTS``) or, for
every command, ``ZJOBS_<OPTION>`` (e.g. ``ZJOBS_REQUESTS``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TextIO

import click
import zmq

import zjobs
from zjobs.cli import console
from zjobs.cli.logs import FORMATS, child_json_line, configure_logging, json_line
from zjobs.cli.watch import Expected, Watch, expected_from_system
from zjobs.client.sync import Client
from zjobs.client.watcher import MembershipWatcher
from zjobs.compose.link import Link
from zjobs.core.membership import Membership
from zjobs.core.options import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ClientOptions,
    Keepalive,
    ProcessorOptions,
    option_names,
)
from zjobs.demo import run_demo
from zjobs.errors import (
    BindError,
    ConnectError,
    KeyFileError,
    LoadError,
    OptionsError,
    StartError,
    ZJobsError,
)
from zjobs.processor.base import Endpoints
from zjobs.run.daemon import Daemon, ServedProcessor, ServeSettings
from zjobs.run.export import write_systemd
from zjobs.run.loader import add_app_dir, load_callable
from zjobs.run.supervisor import LIFELINE_ENV, Supervisor, watch_lifeline
from zjobs.run.system import (
    LINK_READY,
    SERVE_READY,
    SERVE_SETTINGS_COMMAND,
    SystemFileError,
    load_system,
    start_system,
)
from zjobs.transport.receiver import ZmqReceiver
from zjobs.transport.security import CurveClient, CurveServer, write_key_pair
from zjobs.transport.sockets import check_resolvable, connectable, is_dns_endpoint
from zjobs.wire.codec import encode
from zjobs.wire.jsonvalues import from_json

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
    _echo(f"Warning: {old} is deprecated; use {new}", sys.stderr)
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


def _echo(text: str, file: TextIO | None = None) -> None:
    click.echo(text, file=file)
    (file or sys.stdout).flush()


def _json_echo(text: str, file: TextIO | None = None) -> None:
    """A line of zjobs' own as a JSON log object (``--log-format json``)."""
    _echo(json_line(text, level="WARNING" if file is sys.stderr else "INFO"), file)


def _echo_error(text: str) -> None:
    _echo(f"Error: {text}", sys.stderr)


def _interrupted(what: str) -> NoReturn:
    """Ctrl-C ended a wait: say what was interrupted and exit 130, as shells expect."""
    _echo(f"interrupted {what}", sys.stderr)
    sys.exit(RET_INTERRUPTED)


def _warn_if_too_large(value: Any) -> None:
    """A request larger than processors accept by default is never answered: say so."""
    try:
        size = len(encode(value))
    except ZJobsError:
        return  # the send itself reports it
    if size > DEFAULT_MAX_MESSAGE_SIZE:
        _echo(f"Warning: the request is {size} bytes, more than {DEFAULT_MAX_MESSAGE_SIZE} "
              "(the largest request frame a processor accepts unless served with a larger "
              "--max-message-size): a smaller limit drops the connection, and the request "
              "gets no answer", sys.stderr)


def _check_connectable(endpoints: tuple[str, ...]) -> None:
    """Fail at once, with exit code 2, for an endpoint whose host does not resolve (libzmq
    would retry it silently until the timeout)."""
    for endpoint in endpoints:
        check_resolvable(connectable(endpoint))


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


# -- client connection options ------------------------------------------------------------


def call_options(timeout_s: float, retries: int = 0) -> ClientOptions:
    """The :class:`~zjobs.ClientOptions` of client commands, from their flags: ``--timeout``
    bounds the readiness handshake, each attempt, and each send's wait for room alike;
    ``--retries`` (``send``) is the number of resends."""
    return ClientOptions(timeout_s=timeout_s, ready_timeout_s=timeout_s,
                         send_timeout_s=timeout_s, retries=retries)


@dataclass(frozen=True, slots=True)
class Target:
    """Where client commands connect, and how they call (built from the flags)."""

    requests: tuple[str, ...]
    responses: tuple[str, ...]
    options: ClientOptions
    security: CurveClient | None = None
    dns_server: str | None = None

    def check(self) -> None:
        """Refuse, with exit code 2, what would only show as a timeout later: unpaired
        endpoints and host names that do not resolve. (A dns:// or srv:// name stands for
        any number of processors, so those need not pair up.)"""
        dns = any(is_dns_endpoint(ep) for ep in self.requests + self.responses)
        if not dns and len(self.requests) != len(self.responses):
            raise CliError(f"{len(self.requests)} --requests but {len(self.responses)} "
                           "--responses: give one of each per processor", RET_USAGE)
        _check_connectable(self.requests + self.responses)

    def client(self, context: zmq.Context[zmq.Socket[bytes]]) -> Client:
        """A connected client (readiness handshake not yet done); DNS endpoints are
        resolved now and watched while it runs."""
        requests = [connectable(ep) for ep in self.requests]
        responses = [connectable(ep) for ep in self.responses]
        membership = _dns_membership(requests, responses, self.dns_server)
        if membership is None:
            return Client.connect(requests, responses, context=context,
                                  security=self.security, options=self.options)
        return Client.connect(membership=membership, context=context, security=self.security,
                              options=self.options)


_SERVER = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>\d+))?$")


def _dns_membership(requests: list[str], responses: list[str],
                    server: str | None) -> Membership | None:
    """A DNS membership when an endpoint is dns:// or srv://; None for plain endpoints."""
    if not any(is_dns_endpoint(ep) for ep in (*requests, *responses)):
        if server is not None:
            raise CliError("--dns-server needs a dns://NAME:PORT or srv://NAME endpoint",
                           RET_USAGE)
        return None
    # Here, not at the top: dnspython takes ~0.1 s to import, paid only by DNS endpoints
    # (`zjobs ping` runs as a health probe every few seconds).
    from zjobs.transport.dns import DnsMembership

    nameservers, port = None, 53
    if server is not None:
        match = _SERVER.match(server)
        if match is None:
            raise CliError(f"--dns-server {server!r}: expected ADDR, ADDR:PORT or [ADDR]:PORT",
                           RET_USAGE)
        nameservers = [match.group("v6") or match.group("host")]
        port = int(match.group("port") or 53)
    try:
        return DnsMembership(requests, responses, nameservers=nameservers, port=port)
    except ValueError as exc:
        raise CliError(str(exc), RET_USAGE) from exc


_DNS_SERVER = option(
    "--dns-server", metavar="ADDR[:PORT]",
    help="The DNS server for dns:// and srv:// endpoints (IPv6: [ADDR]:PORT) "
         "[default: those of /etc/resolv.conf].")

_CLIENT_OPTIONS = (
    option("--requests", multiple=True, required=True, metavar="EP",
           help="A processor's request endpoint; repeat to load-balance over several. "
                "dns://NAME:PORT (every A/AAAA record) or srv://NAME (SRV records) "
                "stands for all the processors behind a name, read again every 5 s."),
    option("--responses", multiple=True, required=True, metavar="EP",
           help="A processor's response endpoint; repeat, one per processor (dns:// and "
                "srv:// as for --requests)."),
    _DNS_SERVER,
    option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
           show_default=True, metavar="S",
           help="Seconds to wait for the processor(s), and for each response."),
)

_CURVE_CLIENT_OPTIONS = (
    option("--server-key", metavar="FILE",
           help="The server's public key file (NAME.key): encrypt with CURVE."),
    option("--secret-key", metavar="FILE",
           help="This client's secret key file (NAME.key_secret), for servers that only "
                "admit known clients [default: a throwaway key pair]."),
)


def curve_client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --server-key and --secret-key to a command, passed to it as ``security``."""

    @functools.wraps(command)
    def wrapper(*, server_key: str | None, secret_key: str | None, **kwargs: Any) -> Any:
        if server_key is None:
            if secret_key is not None:
                raise CliError("--secret-key needs --server-key (the server's public key "
                               "file)", RET_USAGE)
            return command(security=None, **kwargs)
        return command(security=CurveClient(server_key, secret_key), **kwargs)

    for add in reversed(_CURVE_CLIENT_OPTIONS):
        wrapper = add(wrapper)
    return wrapper


def client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the connection options to a command, passed to it as ``target``."""

    @functools.wraps(command)
    def wrapper(*, requests: tuple[str, ...], responses: tuple[str, ...], timeout: float,
                security: CurveClient | None, dns_server: str | None,
                **kwargs: Any) -> Any:
        target = Target(requests, responses, call_options(timeout), security, dns_server)
        target.check()
        return command(target=target, **kwargs)

    outer = curve_client_options(wrapper)  # innermost, so listed after the others
    for add in reversed(_CLIENT_OPTIONS):
        outer = add(outer)
    return outer


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


# -- serve --------------------------------------------------------------------------------


_LOG_FORMAT = option("--log-format", type=click.Choice(FORMATS), default="text",
                     show_default=True,
                     help="Logs as text lines, or as one JSON object per line (time, level, "
                          "logger, message, pid).")


def _stop_with_supervisor(stop: Callable[[], object]) -> None:
    """Under ``zjobs up``: call ``stop`` once the supervisor is gone (see its lifeline)."""
    fd = os.environ.pop(LIFELINE_ENV, None)
    if fd is None:
        return
    try:
        watch_lifeline(int(fd), stop)
    except ValueError as exc:
        raise CliError(f"{LIFELINE_ENV}={fd!r}: {exc}", RET_USAGE) from exc


_DEFAULTS = ProcessorOptions()


def _default(name: str) -> str:
    """How the default of processor option ``name`` is shown in --help."""
    value = getattr(_DEFAULTS, name)
    return "none" if value is None else str(value)


def _keepalive(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """--keepalive: IDLE_S,INTERVAL_S,COUNT[,ZMTP_INTERVAL_MS[,ZMTP_TIMEOUT_MS]] as a
    Keepalive (its fields in order), off as None."""
    if value is None or value.lower() == "off":
        return None
    try:
        return Keepalive(*(int(part) for part in value.split(",")))
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(f"{value!r} is not IDLE_S,INTERVAL_S,COUNT"
                                 "[,ZMTP_INTERVAL_MS[,ZMTP_TIMEOUT_MS]] or off",
                                 ctx, param) from exc


_SERVE_OPTIONS = (
    option("--requests", required=True, metavar="EP",
           help="Endpoint to bind for requests, e.g. tcp://*:5555 (tcp://127.0.0.1:* picks a "
                "port)."),
    option("--responses", required=True, metavar="EP",
           help="Endpoint to bind for responses, e.g. tcp://*:5556."),
    option("--name", metavar="NAME", help="Processor name in responses [default: the job's "
                                          "name]."),
    option("--resources", metavar="MODULE:FACTORY",
           help="Factory of the job's resources (a function, or a generator that yields once)."),
    option("--cache-size", type=click.IntRange(min=0), metavar="SIZE",
           help=f"Cache up to SIZE responses in memory (0: no cache) "
                f"[default: {_default('cache_size')}]."),
    renamed("--cache", type=click.IntRange(min=0), metavar="SIZE"),
    option("--concurrency", type=click.IntRange(min=1), metavar="N",
           help="Requests in flight at once. Async jobs (async def run) are detected and "
                "served on an event loop [default for them: 100]; a sync job given N runs in N "
                "threads (its resources must be thread-safe) [default for it: one at a time]."),
    option("--threads", is_flag=True,
           help="Run an async job's sync methods (e.g. get_cache) in the pool of "
                "--concurrency threads instead of on the event loop."),
    option("--dedup-size", type=click.IntRange(min=0), metavar="N",
           help=f"Responses kept to answer a retried request id without running the job "
                f"again (0: no replay window) [default: {_default('dedup_size')}]."),
    option("--dedup-ttl-s", type=click.FloatRange(min=0), metavar="S",
           help=f"Seconds a retried request id is answered from the replay window "
                f"[default: {_default('dedup_ttl_s')}]."),
    renamed("--dedup-ttl", type=click.FloatRange(min=0), metavar="S"),
    option("--heartbeat-interval-s", type=click.FloatRange(min=0), metavar="S",
           help=f"Seconds between heartbeats on the reserved topic (0: none) "
                f"[default: {_default('heartbeat_interval_s')}]."),
    renamed("--heartbeat-interval", type=click.FloatRange(min=0), metavar="S"),
    option("--max-message-size", type=click.IntRange(min=-1), metavar="BYTES",
           help=f"Largest request frame accepted (-1: no limit) "
                f"[default: {_default('max_message_size')}]."),
    option("--rcvhwm", type=click.IntRange(min=0), metavar="N",
           help=f"Requests queued before senders are held back (0: no limit) "
                f"[default: {_default('rcvhwm')}]."),
    option("--sndhwm", type=click.IntRange(min=0), metavar="N",
           help=f"Responses queued per subscriber before they are dropped for it (0: no "
                f"limit) [default: {_default('sndhwm')}]."),
    option("--linger-ms", type=click.IntRange(min=-1), metavar="MS",
           help=f"How long responses may still flush after the sockets close (-1: until sent) "
                f"[default: {_default('linger_ms')}]."),
    option("--keepalive", callback=_keepalive, metavar="IDLE,INTERVAL,COUNT|off",
           help="TCP keepalive on both sockets: seconds idle before the first probe, seconds "
                "between probes, unanswered probes that drop a connection (then, optionally, "
                "ZMTP heartbeats on the PUB socket: INTERVAL_MS,TIMEOUT_MS); off: the "
                "kernel's defaults [default: 5,1,5]."),
    option("--metrics", metavar="HOST:PORT",
           help="Serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one; the "
                "log says which). Needs the extra: pip install 'zjobs[metrics]'."),
    option("--batch-max", type=click.IntRange(min=0), metavar="N",
           help=f"Most values taken in one batch request (ZJP/1's batch extension, "
                f"advertised in pongs; 0: refuse batches) [default: {_default('batch_max')}]."),
)


def serve_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the processor options to ``serve``; the command gets them as ``options``
    (a :class:`~zjobs.ProcessorOptions`) and ``resources``."""

    @functools.wraps(command)
    def wrapper(*, resources: str | None, threads: bool, cache: int | None,
                dedup_ttl: float | None, heartbeat_interval: float | None,
                **given: Any) -> Any:
        given["cache_size"] = take_renamed("--cache", "--cache-size", cache,
                                           given["cache_size"])
        given["dedup_ttl_s"] = take_renamed("--dedup-ttl", "--dedup-ttl-s", dedup_ttl,
                                            given["dedup_ttl_s"])
        interval = take_renamed("--heartbeat-interval", "--heartbeat-interval-s",
                                heartbeat_interval, given["heartbeat_interval_s"])
        given["heartbeat_interval_s"] = interval
        extra = {k: given.pop(k) for k in list(given) if k not in option_names()}
        fields = {k: v for k, v in given.items() if v is not None}
        if interval == 0:
            fields["heartbeat_interval_s"] = None
        if "keepalive" in _given_params():  # given as off: None, which is not "not given"
            fields["keepalive"] = given["keepalive"]
        if threads:
            fields["threads"] = True
        return command(options=ProcessorOptions(**fields), resources=resources, **extra)

    outer = wrapper
    for add in reversed(_SERVE_OPTIONS):
        outer = add(outer)
    return outer


def _given_params() -> set[str]:
    """The parameters of the running command given on the command line or environment."""
    ctx = click.get_current_context()
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)}


def _serve(settings: ServeSettings, log_level: str, log_format: str, app_dir: str) -> None:
    """What ``serve`` and the processor children of ``up`` run: the daemon, printing the
    endpoints and instance once bound, stopping when ``zjobs up`` is gone."""
    configure_logging(log_level, log_format)
    add_app_dir(app_dir)

    def ready(processor: ServedProcessor) -> None:
        ep = processor.endpoints
        _echo(f"{SERVE_READY}requests={ep.requests} responses={ep.responses} "
              f"name={processor.name} instance={processor.instance}")

    daemon = Daemon(settings, handle_signals=True)
    _stop_with_supervisor(lambda: daemon.request_stop("supervisor gone"))
    try:
        daemon.run(on_ready=ready)
    except ImportError as exc:  # the metrics extra
        raise CliError(str(exc), RET_USAGE) from exc
    except ValueError as exc:  # a malformed metrics address (OptionsError is one too)
        raise CliError(str(exc), RET_USAGE) from exc


_APP_DIR = option("--app-dir", type=click.Path(file_okay=False), default=".",
                  show_default=True, metavar="DIR", help="Folder to import MODULE from.")


@main.command()
@click.argument("job", metavar="MODULE:OBJECT")
@serve_options
@option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                         case_sensitive=False),
        default="INFO", show_default=True, help="Logging level (logs go to stderr).")
@_LOG_FORMAT
@_APP_DIR
@option("--secret-key", metavar="FILE",
        help="The server's secret key file (NAME.key_secret): encrypt both sockets with CURVE.")
@option("--allow-clients", metavar="DIR",
        help="Admit only clients whose public key files (*.key) are in DIR "
             "[default with --secret-key: any client that knows the server key].")
def serve(job: str, options: ProcessorOptions, resources: str | None, log_level: str,
          log_format: str, app_dir: str, secret_key: str | None,
          allow_clients: str | None) -> None:
    """Serve a job as a daemon, in the foreground, until SIGTERM or Ctrl-C.

    MODULE:OBJECT is a function f(request, resources), a class with a run method
    (instantiated with no arguments), or an instance. Once bound it prints one line to
    stdout: listening requests=EP responses=EP name=NAME instance=ID, with wildcards
    resolved (ID is the instance id its responses carry). Logs go to stderr. SIGTERM or
    SIGINT stops it gracefully: the job in progress finishes and its response is
    published, then it exits with status 0. Under zjobs up it also stops when zjobs up is
    gone, even killed with SIGKILL. If the processor itself crashes it exits with status 1
    and the cause on stderr.

    Every processor option has a flag: its name in ProcessorOptions (and in system
    files), with dashes. With --secret-key both sockets use CURVE (see zjobs keygen); the
    log says whether clients are authenticated and how many keys are allowed.

    \b
    Examples:
      zjobs serve zjobs.demo:square --requests tcp://127.0.0.1:5555 \\
          --responses tcp://127.0.0.1:5556
      zjobs serve zjobs.demo:square --requests tcp://*:5555 --responses tcp://*:5556 \\
          --secret-key keys/server.key_secret --allow-clients keys/clients
    """
    if allow_clients is not None and secret_key is None:
        raise CliError("--allow-clients needs --secret-key (the server's secret key file)",
                       RET_USAGE)
    security = (CurveServer(secret_key, allow_clients=allow_clients)
                if secret_key is not None else None)
    _serve(ServeSettings.of(job, options, resources=resources, security=security), log_level,
           log_format, app_dir)


@main.command(SERVE_SETTINGS_COMMAND, hidden=True)
@click.argument("settings_json", metavar="JSON")
@option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                         case_sensitive=False),
        default="INFO", show_default=True, help="Logging level (logs go to stderr).")
@_LOG_FORMAT
@_APP_DIR
def serve_settings(settings_json: str, log_level: str, log_format: str, app_dir: str) -> None:
    """Serve the ServeSettings given as JSON (ServeSettings.to_dict): how zjobs up starts
    each processor replica of a system file. Otherwise the same as serve.

    \b
    Example:
      zjobs serve-settings '{"job": "zjobs.demo:square", "cache_size": 100}'
    """
    try:
        data = json.loads(settings_json)
    except json.JSONDecodeError as exc:
        raise CliError(f"settings: invalid JSON: {exc}", RET_USAGE) from exc
    if not isinstance(data, dict):
        raise CliError("settings: must be a JSON object", RET_USAGE)
    _serve(ServeSettings.from_dict(data), log_level, log_format, app_dir)


# -- send ---------------------------------------------------------------------------------


def _stdin_values() -> Iterator[Any]:
    for number, line in enumerate(sys.stdin, start=1):
        if line.strip():
            value = parse_payload(line, f"stdin line {number}")
            _warn_if_too_large(value)
            yield value


@main.command()
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
                                       timeout_s=target.options.timeout_s, write=_echo,
                                       error=_echo_error)
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
    _echo(console.json_line(summary.as_dict()) if as_json else summary.line())
    failure = summary.failure()
    if summary.interrupted:
        _echo(failure or "interrupted", sys.stderr)
        return RET_INTERRUPTED
    if failure is not None:
        _echo_error(failure)
    return RET_OK if summary.ok else RET_ERROR


# -- ping ---------------------------------------------------------------------------------


@main.command()
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
        _echo(console.json_line({"rtt_ms": round(rtt * 1000, 3),
                                 "processors": client.expect_processors}))
    else:
        _echo(f"pong rtt_ms={rtt * 1000:.3f} processors={client.expect_processors}")


# -- listen -------------------------------------------------------------------------------


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum: int, frame: object) -> NoReturn:
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # once: cleanup is not interrupted
        signal.signal(stop_signal, signal.SIG_IGN)
    raise _Interrupted


@main.command()
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
    _check_connectable(responses)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    # Installed even where SIGINT was inherited as ignored (a background job of a script),
    # like serve does: listening stops on Ctrl-C or SIGTERM, nothing else.
    previous = {signum: signal.signal(signum, _raise_interrupted)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ZmqReceiver([connectable(ep) for ep in responses], topics=topic or ("",),
                         context=context, security=security) as receiver:
            console.listen(receiver, _echo, count=count, pongs=pongs)
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


# -- link and up (chaining) ---------------------------------------------------------------


class _StopFlag:
    """A signal handler that only raises a flag, which the command's main loop polls."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, signum: int, frame: object) -> None:
        self.raised = True


_LINK_READY_S = 30.0
_LINK_RETRY_S = 5.0

_LOG_LEVEL = option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                                     case_sensitive=False),
                    default="INFO", show_default=True, help="Logging level (logs go to stderr).")


@main.command()
@option("--from", "sources", multiple=True, required=True, metavar="EP",
        help="An upstream processor's response endpoint; repeat for several (fan-in).")
@option("--from-requests", "probes", multiple=True, metavar="EP",
        help="That upstream's request endpoint, once per --from in the same order: the link "
             "pings through it until its subscription is live, so no first result is missed.")
@option("--to-requests", "targets", multiple=True, required=True, metavar="EP",
        help="The downstream processor's request endpoint; repeat for a group sharing the "
             "work. dns://NAME:PORT or srv://NAME: every processor behind the name, read "
             "again every 5 s (run the link beside its upstream, e.g. as a sidecar).")
@_DNS_SERVER
@option("--to-responses", "answers", multiple=True, metavar="EP",
        help="That downstream's response endpoint, once per --to-requests in the same order: "
             "needed by --retries, to see which requests it answered.")
@option("--retries", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
        help="Send a request again (same id, marked for the replay window) when the "
             "downstream published no answer within --retry-timeout-s, up to N times.")
@option("--retry-timeout-s", type=click.FloatRange(min=0, min_open=True), metavar="S",
        help=f"Seconds to wait for the downstream's answer [default: {_LINK_RETRY_S}].")
@renamed("--retry-timeout", type=click.FloatRange(min=0, min_open=True), metavar="S")
@option("--topic", default="", metavar="T",
        help="Only forward work whose topic starts with T [default: all].")
@option("--transform", metavar="MODULE:FUNC",
        help="Turn each result into the next request: FUNC(value) returns the new value.")
@option("--keep", metavar="MODULE:FUNC",
        help="A filter: forward only the results for which FUNC(value) is true.")
@renamed("--filter", "old_filter", metavar="MODULE:FUNC")
@option("--name", default="link", show_default=True,
        help="Name in logs, and in the errors the link reports itself.")
@option("--ready-timeout-s", type=click.FloatRange(min=0, min_open=True), metavar="S",
        help=f"Seconds to wait for the upstream processors [default: {_LINK_READY_S}].")
@renamed("--ready-timeout", type=click.FloatRange(min=0, min_open=True), metavar="S")
@_LOG_LEVEL
@_LOG_FORMAT
@_APP_DIR
@curve_client_options
def link(sources: tuple[str, ...], probes: tuple[str, ...], targets: tuple[str, ...],
         dns_server: str | None, answers: tuple[str, ...], retries: int,
         retry_timeout_s: float | None, retry_timeout: float | None, topic: str,
         transform: str | None, keep: str | None, old_filter: str | None, name: str,
         ready_timeout_s: float | None, ready_timeout: float | None, log_level: str,
         log_format: str, app_dir: str, security: CurveClient | None) -> None:
    """Forward the results of processors as requests to another, until SIGTERM or Ctrl-C.

    Every ok response of the --from processors becomes a request to the --to-requests
    processor(s) with the same id and topic, its path recorded in meta["zjobs.path"].
    Errors travel on as pings carrying meta["zjobs.error"] (with the stage that failed),
    to the end of the chain; errors of work with no topic go to the topic
    zjobs.dead-letter. Once subscribed it prints one line: forwarding name=NAME ...
    If the link itself crashes it exits with status 1 and the cause on stderr.

    With --retries N it also listens to the downstream's responses (--to-responses) and
    sends a request again when no answer came within --retry-timeout-s: a downstream that
    was restarted runs the work its predecessor lost. Work its caller retries (a Pipeline
    with retries) is forwarded marked for the replay windows with or without this.

    \b
    Example:
      zjobs link --from tcp://127.0.0.1:5556 --from-requests tcp://127.0.0.1:5555 \\
          --to-requests tcp://127.0.0.1:5557 --transform myjobs:prepare
    """
    configure_logging(log_level, log_format)
    keep = take_renamed("--filter", "--keep", old_filter, keep)
    ready_s = take_renamed("--ready-timeout", "--ready-timeout-s", ready_timeout,
                           ready_timeout_s) or _LINK_READY_S
    retry_s = take_renamed("--retry-timeout", "--retry-timeout-s", retry_timeout,
                           retry_timeout_s) or _LINK_RETRY_S
    if probes and len(probes) != len(sources):
        raise CliError("give --from-requests once per --from (in the same order), or not "
                       "at all", RET_USAGE)
    if answers and len(answers) != len(targets):
        raise CliError("give --to-responses once per --to-requests (in the same order), or "
                       "not at all", RET_USAGE)
    if retries and not answers:
        raise CliError("--retries needs --to-responses (where the downstream answers)",
                       RET_USAGE)
    _check_connectable(sources + probes + targets)
    add_app_dir(app_dir)
    transform_fn = None if transform is None else load_callable(transform, "transform")
    keep_fn = None if keep is None else load_callable(keep, "filter")
    if any(is_dns_endpoint(ep) for ep in (*sources, *probes)):
        raise CliError("--from and --from-requests take no dns:// or srv:// endpoint: run the "
                       "link beside its upstream (a sidecar) and name the downstream by DNS "
                       "in --to-requests", RET_USAGE)
    upstreams: list[Endpoints | str] = (
        [Endpoints(connectable(r), connectable(s)) for r, s in zip(probes, sources, strict=True)]
        if probes else [connectable(s) for s in sources])
    downstream = [connectable(t) for t in targets]
    membership = _dns_membership(downstream, [], dns_server)
    if membership is not None and answers:
        raise CliError("--to-responses (and so --retries) needs fixed --to-requests "
                       "endpoints, not dns:// or srv://", RET_USAGE)
    first = None if membership is None else membership.members()
    downstreams: list[Endpoints | str] = (
        [Endpoints(r, connectable(s)) for r, s in zip(downstream, answers, strict=True)]
        if answers else [*(downstream if first is None else first.requests)])
    stop = _StopFlag()
    _stop_with_supervisor(lambda: stop(signal.SIGTERM, None))
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    watcher: MembershipWatcher | None = None
    try:
        running = Link(upstreams, downstreams, name=name, topic=topic,
                       transform=transform_fn, keep=keep_fn, ready_timeout_s=ready_s,
                       security=security, retries=retries, retry_timeout_s=retry_s)
        with running:
            if membership is not None:
                watcher = MembershipWatcher(membership,
                                            lambda m: running.update_targets(m.requests),
                                            current=first)
            _echo(f"{LINK_READY}name={name} from={','.join(sources)} "
                  f"to={','.join(targets)} topic={topic!r}")
            while not stop.raised and running.forwarding:
                time.sleep(0.1)
            logging.getLogger(__name__).info("link %r stopping", name)
            if watcher is not None:
                watcher.close()
        logging.getLogger(__name__).info("link %r stopped: %s", name,
                                         running.counters.as_dict())
    finally:
        if watcher is not None:
            watcher.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not stop.raised:
        raise CliError(f"link {name!r} stopped forwarding (see the log above)", RET_ERROR)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@option("--check", is_flag=True,
        help="Only validate FILE: report every mistake with its line, start nothing.")
@option("--only", metavar="NAME,...",
        help="Start only these processors and links (on several hosts, each starts its part).")
@option("--export", nargs=2, type=(click.Choice(["systemd"]), click.Path(file_okay=False)),
        metavar="systemd DIR", default=None,
        help="Start nothing: write systemd units for FILE into DIR (one per processor and "
             "link, a template for replicas, SYSTEM.target for all), supervised by systemd.")
@_LOG_LEVEL
@_LOG_FORMAT
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
            _echo(f"Error: {problem}", sys.stderr)
        sys.exit(RET_USAGE)
    if check:
        _echo(f"{file}: ok: {len(system.processors)} processor(s), "
              f"{len(system.links)} link(s)")
        return
    if export is not None:
        try:
            written = write_systemd(system, export[1])
        except SystemFileError as exc:
            for problem in exc.problems:
                _echo(f"Error: {problem}", sys.stderr)
            sys.exit(RET_USAGE)
        for path in written:
            _echo(f"wrote {path}")
        _echo(f"install: cp -r {export[1]}/* /etc/systemd/system/ && systemctl daemon-reload "
              f"&& systemctl enable --now {_target_name(written)}")
        return
    say = _json_echo if log_format == "json" else _echo  # json: every line an object
    # Children's logs and Error: lines go to stderr, the lines scripts read to stdout.
    if log_format == "text":
        supervisor = Supervisor(out=say, child_err=lambda child, line: _echo(
            f"{child} | {line}", sys.stderr))
    else:
        supervisor = Supervisor(
            out=say, child_out=lambda child, line: _echo(child_json_line(child, line)),
            child_err=lambda child, line: _echo(child_json_line(child, line), sys.stderr))
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


# -- status, top (watching heartbeats) -----------------------------------------------------


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


@main.command()
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
        _echo(json.dumps([row.as_json() for row in rows]))
    else:
        print_status(rows)
    for problem in problems:
        _echo_error(problem)
    if problems:
        sys.exit(RET_ERROR)


@main.command()
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


@main.command()
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
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with _watch(expected, security, context) as watch:
            try:
                page = Dashboard(address)
            except ValueError as exc:
                raise CliError(str(exc), RET_USAGE) from exc
            with page:
                _echo(f"dashboard {page.url}")
                while not stop.raised:
                    watch.poll(0.25)
                    page.update(watch)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        context.term()


# -- keygen -------------------------------------------------------------------------------


@main.command()
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
    _echo(f"public={public} secret={secret}")


# -- bench --------------------------------------------------------------------------------


@main.command()
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
    results = harness.run(settings, out=_echo)
    if json_path is not None:
        harness.write_json(results, Path(json_path))
        _echo(f"results written to {json_path}")


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


@main.command()
def demo() -> None:
    """Run a small system of processors in this process and print what flows.

    Three processors serve in threads over inproc: square feeds describe (a chain of two
    jobs), and lookup is a slow job with a cache. Takes well under a second.

    \b
    Example:
      zjobs demo
    """
    run_demo(_echo)
