"""Exporting a system file to systemd: one unit per processor and link, supervised by systemd.

``zjobs up --export systemd DIR FILE`` writes what ``zjobs up FILE`` would run, with the
supervision handed to systemd:

- ``SYSTEM.target``: starts and stops everything (``systemctl start pipeline.target``).
- ``SYSTEM-KEY.service`` per processor running ``zjobs serve`` with the file's options; a
  processor with replicas is a template ``SYSTEM-KEY@.service`` whose instances are the
  replica indexes, each with its endpoints in a drop-in
  (``SYSTEM-KEY@0.service.d/endpoints.conf``).
- ``SYSTEM-link-NAME.service`` per link running ``zjobs link``, ordered after (and
  wanting) the units of the processors it connects.

``zjobs up`` restarts a child that exits and stops them with SIGTERM, then SIGKILL after
``stop_timeout_s``; the units say the same with ``Restart=always``, ``RestartSec``,
``StartLimitIntervalSec=0`` (never give up), ``KillSignal=SIGTERM`` and ``TimeoutStopSec``.
systemd 252 has no growing restart delay (``RestartSteps=`` came in 254), so the delay is
fixed at the supervisor's first backoff.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from zjobs.core.options import Keepalive, ProcessorOptions, option_names
from zjobs.run.supervisor import Supervisor
from zjobs.run.system import LinkSpec, Problem, ProcessorSpec, System, SystemFileError
from zjobs.transport.sockets import connectable

__all__ = ["default_command", "serve_flags", "systemd_units", "write_systemd"]

_UNIT_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")
_REQUESTS_VAR, _RESPONSES_VAR = "ZJOBS_UNIT_REQUESTS", "ZJOBS_UNIT_RESPONSES"


def default_command() -> list[str]:
    """How units run zjobs: the ``zjobs`` script of this interpreter's environment (a
    virtualenv's), else ``python -m zjobs`` with this interpreter."""
    script = Path(sys.executable).with_name("zjobs")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "zjobs"]


def serve_flags(options: ProcessorOptions) -> list[str]:
    """The ``zjobs serve`` flags for the options that differ from the defaults, except the
    name and endpoints (a unit gives those itself). A unit file holds a command line, so
    here, unlike for ``zjobs up``'s children, the options become flags: each is its field's
    name with dashes, None written as the flag's "none" value."""
    words: list[str] = []
    defaults = ProcessorOptions()
    for name in option_names():
        value = getattr(options, name)
        if name in ("name", "requests", "responses") or value == getattr(defaults, name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words += [flag] if value else []
        elif isinstance(value, Keepalive):
            parts = [value.idle_s, value.interval_s, value.count]
            if value.zmtp_interval_ms is not None:
                parts += [value.zmtp_interval_ms, value.zmtp_timeout_ms]
            words += [flag, ",".join(map(str, parts))]
        elif value is None:  # heartbeat_interval_s and keepalive: "none" on the command line
            words += [flag, "off" if name == "keepalive" else "0"]
        else:
            words += [flag, str(value)]
    return words


def _unit_part(text: str) -> str:
    """A name usable in a unit file name (``parse->score`` becomes ``parse-to-score``)."""
    return _UNIT_CHARS.sub("_", text.replace("->", "-to-").replace("+", "-and-"))


def _quote(arg: str) -> str:
    """One ExecStart word: systemd's specifiers (%) and variables ($) kept literal."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not re.search(r"[\s\"'\\;]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec(words: Sequence[str], *, variables: Iterable[str] = ()) -> str:
    """An ExecStart line; ``variables`` are words passed through as ``${NAME}``."""
    keep = set(variables)
    return " ".join(w if w in keep else _quote(w) for w in words)


def _ipc_dirs(endpoints: Iterable[str]) -> list[str]:
    return sorted({str(Path(ep[len("ipc://"):]).parent) for ep in endpoints
                   if ep.startswith("ipc://")})


class _Names:
    def __init__(self, system: System) -> None:
        self.prefix = _unit_part(system.name)
        self.target = f"{self.prefix}.target"

    def processor(self, spec: ProcessorSpec, template: bool = False) -> str:
        base = f"{self.prefix}-{_unit_part(spec.key)}"
        return f"{base}@.service" if template else f"{base}.service"

    def instances(self, spec: ProcessorSpec) -> list[str]:
        """The units that run the processor's replicas."""
        if spec.replicas == 1:
            return [self.processor(spec)]
        base = f"{self.prefix}-{_unit_part(spec.key)}"
        return [f"{base}@{i}.service" for i in range(spec.replicas)]

    def link(self, link: LinkSpec) -> str:
        return f"{self.prefix}-link-{_unit_part(link.name)}.service"


def _service(description: str, part_of: str, after: Sequence[str], exec_start: str,
             app_dir: Path, stop_timeout_s: float, restart_s: float,
             pre: Sequence[str] = ()) -> str:
    lines = [
        "# Written by zjobs up --export systemd; edit the system file and export again.",
        "[Unit]",
        f"Description={description.replace('%', '%%').replace('%%i', '%i')}",
        f"PartOf={part_of}",
        f"After={' '.join(['network-online.target', *after])}",
        f"Wants={' '.join(['network-online.target', *after])}",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=exec",
        f"WorkingDirectory={_quote(str(app_dir))}",
        "Environment=PYTHONUNBUFFERED=1",
        *[f"ExecStartPre={line}" for line in pre],
        f"ExecStart={exec_start}",
        "Restart=always",
        f"RestartSec={restart_s:g}",
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        f"TimeoutStopSec={stop_timeout_s:g}",
        "",
        "[Install]",
        f"WantedBy={part_of}",
        "",
    ]
    return "\n".join(lines)


def systemd_units(system: System, *, command: Sequence[str] | None = None,
                  stop_timeout_s: float | None = None,
                  restart_s: float | None = None) -> dict[str, str]:
    """The unit files for the processors and links this host runs: file name -> text
    (drop-ins as ``UNIT.d/endpoints.conf``).

    Args:
        system: a loaded system file (``--only`` respected).
        command: how to run zjobs (default: :func:`default_command`); must be absolute.
        stop_timeout_s: ``TimeoutStopSec`` (default: the supervisor's ``stop_timeout_s``).
        restart_s: ``RestartSec`` (default: the supervisor's first backoff).

    Raises:
        SystemFileError: two processors or links map to the same unit name.
    """
    defaults = Supervisor(out=lambda line: None)
    stop_s = defaults.stop_timeout_s if stop_timeout_s is None else stop_timeout_s
    backoff = defaults.backoff_s if restart_s is None else restart_s
    zjobs = list(command or default_command())
    mkdir = shutil.which("mkdir") or "/bin/mkdir"
    names = _Names(system)
    units: dict[str, str] = {}
    wanted: list[str] = []

    def add(name: str, text: str, line: int | None) -> None:
        if name in units:
            raise SystemFileError([Problem(str(system.path), line,
                                           f"two units would be named {name}")])
        units[name] = text

    for spec in system.processors.values():
        if not system.runs(spec.key):
            continue
        template = spec.replicas > 1
        words = [*zjobs, "serve", spec.job,
                 "--requests", f"${{{_REQUESTS_VAR}}}" if template else spec.requests[0],
                 "--responses", f"${{{_RESPONSES_VAR}}}" if template else spec.responses[0],
                 "--name", spec.name, "--app-dir", str(system.app_dir)]
        if spec.resources:
            words += ["--resources", spec.resources]
        words += serve_flags(spec.options)
        replica = " (replica %i)" if template else ""
        pre = [_exec([mkdir, "-p", d]) for d in _ipc_dirs((*spec.requests, *spec.responses))]
        add(names.processor(spec, template),
            _service(f"zjobs processor {spec.key} of {system.name}{replica}", names.target,
                     [], _exec(words, variables=(f"${{{_REQUESTS_VAR}}}",
                                                 f"${{{_RESPONSES_VAR}}}")),
                     system.app_dir, stop_s, backoff, pre), spec.line)
        if template:
            for unit, requests, responses in zip(names.instances(spec), spec.requests,
                                                 spec.responses, strict=True):
                add(f"{unit}.d/endpoints.conf",
                    "[Service]\n"
                    f"Environment={_quote(f'{_REQUESTS_VAR}={requests}')} "
                    f"{_quote(f'{_RESPONSES_VAR}={responses}')}\n", spec.line)
        wanted += names.instances(spec)

    for link in system.links:
        if not system.runs(link.name):
            continue
        words = [*zjobs, "link", "--name", link.name, "--app-dir", str(system.app_dir)]
        if link.topic:
            words += ["--topic", link.topic]
        after: list[str] = []
        for key in link.sources:
            source = system.processors[key]
            for requests, responses in zip(source.requests, source.responses, strict=True):
                words += ["--from", connectable(responses), "--from-requests",
                          connectable(requests)]
            after += names.instances(source)
        for key in link.targets:
            target = system.processors[key]
            for requests, responses in zip(target.requests, target.responses, strict=True):
                words += ["--to-requests", connectable(requests)]
                if link.retries:  # the link watches the target's answers
                    words += ["--to-responses", connectable(responses)]
            after += names.instances(target)
        if link.retries:
            words += ["--retries", str(link.retries), "--retry-timeout-s",
                      repr(link.retry_timeout_s)]
        if link.transform:
            words += ["--transform", link.transform]
        if link.keep:
            words += ["--keep", link.keep]
        # Only this host's processors can be ordered; the others are reached over the network.
        local = [u for u in dict.fromkeys(after) if any(
            u in names.instances(p) for p in system.processors.values() if system.runs(p.key))]
        add(names.link(link),
            _service(f"zjobs link {link.name} of {system.name}", names.target, local,
                     _exec(words), system.app_dir, stop_s, backoff), link.line)
        wanted.append(names.link(link))

    units[names.target] = "\n".join([
        "# Written by zjobs up --export systemd; edit the system file and export again.",
        "[Unit]",
        f"Description=zjobs system {system.name} ({system.path})",
        f"Wants={' '.join(wanted)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
    return units


def write_systemd(system: System, directory: str | Path, *,
                  command: Sequence[str] | None = None, stop_timeout_s: float | None = None,
                  restart_s: float | None = None) -> list[Path]:
    """Write :func:`systemd_units` into ``directory`` (created if needed); the paths written.

    Install them with ``cp -r DIR/* /etc/systemd/system/ && systemctl daemon-reload &&
    systemctl enable --now SYSTEM.target``.
    """
    folder = Path(directory)
    written = []
    units = systemd_units(system, command=command, stop_timeout_s=stop_timeout_s,
                          restart_s=restart_s)
    for name, text in units.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
