"""``zjobs serve`` (and ``serve-settings``, how ``zjobs up`` starts a processor) and
``zjobs link``: the daemons, in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import click

from zjobs.cli.app import (
    LOG_FORMAT,
    LOG_LEVEL,
    RET_ERROR,
    RET_USAGE,
    CliError,
    StopFlag,
    echo,
    option,
    renamed,
    take_renamed,
)
from zjobs.cli.connect import DNS_SERVER, check_connectable, curve_client_options, dns_membership
from zjobs.cli.logs import configure_logging
from zjobs.client.watcher import MembershipWatcher
from zjobs.compose.link import Link
from zjobs.core.options import Keepalive, ProcessorOptions, option_names
from zjobs.processor.base import Endpoints
from zjobs.run.daemon import Daemon, ServedProcessor, ServeSettings
from zjobs.run.loader import add_app_dir, load_callable
from zjobs.run.supervisor import LIFELINE_ENV, watch_lifeline
from zjobs.run.system import LINK_READY, SERVE_READY, SERVE_SETTINGS_COMMAND
from zjobs.transport.security import CurveClient, CurveServer
from zjobs.transport.sockets import connectable, is_dns_endpoint


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
        echo(f"{SERVE_READY}requests={ep.requests} responses={ep.responses} "
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


@click.command()
@click.argument("job", metavar="MODULE:OBJECT")
@serve_options
@LOG_LEVEL
@LOG_FORMAT
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


@click.command(SERVE_SETTINGS_COMMAND, hidden=True)
@click.argument("settings_json", metavar="JSON")
@LOG_LEVEL
@LOG_FORMAT
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


# -- link ---------------------------------------------------------------------------------


_LINK_READY_S = 30.0
_LINK_RETRY_S = 5.0


@click.command()
@option("--from", "sources", multiple=True, required=True, metavar="EP",
        help="An upstream processor's response endpoint; repeat for several (fan-in).")
@option("--from-requests", "probes", multiple=True, metavar="EP",
        help="That upstream's request endpoint, once per --from in the same order: the link "
             "pings through it until its subscription is live, so no first result is missed.")
@option("--to-requests", "targets", multiple=True, required=True, metavar="EP",
        help="The downstream processor's request endpoint; repeat for a group sharing the "
             "work. dns://NAME:PORT or srv://NAME: every processor behind the name, read "
             "again every 5 s (run the link beside its upstream, e.g. as a sidecar).")
@DNS_SERVER
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
@LOG_LEVEL
@LOG_FORMAT
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
    check_connectable(sources + probes + targets)
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
    membership = dns_membership(downstream, [], dns_server)
    if membership is not None and answers:
        raise CliError("--to-responses (and so --retries) needs fixed --to-requests "
                       "endpoints, not dns:// or srv://", RET_USAGE)
    first = None if membership is None else membership.members()
    downstreams: list[Endpoints | str] = (
        [Endpoints(r, connectable(s)) for r, s in zip(downstream, answers, strict=True)]
        if answers else [*(downstream if first is None else first.requests)])
    stop = StopFlag()
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
            echo(f"{LINK_READY}name={name} from={','.join(sources)} "
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
