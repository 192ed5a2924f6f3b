"""``zjobs up`` and ``zjobs link``: system files checked line by line, systems run as real
supervised processes (kill -9 and restart, graceful stop), the example pipeline."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from jobs_up import Up, alive

from zjobs import Keepalive, Pipeline, ProcessorOptions, ServeSettings, StageError, ZmqProcessor
from zjobs.cli import main
from zjobs.run.system import SystemFileError, link_children, load_system, processor_children
from zjobs.testing import wait_subscribed
from zjobs.wire.chain import PATH_KEY
from zjobs.wire.protocol import PONG

ROOT = Path(__file__).resolve().parent.parent

JOBS = '''
def inc(x, resources):
    return x + 1

def double(x, resources):
    if x == 1001:
        raise ValueError("unlucky")
    return x * 2

def negate(x, resources):
    return -x

NOT_A_JOB = 42
'''


def expected(x: int) -> int:
    return -((x + 1) * 2)


@pytest.fixture
def jobs_module(tmp_path: Path) -> str:
    """A jobs module with a unique name (modules stay cached in sys.modules)."""
    name = f"jobs_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text(JOBS)
    return name


def chain_toml(mod: str, ipc: Path) -> str:
    return f'''[system]
name = "chain"

[processors.a]
job = "{mod}:inc"
requests = "ipc://{ipc}/a.req"
responses = "ipc://{ipc}/a.pub"

[processors.b]
job = "{mod}:double"
requests = "ipc://{ipc}/b.req"
responses = "ipc://{ipc}/b.pub"

[processors.c]
job = "{mod}:negate"
requests = "ipc://{ipc}/c.req"
responses = "ipc://{ipc}/c.pub"

[[links]]
from = "a"
to = "b"

[[links]]
from = "b"
to = "c"
'''


def check(path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["up", "--check", str(path)])
    return result.exit_code, result.output.splitlines()


# -- zjobs up --check -------------------------------------------------------------------------


def test_check_accepts_a_good_file(tmp_path: Path, jobs_module: str, ipc_dir: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(chain_toml(jobs_module, ipc_dir))
    code, lines = check(path)
    assert code == 0, lines
    assert lines == [f"{path}: ok: 3 processor(s), 2 link(s)"]


def test_check_reports_an_unknown_job_with_its_line(tmp_path: Path, jobs_module: str,
                                                    ipc_dir: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(chain_toml(jobs_module, ipc_dir).replace(":double", ":tripple"))
    code, lines = check(path)
    assert code == 2
    assert lines == [f"Error: {path}:10: processor 'b': job {jobs_module}:tripple: "
                     f"'{jobs_module}' has no attribute 'tripple'"]


def test_check_reports_a_missing_endpoint_at_its_table(tmp_path: Path, jobs_module: str,
                                                       ipc_dir: Path) -> None:
    path = tmp_path / "system.toml"
    text = chain_toml(jobs_module, ipc_dir).replace(f'responses = "ipc://{ipc_dir}/c.pub"\n',
                                                    "")
    path.write_text(text)
    code, lines = check(path)
    assert code == 2
    assert lines == [f"Error: {path}:14: processor 'c': missing endpoint 'responses'"]


def test_check_reports_a_link_to_an_undeclared_processor(tmp_path: Path, jobs_module: str,
                                                         ipc_dir: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(chain_toml(jobs_module, ipc_dir).replace('to = "c"', 'to = "ghost"'))
    code, lines = check(path)
    assert code == 2
    assert lines == [f"Error: {path}:25: link #2: to 'ghost' is not a declared processor "
                     "(declared: a, b, c)"]


def test_check_reports_bad_toml_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text('[processors.a]\njob = "m:f"\nrequests = "ipc:///tmp/x\n')
    code, lines = check(path)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}:3: invalid TOML: ")


def test_check_reports_every_mistake_at_once(tmp_path: Path, jobs_module: str) -> None:
    path = tmp_path / "system.toml"
    path.write_text(f'''[processors.a]
job = "{jobs_module}:NOT_A_JOB"
requests = "tcp://127.0.0.1:*"
responses = "inproc://a"
replica = 2

[processors.b]
job = "no_such_module_zj:f"
replicas = 3
requests = ["ipc:///tmp/zj-b0", "ipc:///tmp/zj-b1"]
responses = "ipc:///tmp/zj-b.pub"

[[links]]
from = ["a", "nobody"]
to = "b"
transform = "{jobs_module}:NOT_A_JOB"
''')
    code, lines = check(path)
    assert code == 2
    found = {int(re.match(rf"Error: {re.escape(str(path))}:(\d+): ", line)[1]): line  # type: ignore[index]
             for line in lines}
    assert len(found) == len(lines) == 9, lines
    assert "an int is not a job" in found[2]
    assert "a system file needs fixed ports" in found[3]
    assert "inproc:// cannot cross processes" in found[4]
    assert "unknown key 'replica'" in found[5]
    assert "no module named 'no_such_module_zj'" in found[8]
    assert "2 requests endpoint(s) for replicas = 3" in found[10]
    assert "replicas = 3 need 3 responses endpoints" in found[11]
    assert "from 'nobody' is not a declared processor" in found[14]
    assert "transform" in found[16] and "is not callable" in found[16]


def test_every_processor_option_is_a_key_and_reaches_each_replica(tmp_path: Path,
                                                                  jobs_module: str,
                                                                  ipc_dir: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(f'''[processors.sq]
job = "{jobs_module}:double"
replicas = 2
requests = "ipc://{ipc_dir}/sq-{{i}}.req"
responses = "ipc://{ipc_dir}/sq-{{i}}.pub"
cache_size = 8
concurrency = 3
dedup_ttl_s = 2.5
heartbeat_interval_s = false
keepalive = {{ idle_s = 2, count = 3 }}
sndhwm = 10

[processors.old]
job = "{jobs_module}:inc"
requests = "ipc://{ipc_dir}/old.req"
responses = "ipc://{ipc_dir}/old.pub"
cache = 4

[[links]]
from = "sq"
to = "old"
filter = "{jobs_module}:double"
''')
    system = load_system(path)
    expected_options = ProcessorOptions(name="sq", cache_size=8, concurrency=3, dedup_ttl_s=2.5,
                                        heartbeat_interval_s=None, sndhwm=10,
                                        keepalive=Keepalive(idle_s=2, count=3))
    children = processor_children(system, python="python")
    settings = [ServeSettings.from_dict(json.loads(child.argv[4])) for child in children]
    assert [c.argv[3] for c in children] == ["serve-settings"] * 3
    assert settings[1] == ServeSettings.of(
        f"{jobs_module}:double", expected_options.replace(
            requests=f"ipc://{ipc_dir}/sq-1.req", responses=f"ipc://{ipc_dir}/sq-1.pub"))
    assert settings[2].cache_size == 4 and settings[2].name == "old"  # the deprecated key
    assert system.links[0].keep == f"{jobs_module}:double"


def test_check_reports_bad_option_values_with_their_lines(tmp_path: Path,
                                                          jobs_module: str) -> None:
    path = tmp_path / "system.toml"
    path.write_text(f'''[processors.a]
job = "{jobs_module}:inc"
requests = "ipc:///tmp/zj-a.req"
responses = "ipc:///tmp/zj-a.pub"
concurrency = 0
threads = "yes"
cache = 3
cache_size = 3
colour = "red"
''')
    code, lines = check(path)
    assert code == 2
    found = {int(re.match(rf"Error: {re.escape(str(path))}:(\d+): ", line)[1]): line  # type: ignore[index]
             for line in lines}
    assert len(found) == len(lines) == 4, lines
    assert "concurrency must be at least 1, not 0" in found[5]
    assert "threads must be true or false" in found[6]
    assert "'cache' and 'cache_size' are the same option" in found[7]
    assert "unknown key 'colour'" in found[9]


def test_only_must_name_known_processors_or_links(tmp_path: Path, jobs_module: str,
                                                  ipc_dir: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(chain_toml(jobs_module, ipc_dir))
    result = CliRunner().invoke(main, ["up", "--check", "--only", "a,zz", str(path)])
    assert result.exit_code == 2
    assert "--only names 'zz'" in result.output
    system = load_system(path).select(["a", "b->c"])
    assert system.runs("a") and system.runs("b->c") and not system.runs("b")
    with pytest.raises(SystemFileError):
        load_system(tmp_path / "missing.toml")


def test_only_does_not_import_the_code_other_hosts_run(tmp_path: Path, jobs_module: str,
                                                     ipc_dir: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(chain_toml(jobs_module, ipc_dir).replace(f"{jobs_module}:negate",
                                                             "lives_elsewhere_zj:negate"))
    code, lines = check(path)
    assert code == 2 and "no module named 'lives_elsewhere_zj'" in lines[0]
    result = CliRunner().invoke(main, ["up", "--check", "--only", "a,b,a->b", str(path)])
    assert result.exit_code == 0, result.output


def test_link_retries_in_the_system_file_reach_zjobs_link(tmp_path: Path, jobs_module: str,
                                                          ipc_dir: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(chain_toml(jobs_module, ipc_dir).replace(
        'to = "c"\n', 'to = "c"\nretries = 3\nretry_timeout_s = 0.5\n'))
    system = load_system(path)
    plain, retrying = link_children(system)
    assert "--retries" not in plain.argv
    argv = list(retrying.argv)
    assert argv[argv.index("--retries") + 1] == "3"
    assert argv[argv.index("--retry-timeout-s") + 1] == "0.5"
    assert argv[argv.index("--to-requests") + 1:argv.index("--to-requests") + 4] == [
        f"ipc://{ipc_dir}/c.req", "--to-responses", f"ipc://{ipc_dir}/c.pub"]
    assert retrying.describe == "link b->c: b -> c retries=3"


def test_check_reports_bad_link_retries_with_their_lines(tmp_path: Path, jobs_module: str,
                                                          ipc_dir: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(chain_toml(jobs_module, ipc_dir).replace(
        'to = "c"\n', 'to = "c"\nretries = -1\nretry_timeout_s = 0\n'))
    code, lines = check(path)
    assert code == 2
    assert lines == [f"Error: {path}:26: link #2: retries must be a whole number >= 0",
                     f"Error: {path}:27: link #2: retry_timeout_s must be a number of "
                     "seconds > 0"]


# -- zjobs up, running ------------------------------------------------------------------------


@pytest.fixture
def up_chain(tmp_path: Path, jobs_module: str, ipc_dir: Path) -> Iterator[tuple[Up, Path]]:
    path = tmp_path / "system.toml"
    path.write_text(chain_toml(jobs_module, ipc_dir))
    up = Up(path)
    try:
        up.wait_for(lambda line: line.startswith("ready: chain"))
        yield up, ipc_dir
    finally:
        up.cleanup()


@pytest.mark.timeout(120)
def test_up_restarts_a_killed_processor_and_serves_after_the_restart(
        up_chain: tuple[Up, Path]) -> None:
    up, ipc = up_chain
    assert any(line == f"processor b: requests=ipc://{ipc}/b.req responses=ipc://{ipc}/b.pub"
               for line in up.lines)
    with Pipeline.connect(f"ipc://{ipc}/a.req", f"ipc://{ipc}/c.pub",
                          timeout_s=10) as pipeline:
        assert [pipeline.call(i) for i in range(20)] == [expected(i) for i in range(20)]
        with pytest.raises(StageError) as info:
            pipeline.call(1000)
        assert info.value.stage == "b"

        killed = up.pids()["b"]
        os.kill(killed, signal.SIGKILL)
        up.wait_for(lambda line: line.startswith(f"b (pid {killed}) exited with signal SIGKILL"))
        up.wait_for(lambda line: line.startswith("b restarted") and "ready" in line)
        assert up.pids()["b"] != killed
        # The restarted b answers pings; wait until the links on both sides of it have
        # reconnected: a ping through the whole chain comes back.
        deadline = time.monotonic() + 30
        while True:
            try:
                pipeline.ping(timeout_s=1.0)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "the chain did not come back"
        futures = [pipeline.submit(i) for i in range(100, 300)]
        assert [f.result(timeout=30) for f in futures] == [expected(i) for i in range(100, 300)]
    children = up.pids()
    assert up.stop() == 0
    assert up.lines[-1] == "stopped chain"
    for name, pid in children.items():
        assert any(line.startswith(f"stopped {name} (pid {pid}, code 0)") for line in up.lines)
        assert not alive(pid)


@pytest.mark.timeout(120)
def test_up_exits_1_and_stops_everything_when_a_child_cannot_start(
        tmp_path: Path, jobs_module: str, ipc_dir: Path) -> None:
    with ZmqProcessor(lambda x, r: x) as squatter:  # holds the port processor c wants
        port = squatter.endpoints.requests.rsplit(":", 1)[1]
        path = tmp_path / "system.toml"
        path.write_text(chain_toml(jobs_module, ipc_dir).replace(
            f"ipc://{ipc_dir}/c.req", f"tcp://127.0.0.1:{port}"))
        up = Up(path)
        try:
            code = up.process.wait(60)
            up.stop_reading()
        finally:
            up.cleanup()
    assert code == 1
    assert any("address already in use" in line for line in up.lines), up.lines
    assert up.lines[-1].startswith("Error: c exited with code 2 while starting")
    for name, pid in up.pids().items():
        assert name == "c" or any(line.startswith(f"stopped {name} (pid {pid}")
                                  for line in up.lines)
        assert not alive(pid)


@pytest.mark.timeout(120)
def test_example_pipeline_stores_results_in_sqlite(tmp_path: Path, ipc_dir: Path) -> None:
    example = ROOT / "examples" / "pipeline"
    path = tmp_path / "system.toml"
    text = (example / "system.toml").read_text().replace("/tmp/zjobs-pipeline", str(ipc_dir))
    path.write_text(text.replace("[system]\n", f'[system]\napp_dir = "{example}"\n'))
    database = tmp_path / "results.db"
    up = Up(path, env={"ZJOBS_PIPELINE_DB": str(database)})
    try:
        up.wait_for(lambda line: line.startswith("ready: pipeline"))
        assert f"store | store: opened {database}" in up.lines
        with Pipeline.connect(f"ipc://{ipc_dir}/parse.req", f"ipc://{ipc_dir}/store.pub",
                              timeout_s=20) as pipeline:
            texts = [f"a great day number {i}" for i in range(50)]
            results = [f.result(30) for f in [pipeline.submit(t) for t in texts]]
            with pytest.raises(StageError) as info:
                pipeline.call("")
            assert info.value.stage == "score" and "nothing to score" in info.value.message
            response = pipeline.call_response("slow and broken")
        assert [r["text"] for r in results] == texts and results[0]["score"] == 1
        assert response.meta is not None and response.meta[PATH_KEY] == ["parse", "score"]
        assert response.value["score"] == -2
        assert up.stop(signal.SIGINT) == 0
        assert f"store | store: closed {database}" in up.lines
    finally:
        up.cleanup()
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT text, score FROM results ORDER BY id").fetchall()
    assert len(rows) == 51 and {text for text, _ in rows} == {*texts, "slow and broken"}


# -- zjobs link ---------------------------------------------------------------------------


def test_link_command_forwards_until_sigterm(tmp_path: Path, jobs_module: str) -> None:
    (tmp_path / "halving.py").write_text("def halve(x):\n    return x // 2\n")
    with (ZmqProcessor(lambda x, r: x + 1, name="up") as up,
          ZmqProcessor(lambda x, r: -x, name="down") as down):
        argv = [sys.executable, "-m", "zjobs", "link", "--name", "up-down",
                "--from", up.connect_endpoints.responses,
                "--from-requests", up.connect_endpoints.requests,
                "--to-requests", down.connect_endpoints.requests,
                "--transform", "halving:halve", "--app-dir", str(tmp_path)]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout is not None
            first = child.stdout.readline()
            assert first.startswith("forwarding name=up-down from=")
            topic = secrets.token_hex(16)
            with (down.receiver(topics=[topic]) as out, down.sender() as probe,
                  up.sender() as entry):
                wait_subscribed(probe, out, topic=topic)
                entry.send(9, id="nine", reply_to=topic)
                response = out.receive(timeout=10)
                while response.status == PONG:  # a late answer to one of the probe's pings
                    response = out.receive(timeout=10)
            assert response.id == "nine" and response.value == -5
            assert response.meta == {PATH_KEY: ["up"]}
            child.send_signal(signal.SIGTERM)
            _, err = child.communicate(timeout=30)
            assert child.returncode == 0
            # received may include late pongs of the link's own readiness pings (ignored)
            assert re.search(r"link 'up-down' stopped: \{'received': \d+, 'forwarded': 1,", err)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()


def test_link_command_usage_errors(tmp_path: Path, jobs_module: str) -> None:
    runner = CliRunner()
    base = ["link", "--from", "tcp://127.0.0.1:1", "--to-requests", "tcp://127.0.0.1:2",
            "--app-dir", str(tmp_path)]
    result = runner.invoke(main, [*base, "--transform", f"{jobs_module}:NOT_A_JOB"])
    assert result.exit_code == 2 and "is not callable" in result.output
    result = runner.invoke(main, [*base, "--keep", f"{jobs_module}:missing"])
    assert result.exit_code == 2 and "has no attribute 'missing'" in result.output
    result = runner.invoke(main, [*base, "--filter", f"{jobs_module}:missing"])  # old name
    assert result.exit_code == 2 and "has no attribute 'missing'" in result.output
    assert "--filter is deprecated; use --keep" in result.output
    result = runner.invoke(main, [*base, "--from-requests", "tcp://127.0.0.1:3",
                                  "--from-requests", "tcp://127.0.0.1:4"])
    assert result.exit_code == 2 and "once per --from" in result.output
    result = runner.invoke(main, [*base, "--retries", "2"])
    assert result.exit_code == 2 and "--retries needs --to-responses" in result.output
    result = runner.invoke(main, [*base, "--to-responses", "tcp://127.0.0.1:3",
                                  "--to-responses", "tcp://127.0.0.1:4"])
    assert result.exit_code == 2 and "once per --to-requests" in result.output


# -- zjobs up: a supervisor that supervises -------------------------------------------------


@pytest.mark.timeout(120)
def test_children_of_up_die_with_it_when_it_is_killed_with_sigkill(
        up_chain: tuple[Up, Path]) -> None:
    up, _ = up_chain
    children = up.pids()
    assert len(children) == 5 and all(alive(pid) for pid in children.values())
    up.process.kill()
    up.process.wait(10)
    deadline = time.monotonic() + 2.0
    left = dict(children)
    while left and time.monotonic() < deadline:
        left = {name: pid for name, pid in left.items() if alive(pid)}
        time.sleep(0.02)
    assert left == {}, f"{len(left)} of {len(children)} children outlived zjobs up"


@pytest.mark.timeout(120)
def test_up_over_endpoints_another_daemon_serves_exits_nonzero_naming_them(
        tmp_path: Path, jobs_module: str, ipc_dir: Path) -> None:
    # Another daemon answers pings on both endpoints that processor a wants: its pongs
    # must not count as a's readiness, and a's bind failure must end `zjobs up`.
    other = subprocess.Popen(
        [sys.executable, "-m", "zjobs", "serve", f"{jobs_module}:inc", "--requests",
         "tcp://127.0.0.1:*", "--responses", "tcp://127.0.0.1:*", "--app-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert other.stdout is not None
        listening = re.match(r"listening requests=(\S+) responses=(\S+)",
                             other.stdout.readline())
        assert listening is not None
        held_requests, held_responses = listening[1], listening[2]
        path = tmp_path / "system.toml"
        path.write_text(chain_toml(jobs_module, ipc_dir)
                        .replace(f"ipc://{ipc_dir}/a.req", held_requests)
                        .replace(f"ipc://{ipc_dir}/a.pub", held_responses))
        up = subprocess.Popen([sys.executable, "-m", "zjobs", "up", str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path)
        try:
            out, err = up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            out, err = up.communicate()
        finally:
            for match in re.finditer(r"started \S+ \(pid (\d+)\)", out if up.poll() is not None
                                     else ""):
                if alive(int(match[1])):
                    os.kill(int(match[1]), signal.SIGKILL)
        assert not any(line.startswith("ready:") for line in out.splitlines()), out
        assert up.returncode not in (0, None), (up.returncode, out, err)
        assert f"cannot bind {held_requests}: address already in use" in err, (out, err)
    finally:
        other.terminate()
        other.wait(30)
        if other.stdout is not None:
            other.stdout.close()


def test_up_writes_children_logs_and_errors_to_stderr(tmp_path: Path, jobs_module: str,
                                                      ipc_dir: Path) -> None:
    with ZmqProcessor(lambda x, r: x) as squatter:  # holds the port processor c wants
        port = squatter.endpoints.requests.rsplit(":", 1)[1]
        path = tmp_path / "system.toml"
        path.write_text(chain_toml(jobs_module, ipc_dir).replace(
            f"ipc://{ipc_dir}/c.req", f"tcp://127.0.0.1:{port}"))
        done = subprocess.run([sys.executable, "-m", "zjobs", "up", str(path)],
                              capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 1
    assert re.search(r"^c \| Error: cannot bind .*address already in use$", done.stderr, re.M)
    assert re.search(r"^a \| .* INFO zjobs.run.daemon: serving ", done.stderr, re.M)
    assert "Error: cannot bind" not in done.stdout and " INFO " not in done.stdout
    assert re.search(r"^started c \(pid \d+\)$", done.stdout, re.M)


# -- link cycles ------------------------------------------------------------------------------

def _cycle_toml(mod: str, ipc: Path, links: str) -> str:
    return chain_toml(mod, ipc).split("[[links]]")[0] + links


@pytest.mark.parametrize(("links", "cycle"), [
    ('[[links]]\nfrom = "a"\nto = "b"\n\n[[links]]\nfrom = "b"\nto = "a"\n', "a -> b -> a"),
    ('[[links]]\nfrom = "a"\nto = "a"\n', "a -> a"),
    ('[[links]]\nfrom = "a"\nto = "b"\n\n[[links]]\nfrom = "b"\nto = ["c"]\n\n'
     '[[links]]\nfrom = ["c"]\nto = "a"\ntopic = "x."\n', "a -> b -> c -> a"),
])
def test_check_and_start_reject_a_link_cycle_naming_it(tmp_path: Path, jobs_module: str,
                                                       ipc_dir: Path, links: str,
                                                       cycle: str) -> None:
    path = tmp_path / "cycle.toml"
    path.write_text(_cycle_toml(jobs_module, ipc_dir, links))
    code, lines = check(path)
    assert code == 2
    assert any(f"link cycle {cycle}" in line for line in lines), lines
    result = CliRunner().invoke(main, ["up", str(path)])  # starting refuses it too
    assert result.exit_code == 2 and f"link cycle {cycle}" in result.stderr
    assert "started" not in result.stdout


def test_links_on_topics_that_cannot_meet_are_not_a_cycle(tmp_path: Path, jobs_module: str,
                                                           ipc_dir: Path) -> None:
    path = tmp_path / "topics.toml"
    path.write_text(_cycle_toml(jobs_module, ipc_dir,
                                '[[links]]\nfrom = "a"\nto = "b"\ntopic = "x."\n\n'
                                '[[links]]\nfrom = "b"\nto = "a"\ntopic = "y."\n'))
    code, lines = check(path)
    assert code == 0, lines
