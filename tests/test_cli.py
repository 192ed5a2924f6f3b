"""The command line through click's test runner: parsing, help, errors and exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from click.testing import CliRunner, Result

import zjobs
from zjobs.cli import main
from zjobs.cli.app import RET_ERROR, RET_OK, RET_USAGE, CliError
from zjobs.cli.calls import parse_payload
from zjobs.cli.console import response_json
from zjobs.demo import square
from zjobs.testing import running_processor
from zjobs.wire.protocol import ErrorInfo, Response

COMMANDS = ["serve", "send", "listen", "ping", "demo"]


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


@pytest.fixture
def processor() -> Iterator[zjobs.ZmqProcessor]:
    with running_processor(square) as proc:
        yield proc


def endpoints(proc: zjobs.ZmqProcessor) -> list[str]:
    return ["--requests", proc.endpoints.requests, "--responses", proc.endpoints.responses]


def assert_one_line_error(result: Result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr
    assert "Traceback" not in result.output


def test_exit_codes_are_named() -> None:
    assert (RET_OK, RET_ERROR, RET_USAGE) == (0, 1, 2)


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"zjobs, version {zjobs.__version__}"


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_help_has_an_example(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output
    assert ("zjobs " + command[0] if command else "zjobs demo") in result.output


def test_help_lists_every_command() -> None:
    result = invoke("-h")
    for command in COMMANDS:
        assert f"  {command} " in result.output


def test_import_zjobs_does_not_import_click() -> None:
    import subprocess
    import sys

    code = "import sys, zjobs; print('click' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("args", "text"), [
    (["serve", "zjobs.demo:square"], "Missing option '--requests'"),
    (["serve", "zjobs.demo:square", "--requests", "tcp://127.0.0.1:*", "--responses",
      "tcp://127.0.0.1:*", "--cache-size", "-1"], "Invalid value for '--cache-size'"),
    (["serve", "zjobs.demo:square", "--requests", "tcp://127.0.0.1:*", "--responses",
      "tcp://127.0.0.1:*", "--cache", "-1"], "Invalid value for '--cache'"),
    (["serve", "zjobs.demo:square", "--requests", "tcp://127.0.0.1:*", "--responses",
      "tcp://127.0.0.1:*", "--keepalive", "fast"], "Invalid value for '--keepalive'"),
    (["serve", "zjobs.demo:square", "--requests", "a", "--responses", "b", "--log-level",
      "LOUD"], "Invalid value for '--log-level'"),
    (["send", "--responses", "tcp://127.0.0.1:1", "7"], "Missing option '--requests'"),
    (["send", "--requests", "tcp://127.0.0.1:1", "--responses", "tcp://127.0.0.1:1",
      "--timeout", "0", "7"], "Invalid value for '--timeout'"),
    (["listen"], "Missing option '--responses'"),
    (["nosuchcommand"], "No such command"),
])
def test_usage_errors_exit_2(args: list[str], text: str) -> None:
    result = invoke(*args)
    assert result.exit_code == RET_USAGE
    assert text in result.stderr


@pytest.mark.parametrize(("job", "text"), [
    ("nosuch_module_xyz:f", "job nosuch_module_xyz:f: no module named 'nosuch_module_xyz'"),
    ("json:nope", "job json:nope: 'json' has no attribute 'nope'"),
    ("os:sep", "job os:sep: a str is not a job"),
    ("zjobs.demo", "is not MODULE:OBJECT"),
])
def test_serve_bad_job_is_one_line_exit_2(job: str, text: str) -> None:
    result = invoke("serve", job, "--requests", "tcp://127.0.0.1:*",
                    "--responses", "tcp://127.0.0.1:*")
    assert_one_line_error(result, RET_USAGE, text)


def test_serve_bad_resources_is_one_line_exit_2() -> None:
    result = invoke("serve", "zjobs.demo:square", "--resources", "json:nope",
                    "--requests", "tcp://127.0.0.1:*", "--responses", "tcp://127.0.0.1:*")
    assert_one_line_error(result, RET_USAGE, "resources json:nope: 'json' has no attribute")


def test_serve_endpoint_in_use_is_one_line_exit_2() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    taken = context.socket(zmq.PULL)
    try:
        taken.bind("tcp://127.0.0.1:*")
        endpoint = taken.getsockopt_string(zmq.LAST_ENDPOINT)
        result = invoke("serve", "zjobs.demo:square", "--requests", "tcp://127.0.0.1:*",
                        "--responses", endpoint)
    finally:
        taken.close(linger=0)
        context.term()
    assert_one_line_error(result, RET_USAGE, f"cannot bind {endpoint}: address already in use")


def test_send_invalid_json_payload_exits_2_before_connecting(ipc_dir: Path) -> None:
    result = invoke("send", "--requests", f"ipc://{ipc_dir}/r", "--responses",
                    f"ipc://{ipc_dir}/p", "{nope")
    assert_one_line_error(result, RET_USAGE, "PAYLOAD: invalid JSON")


def test_send_bad_tag_exits_2(ipc_dir: Path) -> None:
    result = invoke("send", "--requests", f"ipc://{ipc_dir}/r", "--responses",
                    f"ipc://{ipc_dir}/p", '{"$bytes": "not base64!"}')
    assert_one_line_error(result, RET_USAGE, "invalid base64")


def test_send_count_needs_a_payload(ipc_dir: Path) -> None:
    result = invoke("send", "--requests", f"ipc://{ipc_dir}/r", "--responses",
                    f"ipc://{ipc_dir}/p", "--count", "3")
    assert_one_line_error(result, RET_USAGE, "--count needs a PAYLOAD")


def test_send_bad_endpoint_exits_2() -> None:
    result = invoke("send", "--requests", "tcp://127.0.0.1:*", "--responses",
                    "tcp://127.0.0.1:*", "1")
    assert_one_line_error(result, RET_USAGE, "cannot connect tcp://127.0.0.1:*")


def test_send_one_payload(processor: zjobs.ZmqProcessor) -> None:
    result = invoke("send", *endpoints(processor), "9")
    assert result.exit_code == RET_OK, result.output
    line = json.loads(result.stdout)
    assert (line["value"], line["processor"], line["status"]) == (81, "square", "ok")
    assert line["instance"] == processor.instance


def test_send_stdin_stops_at_invalid_json_line(processor: zjobs.ZmqProcessor) -> None:
    result = invoke("send", *endpoints(processor), input="2\n\n3\n{bad\n4\n")
    assert_one_line_error(result, RET_USAGE, "stdin line 4: invalid JSON")
    assert [json.loads(line)["value"] for line in result.stdout.splitlines()] == [4, 9]
    assert processor.counters.ok == 2  # line 5 was never sent


def test_send_error_response_exits_1(processor: zjobs.ZmqProcessor) -> None:
    result = invoke("send", *endpoints(processor), input='3\n"x"\n5\n')
    assert result.exit_code == RET_ERROR
    statuses = [json.loads(line)["status"] for line in result.stdout.splitlines()]
    assert statuses == ["ok", "error", "ok"]
    assert "failed at 'square': JobFailed: TypeError" in result.stderr


def test_send_count_with_errors_exits_1(processor: zjobs.ZmqProcessor) -> None:
    result = invoke("send", *endpoints(processor), "--count", "20", "--concurrency", "4",
                    '"x"')
    assert result.exit_code == RET_ERROR
    assert "count=20 ok=0 errors=20 timeouts=0" in result.stdout
    assert "20 of 20 requests failed; first: JobFailed: TypeError" in result.stderr


def test_ping(processor: zjobs.ZmqProcessor) -> None:
    result = invoke("ping", *endpoints(processor))
    assert result.exit_code == RET_OK
    assert result.stdout.startswith("pong rtt_ms=") and "processors=1" in result.stdout


def test_ping_reads_shared_and_command_environment_variables(
        processor: zjobs.ZmqProcessor) -> None:
    env = {"ZJOBS_REQUESTS": processor.endpoints.requests,
           "ZJOBS_PING_RESPONSES": processor.endpoints.responses,
           "ZJOBS_RESPONSES": "tcp://127.0.0.1:1"}  # the command's own variable wins
    result = invoke("ping", env=env)
    assert result.exit_code == RET_OK, result.output


def test_ping_two_processors_needs_both() -> None:
    with running_processor(square) as one, running_processor(square) as two:
        result = invoke("ping", *endpoints(one), *endpoints(two))
    assert result.exit_code == RET_OK, result.output
    assert "processors=2" in result.stdout


def test_ping_timeout_exits_1(ipc_dir: Path) -> None:
    result = invoke("ping", "--requests", f"ipc://{ipc_dir}/r", "--responses",
                    f"ipc://{ipc_dir}/p", "--timeout", "0.2")
    assert_one_line_error(result, RET_ERROR, "no pong from 1 of 1 processor(s) within 0.2s")


def test_demo_command() -> None:
    result = invoke("demo")
    assert result.exit_code == RET_OK
    assert 'ok cached=false "9 is odd" meta={"zjobs.path": ["square"]}' in result.stdout
    assert "cached=true" in result.stdout and "JobFailed" in result.stdout


def test_response_json_shapes() -> None:
    ok = Response(id=b"\x01", status="ok", value={1: b"x"}, processor="p", meta={"k": 1},
                  instance="i")
    assert response_json(ok) == {
        "id": {"$bytes": "AQ=="}, "status": "ok", "cached": False, "processor": "p",
        "instance": "i", "meta": {"k": 1}, "value": {"$map": [[1, {"$bytes": "eA=="}]]}}
    error = Response(id="a", status="error", error=ErrorInfo("BadRequest", "no", {"x": 1}))
    line = response_json(error)
    assert line["error"] == {"x": 1, "type": "BadRequest", "message": "no"}
    assert "value" not in line


def test_parse_payload_accepts_the_reversible_form() -> None:
    assert parse_payload('{"$bytes": "AP8="}', "x") == b"\x00\xff"
    with pytest.raises(CliError) as info:
        parse_payload("[1,", "stdin line 3")
    assert info.value.exit_code == RET_USAGE
    assert str(info.value).startswith("stdin line 3: invalid JSON")


def test_a_renamed_option_and_its_new_name_are_one_option() -> None:
    result = invoke("serve", "zjobs.demo:square", "--requests", "tcp://127.0.0.1:*",
                    "--responses", "tcp://127.0.0.1:*", "--cache", "3", "--cache-size", "4")
    assert result.exit_code == RET_USAGE
    assert "Warning: --cache is deprecated; use --cache-size" in result.stderr
    assert "--cache and --cache-size are the same option" in result.stderr


def test_serve_help_lists_every_processor_option() -> None:
    shown = invoke("serve", "--help").output
    for name in zjobs.ProcessorOptions.__dataclass_fields__:
        assert f"--{name.replace('_', '-')}" in shown, name
    assert "--cache " not in shown and "--dedup-ttl " not in shown  # old names: hidden


@pytest.mark.parametrize(("settings", "text"), [
    ("{", "settings: invalid JSON"),
    ("[1]", "settings: must be a JSON object"),
    ('{"job": "zjobs.demo:square", "cache_size": -1}', "cache_size: must not be negative"),
])
def test_serve_settings_rejects_bad_settings_with_exit_2(settings: str, text: str) -> None:
    assert_one_line_error(invoke("serve-settings", settings), RET_USAGE, text)
