"""``zjobs up --export systemd``: unit files that systemd accepts, whose commands run the system."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from jobs_interop import REPO, Peer, run, skip_or_fail

import zjobs
from zjobs.cli import main, serve
from zjobs.run.export import serve_flags, systemd_units
from zjobs.run.system import SystemFileError, load_system
from zjobs.testing import wait_until

PIPELINE = REPO / "examples" / "pipeline" / "system.toml"

JOBS = '''
def inc(x, resources):
    return x + 1

def double(x, resources):
    return x * 2
'''


def small_system(folder: Path, ipc: Path) -> Path:
    """inc (two replicas) -> double, over ipc, with a link name systemd must escape."""
    (folder / "jobs_export.py").write_text(JOBS, encoding="utf-8")
    path = folder / "system.toml"
    path.write_text(f'''[system]
name = "small"

[processors.inc]
job = "jobs_export:inc"
replicas = 2
requests = "ipc://{ipc}/inc-{{i}}.req"
responses = ["ipc://{ipc}/inc-a.pub", "ipc://{ipc}/inc-b.pub"]

[processors.double]
job = "jobs_export:double"
requests = "ipc://{ipc}/double.req"
responses = "ipc://{ipc}/double.pub"

[[links]]
from = "inc"
to = "double"
name = "inc to double 100%"
''', encoding="utf-8")
    return path


def export(file: Path, folder: Path, *args: str) -> list[str]:
    result = CliRunner().invoke(main, ["up", *args, "--export", "systemd", str(folder),
                                       str(file)])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def verify(units: list[Path]) -> None:
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("systemd-analyze not found (Debian package systemd)")
    done = run(["systemd-analyze", "verify", *map(str, units)], timeout_s=60)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


def instances(folder: Path) -> list[Path]:
    """Every unit to verify: templates by their instances (``x@0.service``)."""
    units = [p for p in folder.iterdir() if p.is_file() and "@." not in p.name]
    units += [folder / d.name[:-2] for d in folder.iterdir() if d.name.endswith(".service.d")]
    return sorted(units)


def test_the_example_pipeline_exports_units_systemd_accepts(tmp_path: Path) -> None:
    lines = export(PIPELINE, tmp_path)
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["pipeline-link-parse-to-score.service",
                     "pipeline-link-score-to-store.service", "pipeline-parse.service",
                     "pipeline-score@.service", "pipeline-score@0.service.d/endpoints.conf",
                     "pipeline-score@1.service.d/endpoints.conf", "pipeline-store.service",
                     "pipeline.target"]
    assert lines[-1].endswith("systemctl enable --now pipeline.target")
    verify(instances(tmp_path))
    link = (tmp_path / "pipeline-link-score-to-store.service").read_text()
    # Ordered after (and wanting) the units of the processors it connects.
    assert ("After=network-online.target pipeline-score@0.service pipeline-score@1.service "
            "pipeline-store.service") in link
    target = (tmp_path / "pipeline.target").read_text()
    assert "Wants=pipeline-parse.service pipeline-score@0.service pipeline-score@1.service" \
        in target
    for unit in ("Restart=always", "KillSignal=SIGTERM", "TimeoutStopSec=10"):
        assert unit in link


def test_only_exports_this_hosts_part(tmp_path: Path) -> None:
    export(PIPELINE, tmp_path, "--only", "score,score->store")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "pipeline-link-score-to-store.service", "pipeline-score@.service", "pipeline.target"]
    link = (tmp_path / "pipeline-link-score-to-store.service").read_text()
    assert "pipeline-store.service" not in link  # on another host: not ordered here
    verify(instances(tmp_path))


def test_a_verify_failure_would_be_seen(tmp_path: Path) -> None:
    export(PIPELINE, tmp_path)
    unit = tmp_path / "pipeline-parse.service"
    unit.write_text(unit.read_text().replace("Restart=always", "Restart=sometimes"))
    with pytest.raises(AssertionError, match="restart specifier"):
        verify([unit])


def test_units_with_clashing_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text('''[processors."a b"]
job = "x:y"
requests = "ipc:///tmp/ab.req"
responses = "ipc:///tmp/ab.pub"

[processors.a_b]
job = "x:y"
requests = "ipc:///tmp/a_b.req"
responses = "ipc:///tmp/a_b.pub"
''', encoding="utf-8")
    with pytest.raises(SystemFileError, match=r"two units would be named system-a_b\.service"):
        systemd_units(load_system(path, check_imports=False))


# -- the units' commands run the system -----------------------------------------------------


def unit_command(folder: Path, unit: str) -> tuple[list[str], Path]:
    """A unit's ExecStart as argv (its drop-in's Environment substituted) and its folder."""
    template = re.sub(r"@\d+\.service$", "@.service", unit)
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read([folder / template, *sorted((folder / f"{unit}.d").glob("*.conf"))])
    service = parser["Service"]
    env = dict(item.split("=", 1) for item in shlex.split(service.get("Environment", "")))
    line = service["ExecStart"].replace("%%", "%").replace("$$", "\0")
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line).replace("\0", "$")
    return shlex.split(line), Path(service["WorkingDirectory"])


@pytest.fixture
def started() -> Iterator[list[Peer]]:
    peers: list[Peer] = []
    yield peers
    for peer in peers:
        peer.stop()


def test_the_exported_commands_run_the_system(tmp_path: Path, ipc_dir: Path,
                                              started: list[Peer]) -> None:
    app = tmp_path / "app"
    app.mkdir()
    units = tmp_path / "units"
    export(small_system(app, ipc_dir), units)
    verify(instances(units))
    # systemd starts the processors, then the link (After=); so does the test.
    for unit in ("small-inc@0.service", "small-inc@1.service", "small-double.service"):
        argv, cwd = unit_command(units, unit)
        assert argv[1:3] == ["serve", "jobs_export:inc" if "inc" in unit else
                             "jobs_export:double"]
        started.append(Peer(argv, cwd=cwd))
    argv, cwd = unit_command(units, "small-link-inc_to_double_100_.service")
    assert argv[argv.index("--name") + 1] == "inc to double 100%"
    link = Peer(argv, cwd=cwd, wait_listening=False)
    started.append(link)
    wait_until(lambda: any(line.startswith("forwarding ") for line in link.lines),
               timeout_s=60)
    entry = [f"ipc://{ipc_dir}/inc-{i}.req" for i in range(2)]
    with zjobs.Pipeline.connect(entry, f"ipc://{ipc_dir}/double.pub", timeout_s=30) as chain:
        assert [chain.call(n) for n in range(4)] == [(n + 1) * 2 for n in range(4)]
    # KillSignal=SIGTERM: each stops gracefully with 0.
    assert [peer.stop() for peer in started] == [0, 0, 0, 0]


def test_link_retries_reach_the_exported_link_command(tmp_path: Path, ipc_dir: Path) -> None:
    path = small_system(tmp_path, ipc_dir)
    path.write_text(path.read_text().replace('name = "inc to double 100%"\n',
                                             'name = "inc to double 100%"\nretries = 2\n'))
    folder = tmp_path / "units"
    export(path, folder)
    link = next(p.name for p in folder.iterdir() if p.name.startswith("small-link-"))
    argv, _ = unit_command(folder, link)
    assert argv[argv.index("--retries"):argv.index("--retries") + 4] == [
        "--retries", "2", "--retry-timeout-s", "5.0"]
    assert argv[argv.index("--to-requests"):argv.index("--to-requests") + 4] == [
        "--to-requests", f"ipc://{ipc_dir}/double.req", "--to-responses",
        f"ipc://{ipc_dir}/double.pub"]


def test_a_unit_carries_every_processor_option_as_serve_flags(
        monkeypatch: pytest.MonkeyPatch) -> None:
    options = zjobs.ProcessorOptions(concurrency=3, threads=True, cache_size=7, dedup_size=0,
                                     dedup_ttl_s=2.5, heartbeat_interval_s=None, rcvhwm=9,
                                     max_message_size=-1,
                                     keepalive=zjobs.Keepalive(2, 1, 3, 300, 900))
    flags = serve_flags(options)
    assert "--name" not in flags and "--requests" not in flags
    served: list[zjobs.ServeSettings] = []
    monkeypatch.setattr(serve, "_serve", lambda settings, *rest: served.append(settings))
    done = CliRunner().invoke(main, ["serve", "m:f", "--requests", "ipc:///tmp/r",
                                     "--responses", "ipc:///tmp/p", *flags],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert served[0].options == options.replace(requests="ipc:///tmp/r",
                                                responses="ipc:///tmp/p")
    assert serve_flags(zjobs.ProcessorOptions(keepalive=None)) == ["--keepalive", "off"]
