"""System files: the TOML that ``zjobs up`` reads, validated with a line for every mistake.

A system file declares processors and the links between them::

    [system]
    app_dir = "."            # where MODULE:OBJECT references are imported from,
                             # relative to this file (default: the file's folder)

    [processors.parse]
    job = "jobs:parse"                           # MODULE:OBJECT, as for zjobs serve
    requests = "ipc:///tmp/demo/parse.req"       # endpoints to bind: tcp or ipc,
    responses = "ipc:///tmp/demo/parse.pub"      # with fixed ports
    # name = "parse"          processor name in responses (default: the table key)
    # resources = "jobs:open" resources factory (function, or generator yielding once)
    # replicas = 1            N processes sharing the work; each needs its endpoints:
    #                         a list of N, or one pattern with {i} (0..N-1)
    # metrics = "127.0.0.1:9101"  Prometheus /metrics of each replica, HOST:PORT with a
    #                         fixed port (a list, or a pattern with {i}); needs zjobs[metrics]
    # cache_size = 0          ... and every other ProcessorOptions field, by its name:
    # concurrency, threads, dedup_size, dedup_ttl_s, heartbeat_interval_s,
    # max_message_size, rcvhwm, sndhwm, linger_ms, keepalive ({idle_s = 5, ...});
    # false stands for None (heartbeat_interval_s = false: no heartbeats)

    [[links]]
    from = "parse"           # a processor, or a list (fan-in)
    to = "store"             # a processor, or a list; replicas are a group either way
    # topic = ""             only work whose topic starts with this
    # transform = "jobs:f"   value -> value, applied before sending on
    # keep = "jobs:keep"     value -> bool; false ends the work there (a filter)
    # name = "parse->store"
    # retries = 0            send work again that the target did not answer (a target
    # retry_timeout_s = 5.0  that restarted lost it), after this many seconds

Deprecated spellings still read: ``cache`` for ``cache_size``, ``filter`` for ``keep``.

Each processor replica runs as a child process started from its
:class:`~zjobs.ServeSettings` (handed over as JSON), so every option reaches it.

Endpoints must be fixed (no ``*`` or ``0`` port): links and callers, maybe on other hosts,
connect to them. ``inproc://`` cannot cross processes and is refused.

Multi-host: every host gets the same file, with each processor's endpoints written with
the IP address of the host that runs it (``tcp://10.0.0.5:5555``: binding works there,
connecting works from anywhere), and starts its own part with ``zjobs up FILE --only
NAME,...`` naming the processors and links it runs. A link may run on any host: it
connects to its upstream and downstream endpoints wherever they are.

:func:`load_system` reads and validates a file and reports *every* mistake it finds,
each with its line: ``tomllib`` gives lines only for syntax errors, so for the rest a
small scanner (:class:`_LineIndex`) finds the line of each table header and key.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zjobs.core.options import ProcessorOptions, option_names
from zjobs.errors import (
    LoadError,
    NotReady,
    OptionsError,
    ReceiveTimeout,
    SendTimeout,
    StartError,
    ZJobsError,
)
from zjobs.run.daemon import ServeSettings
from zjobs.run.loader import add_app_dir, load_factory, load_job, load_object
from zjobs.run.supervisor import ChildSpec, Probe, Supervisor
from zjobs.transport.http import parse_address
from zjobs.transport.receiver import ZmqReceiver
from zjobs.transport.sender import IdGenerator, ZmqSender
from zjobs.transport.sockets import connectable
from zjobs.wire.protocol import PONG, Id

__all__ = [
    "LINK_READY",
    "SERVE_READY",
    "LinkSpec",
    "Problem",
    "ProcessorSpec",
    "System",
    "SystemFileError",
    "link_children",
    "load_system",
    "processor_children",
    "start_system",
]

log = logging.getLogger(__name__)

LINK_READY = "forwarding "
"""``zjobs link`` prints a line starting with this once its subscriptions are live."""

SERVE_READY = "listening "
"""``zjobs serve`` prints a line starting with this once bound, ending with
``instance=ID``: the instance id its responses carry."""

_INSTANCE = re.compile(r"\binstance=(\S+)")

SERVE_SETTINGS_COMMAND = "serve-settings"
"""The (hidden) ``zjobs`` command a processor child runs: it serves the
:class:`~zjobs.ServeSettings` given as JSON."""

_TOP_KEYS = ("system", "processors", "links")
_SYSTEM_KEYS = ("app_dir", "name")
_PROCESSOR_KEYS = ("job", "resources", "replicas", *option_names())
_LINK_KEYS = ("from", "to", "topic", "transform", "keep", "name", "retries",
              "retry_timeout_s")
# Old spellings, still read: one name for one thing across Python, CLI and system file.
_PROCESSOR_DEPRECATED = {"cache": "cache_size"}
_LINK_DEPRECATED = {"filter": "keep"}
# Options a system file gives per replica (a list, or a pattern with {i}), not once.
_PER_REPLICA = ("requests", "responses", "metrics")
_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:/\[\]]+):(?P<port>[^:/]+)$")
_IPC = re.compile(r"^ipc://.+$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in a system file: where it is (line, when known) and what is wrong."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class SystemFileError(ZJobsError):
    """A system file cannot be used; ``problems`` lists every mistake found, with lines."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class ProcessorSpec:
    """A processor declared in a system file; one entry of ``requests``/``responses`` (and
    ``metrics``) per replica, and the options every replica serves with."""

    key: str
    job: str
    requests: tuple[str, ...]
    responses: tuple[str, ...]
    resources: str | None = None
    options: ProcessorOptions = field(default_factory=ProcessorOptions)
    line: int | None = None
    metrics: tuple[str, ...] = ()
    """Each replica's Prometheus address (HOST:PORT), or () for none."""

    @property
    def name(self) -> str:
        """The processor name in responses (the table key unless ``name`` is set)."""
        return self.options.name or self.key

    @property
    def replicas(self) -> int:
        """How many processes serve this processor."""
        return len(self.requests)

    def replica_name(self, index: int) -> str:
        """The supervised child's name: the key, with ``.i`` when there are replicas."""
        return self.key if self.replicas == 1 else f"{self.key}.{index}"

    def settings(self, index: int) -> ServeSettings:
        """What replica ``index`` serves: the options, with its endpoints (and metrics)."""
        options = self.options.replace(
            name=self.name, requests=self.requests[index], responses=self.responses[index],
            metrics=self.metrics[index] if self.metrics else None)
        return ServeSettings.of(self.job, options, resources=self.resources)


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A link declared in a system file, between processors named by their keys."""

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    topic: str = ""
    transform: str | None = None
    keep: str | None = None
    line: int | None = None
    retries: int = 0
    """Times the link sends work again that its target did not answer (see ``Link``)."""
    retry_timeout_s: float = 5.0
    """Seconds the link waits for the target's answer before sending again."""


@dataclass(frozen=True, slots=True)
class System:
    """A validated system file."""

    path: Path
    app_dir: Path
    name: str
    processors: dict[str, ProcessorSpec] = field(default_factory=dict)
    links: list[LinkSpec] = field(default_factory=list)
    only: frozenset[str] | None = None
    """The processors and links this host runs (``--only``); None: all of them."""

    def runs(self, name: str) -> bool:
        """True when this host starts the processor or link called ``name``."""
        return self.only is None or name in self.only

    def select(self, names: Iterable[str]) -> System:
        """The same system, where this host runs only the processors and links ``names``.

        Raises:
            SystemFileError: a name is neither a processor nor a link of the file.
        """
        wanted = frozenset(n.strip() for n in names if n.strip())
        known = set(self.processors) | {link.name for link in self.links}
        unknown = sorted(wanted - known)
        if unknown:
            raise SystemFileError([Problem(str(self.path), None,
                                           f"--only names {', '.join(map(repr, unknown))}: "
                                           f"not a processor or link of this file "
                                           f"(known: {', '.join(sorted(known))})")])
        return replace(self, only=wanted)


class _LineIndex:
    """Lines of table headers and keys, found by scanning the TOML source.

    Handles the usual layout (``[a.b]``, ``[[links]]``, ``key = value`` on its own line);
    a key it cannot place (inline tables, dotted keys) falls back to its table's line.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")

    def __init__(self, text: str) -> None:
        self.tables: dict[tuple[str, ...], int] = {}
        self.keys: dict[tuple[tuple[str, ...], str], int] = {}
        counts: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_string = False
        for number, line in enumerate(text.splitlines(), start=1):
            if line.count('"""') % 2 or line.count("'''") % 2:
                in_string = not in_string  # a multi-line string starts or ends here
                if not in_string:
                    continue
            if in_string:
                continue
            header = self._HEADER.match(line)
            if header:
                path = tuple(_unquote(part) for part in header.group(2).split("."))
                if header.group(1) == "[[":
                    counts[path] = counts.get(path, -1) + 1
                    path = (*path, str(counts[path]))
                table = path
                self.tables.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                self.keys.setdefault((table, _unquote(key.group(1))), number)

    def line(self, table: tuple[str, ...], key: str | None = None) -> int | None:
        """The line of ``key`` in ``table`` (or of the table itself), None if not found."""
        if key is not None and (table, key) in self.keys:
            return self.keys[table, key]
        for depth in range(len(table), 0, -1):
            if table[:depth] in self.tables:
                return self.tables[table[:depth]]
        if table and ((), table[0]) in self.keys:
            return self.keys[(), table[0]]
        return None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


class _Checker:
    """Collects problems while building the specs."""

    def __init__(self, path: Path, index: _LineIndex, check_imports: bool,
                 only: frozenset[str] | None) -> None:
        self.path = path
        self.index = index
        self.check_imports = check_imports
        self.only = only
        self.problems: list[Problem] = []

    def report(self, table: tuple[str, ...], key: str | None, message: str) -> None:
        self.problems.append(Problem(str(self.path), self.index.line(table, key), message))

    def unknown_keys(self, table: tuple[str, ...], data: dict[str, Any],
                     known: Sequence[str], what: str) -> None:
        for key in data:
            if key not in known:
                self.report(table, key, f"{what}: unknown key {key!r} (known: "
                                        f"{', '.join(known)})")

    def string(self, table: tuple[str, ...], data: dict[str, Any], key: str, what: str,
               *, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.report(table, None, f"{what}: missing {key!r}")
            return None
        if not isinstance(value, str) or not value:
            self.report(table, key, f"{what}: {key!r} must be a non-empty string")
            return None
        return value

    def reference(self, table: tuple[str, ...], key: str, spec: str | None, what: str,
                  kind: str, owner: str | None) -> None:
        # Another host's code need not be importable here: check only what this host runs.
        if spec is None or not self.check_imports or not (self.only is None or
                                                          owner in self.only):
            return
        try:
            if kind == "job":
                load_job(spec)
            elif kind == "resources":
                load_factory(spec)
            elif not callable(load_object(spec, kind)):
                self.report(table, key, f"{what}: {kind} {spec} is not callable")
        except LoadError as exc:
            self.report(table, key, f"{what}: {exc}")


def _endpoint_problem(endpoint: str) -> str | None:
    if endpoint.startswith("inproc://"):
        return "inproc:// cannot cross processes (use ipc:// or tcp://)"
    if _IPC.match(endpoint):
        return None
    tcp = _TCP.match(endpoint)
    if tcp is None:
        return "is not tcp://HOST:PORT or ipc://PATH"
    port = tcp.group("port")
    if re.fullmatch(r"[+-]?\d+", port) and not 0 <= int(port) <= 65535:
        return f"port {port} is out of range (1 to 65535)"
    if not port.isdigit() or int(port) == 0:
        return (f"port {port!r}: a system file needs fixed ports (links and callers "
                "connect to them)")
    return None


def _metrics_problem(address: str) -> str | None:
    try:
        _, port = parse_address(address)
    except ValueError:
        return "is not HOST:PORT"
    if port == 0:
        return "port 0: a system file needs fixed ports (Prometheus scrapes them)"
    return None


def _endpoints(check: _Checker, table: tuple[str, ...], data: dict[str, Any], key: str,
               replicas: int, what: str, *, required: bool = True) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        if required:
            check.report(table, None, f"{what}: missing endpoint {key!r}")
        return ()
    if isinstance(value, str):
        if replicas > 1 and "{i}" not in value:
            check.report(table, key, f"{what}: replicas = {replicas} need {replicas} "
                                     f"{key} endpoints: a list, or a pattern with {{i}}")
            return ()
        values = [value.replace("{i}", str(i)) for i in range(replicas)]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        values = list(value)
        if len(values) != replicas:
            check.report(table, key, f"{what}: {len(values)} {key} endpoint(s) for "
                                     f"replicas = {replicas}")
            return ()
    else:
        check.report(table, key, f"{what}: {key!r} must be an endpoint string or a list")
        return ()
    for endpoint in values:
        problem = _endpoint_problem(endpoint) if required else _metrics_problem(endpoint)
        if problem is not None:
            noun = "endpoint" if required else "address"
            check.report(table, key, f"{what}: {noun} {endpoint!r} {problem}")
            return ()
    return tuple(values)


def _renamed(check: _Checker, table: tuple[str, ...], data: dict[str, Any],
             renames: dict[str, str], what: str) -> dict[str, Any]:
    """``data`` with deprecated keys under their new names (a warning for each)."""
    out = dict(data)
    for old, new in renames.items():
        if old not in out:
            continue
        line = check.index.line(table, old)
        where = f"{check.path}:{line}" if line else str(check.path)
        value = out.pop(old)
        if new in out:
            check.report(table, old, f"{what}: {old!r} and {new!r} are the same option "
                                     f"(give {new!r} only)")
        else:
            log.warning("%s: %s: %r is deprecated, write %r", where, what, old, new)
            out[new] = value
    return out


def _processor(check: _Checker, key: str, data: Any) -> ProcessorSpec | None:
    table = ("processors", key)
    what = f"processor {key!r}"
    if not isinstance(data, dict):
        check.report(table, None, f"{what}: must be a table ([processors.{key}])")
        return None
    data = _renamed(check, table, data, _PROCESSOR_DEPRECATED, what)
    check.unknown_keys(table, data, _PROCESSOR_KEYS, what)
    job = check.string(table, data, "job", what, required=True)
    resources = check.string(table, data, "resources", what)
    replicas = data.get("replicas", 1)
    if type(replicas) is not int or replicas < 1:
        check.report(table, "replicas", f"{what}: replicas must be a whole number >= 1")
        replicas = 1
    requests = _endpoints(check, table, data, "requests", replicas, what)
    responses = _endpoints(check, table, data, "responses", replicas, what)
    metrics = _endpoints(check, table, data, "metrics", replicas, what, required=False)
    values = {k: v for k, v in data.items() if k in option_names() and k not in _PER_REPLICA}
    try:
        options = ProcessorOptions.from_dict(values)
    except OptionsError as exc:
        for name, problem in exc.problems:
            check.report(table, name, f"{what}: {name} {problem}")
        options = ProcessorOptions()
    check.reference(table, "job", job, what, "job", key)
    check.reference(table, "resources", resources, what, "resources", key)
    if job is None or not requests or not responses:
        return None
    return ProcessorSpec(key, job, requests, responses, resources, options,
                         check.index.line(table), metrics)


def _names(check: _Checker, table: tuple[str, ...], data: dict[str, Any], key: str,
           what: str, declared: Iterable[str]) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        check.report(table, None, f"{what}: missing {key!r} (a processor name or a list)")
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        check.report(table, key, f"{what}: {key!r} must be a processor name or a list of them")
        return ()
    known = set(declared)
    ok = True
    for name in names:
        if name not in known:
            ok = False
            check.report(table, key, f"{what}: {key} {name!r} is not a declared processor "
                                     f"(declared: {', '.join(sorted(known)) or 'none'})")
    return tuple(names) if ok else ()


def _link(check: _Checker, index: int, data: Any, declared: Iterable[str]) -> LinkSpec | None:
    table = ("links", str(index))
    what = f"link #{index + 1}"
    if not isinstance(data, dict):
        check.report(table, None, f"{what}: must be a table ([[links]])")
        return None
    data = _renamed(check, table, data, _LINK_DEPRECATED, what)
    check.unknown_keys(table, data, _LINK_KEYS, what)
    sources = _names(check, table, data, "from", what, declared)
    targets = _names(check, table, data, "to", what, declared)
    topic = data.get("topic", "")
    if not isinstance(topic, str):
        check.report(table, "topic", f"{what}: topic must be a string")
        topic = ""
    transform = check.string(table, data, "transform", what)
    keep = check.string(table, data, "keep", what)
    retries = data.get("retries", 0)
    if type(retries) is not int or retries < 0:
        check.report(table, "retries", f"{what}: retries must be a whole number >= 0")
        retries = 0
    retry_timeout_s = data.get("retry_timeout_s", 5.0)
    if type(retry_timeout_s) not in (int, float) or not retry_timeout_s > 0:
        check.report(table, "retry_timeout_s", f"{what}: retry_timeout_s must be a number "
                                               "of seconds > 0")
        retry_timeout_s = 5.0
    name = check.string(table, data, "name", what)
    if sources and targets:
        name = name or f"{'+'.join(sources)}->{'+'.join(targets)}"
    check.reference(table, "transform", transform, what, "transform", name)
    check.reference(table, "keep", keep, what, "filter", name)
    if not sources or not targets or name is None:
        return None
    return LinkSpec(name, sources, targets, topic, transform, keep, check.index.line(table),
                    retries, float(retry_timeout_s))


def load_system(path: str | Path, *, check_imports: bool = True,
                only: Iterable[str] | None = None) -> System:
    """Read and validate a system file.

    Args:
        path: the TOML file.
        check_imports: also import every job, resources factory, transform and filter
            (from the system's ``app_dir``, added to ``sys.path``) to check they exist.
        only: the processors and links this host runs (see :meth:`System.select`); the
            code of the others is not imported, it may live on other hosts only.

    Raises:
        SystemFileError: every problem found, each with its line when known.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemFileError([Problem(str(file), None, f"cannot read: {exc}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(found.group(1)) if found else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise SystemFileError([Problem(str(file), line, f"invalid TOML: {message}")]) from exc
    wanted = None if only is None else frozenset(n.strip() for n in only if n.strip())
    check = _Checker(file, _LineIndex(text), check_imports, wanted)
    check.unknown_keys((), data, _TOP_KEYS, "system file")

    settings = data.get("system", {})
    if not isinstance(settings, dict):
        check.report(("system",), None, "[system] must be a table")
        settings = {}
    check.unknown_keys(("system",), settings, _SYSTEM_KEYS, "[system]")
    app_dir = file.resolve().parent / (check.string(("system",), settings, "app_dir",
                                                    "[system]") or ".")
    if not app_dir.is_dir():
        check.report(("system",), "app_dir", f"[system]: app_dir {str(app_dir)!r} is not "
                                             "a folder")
    elif check_imports:
        add_app_dir(app_dir)
    name = check.string(("system",), settings, "name", "[system]") or file.stem

    tables = data.get("processors", {})
    if not isinstance(tables, dict):
        check.report(("processors",), None, "processors must be tables ([processors.NAME])")
        tables = {}
    if not tables:
        check.report(("processors",), None, "no processors declared ([processors.NAME])")
    processors: dict[str, ProcessorSpec] = {}
    for key, table in tables.items():
        spec = _processor(check, key, table)
        if spec is not None:
            processors[key] = spec
    _check_unique_endpoints(check, processors)

    raw_links = data.get("links", [])
    if not isinstance(raw_links, list):
        check.report(("links",), None, "links must be an array of tables ([[links]])")
        raw_links = []
    links: list[LinkSpec] = []
    for index, raw in enumerate(raw_links):
        link = _link(check, index, raw, tables.keys() if isinstance(tables, dict) else ())
        if link is None:
            continue
        if any(other.name == link.name for other in links):
            check.report(("links", str(index)), "name", f"link #{index + 1}: another link is "
                         f"already named {link.name!r} (give it a name)")
        links.append(link)
    for cycle, nodes in _link_cycles(links):
        check.problems.append(Problem(str(file), cycle[0].line, (
            f"link cycle {' -> '.join(nodes)} (links "
            f"{', '.join(repr(link.name) for link in cycle)}): the work would go round "
            "forever; remove a link, or give the links topics that cannot meet")))
    if check.problems:
        raise SystemFileError(sorted(check.problems, key=lambda p: p.line or 0))
    system = System(file, app_dir, name, processors, links)
    return system if wanted is None else system.select(wanted)


def _link_cycles(links: Sequence[LinkSpec],
                 limit: int = 10) -> list[tuple[list[LinkSpec], list[str]]]:
    """The cycles of links (each once, as its links and the processors on the way), up to
    ``limit`` of them.

    A cycle only counts when one piece of work can travel all of it: each link takes only
    work whose topic starts with its ``topic``, so the topics on a cycle must all be
    prefixes of the longest one (links on ``"x."`` and ``"y."`` never pass work to each
    other).
    """
    found: list[tuple[list[LinkSpec], list[str]]] = []
    seen: set[frozenset[str]] = set()
    for first_index, first in enumerate(links):
        later = links[first_index + 1:]  # a cycle is found from its first link only
        for origin in first.sources:
            stack = [([first], [origin, target], first.topic) for target in first.targets]
            while stack and len(found) < limit:
                path, nodes, topic = stack.pop()
                node = nodes[-1]
                if node == origin:
                    names = frozenset(link.name for link in path)
                    if names not in seen:
                        seen.add(names)
                        found.append((path, nodes))
                    continue
                if node in nodes[:-1]:
                    continue  # a loop that does not come back to the origin: found elsewhere
                for link in later:
                    if node in link.sources and link not in path and (
                            topic.startswith(link.topic) or link.topic.startswith(topic)):
                        longest = max(topic, link.topic, key=len)
                        stack.extend(([*path, link], [*nodes, target], longest)
                                     for target in link.targets)
    return found


def _check_unique_endpoints(check: _Checker, processors: dict[str, ProcessorSpec]) -> None:
    owner: dict[str, str] = {}
    for spec in processors.values():
        for endpoint in (*spec.requests, *spec.responses, *spec.metrics):
            if endpoint in owner:
                check.report(("processors", spec.key), None,
                             f"processor {spec.key!r}: endpoint {endpoint!r} is already used "
                             f"by processor {owner[endpoint]!r}")
            owner.setdefault(endpoint, spec.key)


# -- running a system -----------------------------------------------------------------------


def _ping_instance(requests: str, responses: str) -> Probe:
    """A probe that pings a ``zjobs serve`` child until a pong from *its* instance (named on
    its listening line) comes back: another process answering on these endpoints, for
    example one left over from an earlier run, does not make the child ready."""

    def probe(line: str, timeout_s: float) -> None:
        found = _INSTANCE.search(line)
        if found is None:
            raise StartError(f"no instance id on the listening line {line!r}")
        instance = found[1]
        ids = IdGenerator()
        sent: set[Id] = set()
        deadline = time.monotonic() + timeout_s
        interval = 0.002
        with (ZmqSender(connectable(requests), send_timeout_s=0, linger_ms=0) as sender,
              ZmqReceiver(connectable(responses), topics=()) as receiver):
            topic = f"zjobs.up-ready.{ids()}"
            receiver.subscribe(topic)
            while time.monotonic() < deadline:
                try:
                    sent.add(sender.send(None, id=ids(), reply_to=topic, ping=True))
                except SendTimeout:
                    pass  # not connected yet
                until = min(deadline, time.monotonic() + interval)
                while (left := until - time.monotonic()) > 0:
                    try:
                        response = receiver.receive(timeout=left)
                    except ReceiveTimeout:
                        break
                    if (response.status == PONG and response.id in sent
                            and response.instance == instance):
                        return
                interval = min(interval * 1.5, 0.1)
        raise NotReady([requests], timeout_s, 0, 1)

    return probe


def processor_children(system: System, python: str = sys.executable, *,
                       log_format: str = "text") -> list[ChildSpec]:
    """One child per replica of each processor this host runs, serving its
    :class:`~zjobs.ServeSettings` (passed as JSON, not rebuilt into options); each is ready
    once it printed that it is listening and answered a ping from that instance.
    ``log_format`` is passed on (``--log-format``)."""
    children = []
    for spec in system.processors.values():
        if not system.runs(spec.key):
            continue
        for i, (requests, responses) in enumerate(zip(spec.requests, spec.responses,
                                                      strict=True)):
            settings = json.dumps(spec.settings(i).to_dict(), separators=(",", ":"))
            argv = [python, "-m", "zjobs", SERVE_SETTINGS_COMMAND, settings,
                    "--app-dir", str(system.app_dir), "--log-format", log_format]
            name = spec.replica_name(i)
            children.append(ChildSpec(
                name, argv, ready_line=SERVE_READY, probe=_ping_instance(requests, responses),
                describe=f"processor {name}: requests={requests} responses={responses}"))
    return children


def link_children(system: System, python: str = sys.executable, *,
                  log_format: str = "text") -> list[ChildSpec]:
    """One ``zjobs link`` child per link this host runs; each is ready once it printed
    that its subscriptions are live. ``log_format`` is passed on (``--log-format``)."""
    children = []
    for link in system.links:
        if not system.runs(link.name):
            continue
        argv = [python, "-m", "zjobs", "link", "--name", link.name, "--topic", link.topic,
                "--app-dir", str(system.app_dir), "--log-format", log_format]
        for key in link.sources:
            source = system.processors[key]
            for requests, responses in zip(source.requests, source.responses, strict=True):
                argv += ["--from", connectable(responses), "--from-requests",
                         connectable(requests)]
        for key in link.targets:
            target = system.processors[key]
            for requests, responses in zip(target.requests, target.responses, strict=True):
                argv += ["--to-requests", connectable(requests), "--to-responses",
                         connectable(responses)]
        if link.retries:
            argv += ["--retries", str(link.retries), "--retry-timeout-s",
                     repr(link.retry_timeout_s)]
        if link.transform:
            argv += ["--transform", link.transform]
        if link.keep:
            argv += ["--keep", link.keep]
        extra = f" topic={link.topic!r}" if link.topic else ""
        extra += f" retries={link.retries}" if link.retries else ""
        children.append(ChildSpec(
            link.name, argv, ready_line=LINK_READY,
            describe=f"link {link.name}: {'+'.join(link.sources)} -> "
                     f"{'+'.join(link.targets)}{extra}"))
    return children


def start_system(system: System, supervisor: Supervisor, *, log_format: str = "text") -> None:
    """Start this host's processors, wait until each answers, then start its links and wait
    until each is subscribed. Folders of ipc endpoints are created first. The children
    log as ``log_format`` says (text or json).

    Raises:
        StartError: a child exited or was not ready in time (call ``supervisor.stop()``).
    """
    for spec in system.processors.values():
        if system.runs(spec.key):
            for endpoint in (*spec.requests, *spec.responses):
                if endpoint.startswith("ipc://"):
                    Path(endpoint[len("ipc://"):]).parent.mkdir(parents=True, exist_ok=True)
    supervisor.start(processor_children(system, log_format=log_format))
    supervisor.start(link_children(system, log_format=log_format))
