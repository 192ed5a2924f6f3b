"""What a new user hits at the command line: bad input answered with one line and exit 2,
help examples that work as written, and the options users of job CLIs expect."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import zjobs
from zjobs.cli import main
from zjobs.cli.app import RET_INTERRUPTED, RET_OK, RET_USAGE
from zjobs.demo import square
from zjobs.testing import running_processor, wait_until

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def assert_one_line_error(result: Result, code: int, *texts: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    for text in texts:
        assert text in result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def processor() -> Iterator[zjobs.ZmqProcessor]:
    with running_processor(square) as proc:
        yield proc


def endpoints(proc: zjobs.ZmqProcessor) -> list[str]:
    return ["--requests", proc.endpoints.requests, "--responses", proc.endpoints.responses]


# -- 1. keygen into a folder that cannot be written -------------------------------------------

def test_keygen_into_a_path_under_a_file_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    result = invoke("keygen", "k", "--dir", str(tmp_path / "afile" / "keys"))
    assert_one_line_error(result, RET_USAGE, "cannot write key files", "afile")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_keygen_into_a_read_only_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = invoke("keygen", "k", "--dir", str(locked / "nested" / "keys"))
    assert_one_line_error(result, RET_USAGE, "cannot write key files", "ermission denied")


def test_keygen_creates_missing_nested_folders(tmp_path: Path) -> None:
    result = invoke("keygen", "k", "--dir", str(tmp_path / "a" / "b"))
    assert result.exit_code == RET_OK, result.output
    assert (tmp_path / "a" / "b" / "k.key").is_file()


# -- 3. a port out of range -------------------------------------------------------------------

@pytest.mark.parametrize("port", ["99999", "70000", "65536", "-1"])
def test_serve_port_out_of_range_is_exit_2_naming_the_endpoint(port: str) -> None:
    endpoint = f"tcp://127.0.0.1:{port}"
    result = invoke("serve", "zjobs.demo:square", "--requests", endpoint,
                    "--responses", "tcp://127.0.0.1:*")
    assert_one_line_error(result, RET_USAGE, f"cannot bind {endpoint}: port {port} is out of "
                                             "range (0 to 65535)")


def test_send_port_out_of_range_is_exit_2() -> None:
    result = invoke("send", "--requests", "tcp://127.0.0.1:70000", "--responses",
                    "tcp://127.0.0.1:70001", "1")
    assert_one_line_error(result, RET_USAGE, "cannot connect tcp://127.0.0.1:70000: port 70000 "
                                             "is out of range")


def test_up_check_says_port_out_of_range(tmp_path: Path) -> None:
    system = tmp_path / "s.toml"
    system.write_text('[processors.a]\njob = "zjobs.demo:square"\n'
                      'requests = "tcp://127.0.0.1:99999"\n'
                      f'responses = "ipc://{tmp_path}/a.pub"\n')
    result = invoke("up", "--check", str(system))
    assert result.exit_code == RET_USAGE
    assert "port 99999 is out of range (1 to 65535)" in result.stderr
    assert "fixed ports" not in result.stderr


# -- 5. a host name that cannot be resolved ---------------------------------------------------
# nohost.invalid: the .invalid domain never resolves (RFC 6761), and zjobs answers it
# without asking any resolver, so these tests send nothing anywhere. IPC is an ipc path
# that nothing binds: endpoints that only have to be valid.

IPC = "ipc://{dir}/unbound"


def ipc(args: list[str], folder: Path) -> list[str]:
    """``args`` with IPC made an ipc path in ``folder``."""
    return [arg.format(dir=folder) if arg == IPC else arg for arg in args]


@pytest.mark.parametrize("command", [
    ["send", "--requests", "tcp://nohost.invalid:1", "--responses", IPC, "7"],
    ["ping", "--requests", IPC, "--responses", "tcp://nohost.invalid:1"],
    ["listen", "--responses", "tcp://nohost.invalid:1"],
    ["link", "--from", "tcp://nohost.invalid:1", "--to-requests", IPC],
])
def test_an_unresolvable_host_is_exit_2_at_once(command: list[str], ipc_dir: Path) -> None:
    command = ipc(command, ipc_dir)
    result = invoke(*command, "--timeout", "60") if command[0] in ("send", "ping") \
        else invoke(*command)
    assert_one_line_error(result, RET_USAGE, "cannot resolve host 'nohost.invalid'")


# -- 9. an allow list that admits nobody ------------------------------------------------------

def test_serve_with_an_empty_allow_list_is_exit_2(tmp_path: Path) -> None:
    assert invoke("keygen", "server", "--dir", str(tmp_path)).exit_code == RET_OK
    (tmp_path / "clients").mkdir()
    result = invoke("serve", "zjobs.demo:square", "--requests", "tcp://127.0.0.1:*",
                    "--responses", "tcp://127.0.0.1:*",
                    "--secret-key", str(tmp_path / "server.key_secret"),
                    "--allow-clients", str(tmp_path / "clients"))
    assert_one_line_error(result, RET_USAGE, "no client keys (*.key)", "nobody could connect")


# -- 10. option counts checked up front -------------------------------------------------------

@pytest.mark.parametrize("command", ["ping", "send"])
def test_requests_and_responses_must_pair_up(command: str, ipc_dir: Path) -> None:
    args = [command, "--requests", f"ipc://{ipc_dir}/a.req", "--requests",
            f"ipc://{ipc_dir}/b.req", "--responses", f"ipc://{ipc_dir}/a.pub", "--timeout", "60"]
    result = invoke(*args, *(["1"] if command == "send" else []))
    assert_one_line_error(result, RET_USAGE, "2 --requests but 1 --responses")


# -- 11. an endpoint without a transport ------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["serve", "zjobs.demo:square", "--requests", "localhost:5555",
     "--responses", "tcp://127.0.0.1:*"],
    ["send", "--requests", "localhost:5555", "--responses", IPC, "1"],
])
def test_an_endpoint_without_transport_suggests_tcp(command: list[str], ipc_dir: Path) -> None:
    result = invoke(*ipc(command, ipc_dir))
    assert_one_line_error(result, RET_USAGE, "localhost:5555", "did you mean tcp://localhost:5555?")


# -- 13. a job with the wrong signature -------------------------------------------------------

@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    (tmp_path / "signjobs.py").write_text(
        "def onearg(x):\n    return x\n\n"
        "def three(a, b, c):\n    return a\n\n"
        "def fine(request, resources=None, *more):\n    return request\n\n"
        "class OneArgRun:\n    def run(self, request):\n        return request\n\n"
        "NUMBER = 5\n")
    return tmp_path


@pytest.mark.parametrize(("job", "text"), [
    ("signjobs:onearg", "job signjobs:onearg: onearg(x) cannot be called as "
                        "job(request, resources)"),
    ("signjobs:three", "three(a, b, c) cannot be called"),
    ("signjobs:OneArgRun", "OneArgRun.run(request) cannot be called as "
                           "run(request, resources)"),
])
def test_serve_a_job_with_the_wrong_signature_is_exit_2(jobs_dir: Path, job: str,
                                                        text: str) -> None:
    result = invoke("serve", job, "--app-dir", str(jobs_dir), "--requests",
                    "tcp://127.0.0.1:*", "--responses", "tcp://127.0.0.1:*")
    assert_one_line_error(result, RET_USAGE, text)


def test_a_job_with_defaults_or_varargs_loads(jobs_dir: Path) -> None:
    from zjobs.run.loader import add_app_dir, load_job

    add_app_dir(jobs_dir)
    job = load_job("signjobs:fine")
    assert job(3, None) == 3  # type: ignore[operator]


# -- 15. wording -----------------------------------------------------------------------------

def test_an_is_written_before_a_vowel(jobs_dir: Path, ipc_dir: Path) -> None:
    result = invoke("serve", "signjobs:NUMBER", "--app-dir", str(jobs_dir), "--requests",
                    "tcp://127.0.0.1:*", "--responses", "tcp://127.0.0.1:*")
    assert_one_line_error(result, RET_USAGE, "signjobs:NUMBER: an int is not a job")
    result = invoke("link", "--from", f"ipc://{ipc_dir}/up.pub", "--to-requests",
                    f"ipc://{ipc_dir}/down.req", "--app-dir", str(jobs_dir), "--transform",
                    "signjobs:NUMBER")
    assert_one_line_error(result, RET_USAGE, "an int is not callable")


# -- 16. what users of job CLIs expect --------------------------------------------------------

def test_short_version_option() -> None:
    result = invoke("-V")
    assert result.exit_code == RET_OK
    assert result.stdout.strip() == f"zjobs, version {zjobs.__version__}"


def test_ping_json(processor: zjobs.ZmqProcessor) -> None:
    result = invoke("ping", *endpoints(processor), "--json")
    assert result.exit_code == RET_OK, result.output
    line = json.loads(result.stdout)
    assert set(line) == {"rtt_ms", "processors"}
    assert line["processors"] == 1 and line["rtt_ms"] > 0


def test_send_count_json(processor: zjobs.ZmqProcessor) -> None:
    result = invoke("send", *endpoints(processor), "--count", "20", "--concurrency", "4",
                    "--json", "3")
    assert result.exit_code == RET_OK, result.output
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("count", "ok", "errors", "timeouts", "interrupted")} == \
        {"count": 20, "ok": 20, "errors": 0, "timeouts": 0, "interrupted": False}
    assert set(summary) >= {"seconds", "requests_per_s", "p50_ms", "p99_ms", "sent"}


def test_send_retries_resends_with_the_same_id(processor: zjobs.ZmqProcessor) -> None:
    result = invoke("send", *endpoints(processor), "--retries", "2", "4")
    assert result.exit_code == RET_OK, result.output
    assert json.loads(result.stdout)["value"] == 16
    help_text = invoke("send", "--help").stdout
    assert "--retries N" in help_text and "same id" in help_text


def test_shell_completion_is_documented_and_works() -> None:
    readme = (ROOT / "README.md").read_text()
    assert '_ZJOBS_COMPLETE=bash_source zjobs' in readme
    env = {**os.environ, "_ZJOBS_COMPLETE": "bash_source"}
    script = Path(sys.executable).parent / "zjobs"  # the console script pip installed
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "complete" in done.stdout  # click's own script


# -- 7. every example in the help text works as written ---------------------------------------

def _help_examples(command: click.Command) -> list[str]:
    """The shell lines of a command's help example block, continuation lines joined."""
    text = command.help or ""
    block = text[text.index("Example"):].split("\n", 1)[1] if "Example" in text else ""
    lines: list[str] = []
    for raw in block.splitlines():
        line = raw.strip()
        if not line:
            continue
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + line
        else:
            lines.append(line)
    return lines


def _commands() -> list[tuple[str, click.Command]]:
    assert isinstance(main, click.Group)
    return [("", main), *sorted(main.commands.items())]


@pytest.mark.parametrize(("name", "command"), _commands(), ids=lambda v: v or "zjobs"
                         if isinstance(v, str) else "")
def test_help_examples_parse_as_written(name: str, command: click.Command) -> None:
    examples = _help_examples(command)
    assert examples, f"zjobs {name} --help has no example"
    for example in examples:
        for part in re.split(r"\s*(?:&&|\||;)\s*", example):
            words = shlex.split(part.replace("\\\\n", "\\n"))
            if not words or words[0] != "zjobs":
                continue
            sub = main.commands[words[1]] if len(words) > 1 and words[1] in main.commands \
                else main
            args = words[2:] if sub is not main else words[1:]
            with sub.make_context(f"zjobs {words[1]}", list(args)):
                pass  # parses: every option exists, the required ones are there


def test_keygen_help_examples_run_as_written(tmp_path: Path) -> None:
    zjobs_cmd = f"{shlex.quote(sys.executable)} -m zjobs"
    for example in _help_examples(main.commands["keygen"]):  # type: ignore[attr-defined]
        line = re.sub(r"(^|&& )zjobs ", rf"\g<1>{zjobs_cmd} ", example)
        done = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, (example, done.stderr)
    assert sorted(p.name for p in tmp_path.rglob("*.key")) == ["alice.key", "server.key"]


def test_up_help_examples_run_as_written() -> None:
    for example in _help_examples(main.commands["up"]):  # type: ignore[attr-defined]
        if "--check" in example:
            words = shlex.split(example)
            result = invoke(*words[1:])
            assert result.exit_code == RET_OK, result.output


# -- 4. Ctrl-C: the summary so far, and exit 130 ----------------------------------------------

def _sigint_default() -> None:
    # A shell starts background jobs with SIGINT ignored, and a Python started so never
    # raises KeyboardInterrupt: these tests would hang when the suite runs in the background.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _zjobs(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "zjobs", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)


def _interrupt(child: subprocess.Popen[str]) -> tuple[int, str, str]:
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)  # far less than the --timeout of 60 s
    return child.returncode, out, err


def test_ctrl_c_during_the_readiness_wait_exits_130() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never speaks ZMTP
    port = listener.getsockname()[1]
    try:
        child = _zjobs("ping", "--requests", f"tcp://127.0.0.1:{port}", "--responses",
                       f"tcp://127.0.0.1:{port}", "--timeout", "60")
        listener.settimeout(30)
        connection, _ = listener.accept()  # the client is connected: it waits for a pong
        code, out, err = _interrupt(child)
        connection.close()
    finally:
        listener.close()
    assert code == RET_INTERRUPTED, err
    assert out == ""
    assert err.strip() == "interrupted while waiting for a pong from 1 processor(s)"


class _Gate:
    """A job that answers the first ``open_for`` requests, then blocks until released."""

    def __init__(self, open_for: int) -> None:
        self.open_for = open_for
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, request: Any, resources: Any) -> Any:
        self.calls += 1
        if self.calls > self.open_for:
            self.release.wait(60)
        return request


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_during_send_count_prints_the_summary_so_far(as_json: bool) -> None:
    gate = _Gate(open_for=5)
    with running_processor(gate) as proc:
        try:
            child = _zjobs("send", *endpoints(proc), "--count", "100", "--timeout", "60",
                           *(["--json"] if as_json else []), "7")
            wait_until(lambda: gate.calls == 6, timeout_s=30)  # 5 answered, 1 in flight
            code, out, err = _interrupt(child)
        finally:
            gate.release.set()
    assert code == RET_INTERRUPTED, err
    if as_json:
        summary = json.loads(out)
        assert {k: summary[k] for k in ("count", "ok", "errors", "sent", "requested",
                                        "interrupted")} == \
            {"count": 5, "ok": 5, "errors": 0, "sent": 6, "requested": 100, "interrupted": True}
    else:
        assert out.startswith("count=5 ok=5 errors=0 timeouts=0 ")
        assert out.rstrip().endswith(" interrupted=true sent=6 requested=100")
    assert err.strip() == "interrupted: 5 of 100 requests ended (6 sent)"


def test_ctrl_c_while_send_waits_for_a_response_exits_130_at_once() -> None:
    gate = _Gate(open_for=1)
    with running_processor(gate) as proc:
        try:
            child = subprocess.Popen([sys.executable, "-m", "zjobs", "send", *endpoints(proc),
                                      "--timeout", "60"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=_sigint_default)
            assert child.stdin is not None
            child.stdin.write("1\n2\n")
            child.stdin.flush()
            wait_until(lambda: gate.calls == 2, timeout_s=30)
            code, out, err = _interrupt(child)
        finally:
            gate.release.set()
    assert code == RET_INTERRUPTED, err
    assert [json.loads(line)["value"] for line in out.splitlines()] == [1]
    assert err.strip() == "interrupted while sending"


# -- 8. a request larger than processors accept by default ------------------------------------

def test_send_warns_about_a_payload_larger_than_the_default_max_message_size(
        tmp_path: Path) -> None:
    big = json.dumps("x" * (16 * 1024 * 1024 + 1))
    result = invoke("send", "--requests", f"ipc://{tmp_path}/r", "--responses",
                    f"ipc://{tmp_path}/p", "--timeout", "0.2", big)
    assert result.exit_code == 1  # nobody answers the readiness ping here
    warning = result.stderr.splitlines()[0]
    assert warning.startswith("Warning: the request is 16777222 bytes, more than 16777216")
    assert "--max-message-size" in warning
    small = invoke("send", "--requests", f"ipc://{tmp_path}/r", "--responses",
                   f"ipc://{tmp_path}/p", "--timeout", "0.2", '"x"')
    assert "Warning" not in small.stderr
