"""``zjobs serve`` as a real daemon: subprocesses driven by ``zjobs send/ping/listen``
subprocesses, signals, exit codes and error lines."""

from __future__ import annotations

import json
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from zjobs import Client, ZmqReceiver, ZmqSender
from zjobs.testing import wait_subscribed, wait_until
from zjobs.wire.heartbeat import HEARTBEAT_TOPIC

BIN = Path(sys.executable).with_name("zjobs")
ZJOBS = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "zjobs"]
ANY = "tcp://127.0.0.1:*"
WAIT_S = 30.0  # generous: other test suites load the machine

JOBS = '''
import pathlib
import time


def square(request, resources):
    return request * request


def echo(request, resources):
    return request


def fail(request, resources):
    raise ValueError("boom")


def slow(request, resources):
    pathlib.Path(request["marker"]).write_text("started")
    time.sleep(request["seconds"])
    return request["seconds"]


def open_prefix():
    return "pre-"


def with_prefix(request, resources):
    return resources + request


class Counter:
    def __init__(self):
        self.calls = 0

    def run(self, request, resources):
        self.calls += 1
        return self.calls


def interrupt(request, resources):
    raise KeyboardInterrupt("the job pulled the plug")  # ends the serving thread


class NoRun:
    pass


NOT_A_JOB = 42
'''

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A folder with the jobs module ``svjobs`` used by these tests."""
    (tmp_path / "svjobs.py").write_text(JOBS)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZJOBS_")}
    env.update(extra)
    return env


class Lines:
    """Reads lines from a subprocess pipe, each with a timeout."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.buffer = b""

    def readline(self, timeout_s: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line within {timeout_s}s (have {self.buffer!r})")
            if self.selector.select(left):
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise EOFError(f"pipe closed (have {self.buffer!r})")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        self.selector.close()


class Daemon:
    """A ``zjobs serve`` subprocess; stderr goes to a file read by :meth:`stderr`."""

    def __init__(self, args: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.err_path = tmp / f"serve-{time.monotonic_ns()}.err"
        with self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([*ZJOBS, "serve", *args], stdout=subprocess.PIPE,
                                         stderr=err, env=env or _env())
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout)
        self.requests = self.responses = self.name = ""

    def wait_listening(self) -> Daemon:
        line = self.lines.readline()
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        assert line.startswith("listening "), line
        self.requests, self.responses, self.name = (fields["requests"], fields["responses"],
                                                    fields["name"])
        return self

    def stderr(self) -> str:
        return self.err_path.read_text()

    def signal(self, signum: int) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(WAIT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.lines.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def serve(tmp_path: Path, app_dir: Path) -> Iterator[Any]:
    """Start ``zjobs serve`` subprocesses (``--app-dir`` is the jobs folder); all are
    stopped after the test."""
    daemons: list[Daemon] = []

    def start(job: str, *options: str, wait: bool = True,
              env: dict[str, str] | None = None) -> Daemon:
        args = [job, "--app-dir", str(app_dir), *options]
        if env is None:
            args += ["--requests", ANY, "--responses", ANY]
        daemon = Daemon(args, tmp_path, env)
        daemons.append(daemon)
        return daemon.wait_listening() if wait else daemon

    try:
        yield start
    finally:
        for daemon in daemons:
            daemon.close()


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a ``zjobs`` command to completion."""
    return subprocess.run([*ZJOBS, *args], input=input, capture_output=True, text=True,
                          timeout=WAIT_S * 2, env=env or _env())


def endpoints(daemon: Daemon) -> list[str]:
    return ["--requests", daemon.requests, "--responses", daemon.responses]


def test_serve_prints_bound_endpoints_and_answers_send_and_ping(serve: Any) -> None:
    daemon = serve("svjobs:square", "--name", "sq")
    assert daemon.name == "sq"
    for endpoint in (daemon.requests, daemon.responses):
        assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":*")

    pong = run("ping", *endpoints(daemon), "--timeout", "20")
    assert pong.returncode == 0, pong.stderr
    assert pong.stdout.startswith("pong rtt_ms=")

    sent = run("send", *endpoints(daemon), "7")
    assert sent.returncode == 0, sent.stderr
    line = json.loads(sent.stdout)
    assert (line["status"], line["value"], line["processor"], line["cached"]) == \
        ("ok", 49, "sq", False)
    assert line["meta"] is None and isinstance(line["id"], str)
    assert sent.stderr == ""


def test_send_error_response_prints_it_and_exits_1(serve: Any) -> None:
    daemon = serve("svjobs:fail")
    sent = run("send", *endpoints(daemon), '"x"')
    assert sent.returncode == 1
    line = json.loads(sent.stdout)
    assert line["status"] == "error"
    assert line["error"] == {"type": "JobFailed", "message": "ValueError: boom",
                             "exception": "ValueError"}
    assert sent.stderr.count("\n") == 1 and "JobFailed: ValueError: boom" in sent.stderr


def test_send_timeout_exits_1_with_the_reason(serve: Any, tmp_path: Path) -> None:
    daemon = serve("svjobs:slow")
    payload = json.dumps({"marker": str(tmp_path / "m"), "seconds": 60})
    sent = run("send", *endpoints(daemon), "--timeout", "3", payload)
    daemon.proc.kill()  # do not wait for the job to finish
    assert sent.returncode == 1
    assert sent.stdout == ""
    assert sent.stderr.startswith("Error: no response to request")
    assert sent.stderr.count("\n") == 1 and "within 3.0s" in sent.stderr


def test_send_reads_json_lines_from_stdin_in_order_with_bytes(serve: Any) -> None:
    daemon = serve("svjobs:echo")
    values: list[Any] = [1, "two", {"$bytes": "AP8="}, {"k": [None, True, 2.5]},
                         {"$map": [[1, "int key"]]}]
    stdin = "\n".join(json.dumps(v) for v in values) + "\n\n"
    sent = run("send", *endpoints(daemon), "--concurrency", "3", input=stdin)
    assert sent.returncode == 0, sent.stderr
    out = [json.loads(line) for line in sent.stdout.splitlines()]
    assert [line["value"] for line in out] == values
    assert len({line["id"] for line in out}) == len(values)


def test_send_count_prints_a_summary_without_progress_bar(serve: Any) -> None:
    daemon = serve("svjobs:square")
    sent = run("send", *endpoints(daemon), "--count", "200", "--concurrency", "8", "3")
    assert sent.returncode == 0, sent.stderr
    summary = dict(part.split("=", 1) for part in sent.stdout.split())
    assert (summary["count"], summary["ok"], summary["errors"], summary["timeouts"]) == \
        ("200", "200", "0", "0")
    assert float(summary["req/s"]) > 0
    assert 0 < float(summary["p50_ms"]) <= float(summary["p99_ms"])
    assert sent.stderr == ""  # stderr is not a terminal: no progress bar


def test_resources_cache_and_class_jobs(serve: Any) -> None:
    prefixed = serve("svjobs:with_prefix", "--resources", "svjobs:open_prefix",
                     "--cache-size", "10")
    sent = run("send", *endpoints(prefixed), input='"x"\n"x"\n')
    out = [json.loads(line) for line in sent.stdout.splitlines()]
    assert [(line["value"], line["cached"]) for line in out] == [("pre-x", False),
                                                                   ("pre-x", True)]
    counter = serve("svjobs:Counter")
    sent = run("send", *endpoints(counter), input="null\nnull\n")
    assert [json.loads(line)["value"] for line in sent.stdout.splitlines()] == [1, 2]


def test_listen_shows_responses_to_requests_another_client_sent(serve: Any) -> None:
    daemon = serve("svjobs:square")
    listener = subprocess.Popen([*ZJOBS, "listen", "--responses", daemon.responses],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    assert listener.stdout is not None
    lines = Lines(listener.stdout)
    try:
        # Probe until the listener's subscription is up: it prints a probe's response.
        with Client.connect(daemon.requests, daemon.responses) as prober:
            def listener_saw_a_probe() -> bool:
                prober.call(-1)
                try:
                    return json.loads(lines.readline(0.2))["value"] == 1
                except TimeoutError:
                    return False
            wait_until(listener_saw_a_probe, timeout_s=WAIT_S)
        sent = run("send", *endpoints(daemon), "12")
        assert sent.returncode == 0, sent.stderr
        sent_id = json.loads(sent.stdout)["id"]
        while True:
            seen = json.loads(lines.readline())
            if seen["id"] == sent_id:
                break
        assert (seen["status"], seen["value"], seen["processor"]) == ("ok", 144, "square")
        listener.send_signal(signal.SIGINT)
        assert listener.wait(WAIT_S) == 0
        assert listener.stderr is not None and listener.stderr.read() == b""
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        lines.close()
        listener.stdout.close()
        if listener.stderr is not None:
            listener.stderr.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_slow_job_publishes_its_response_and_exits_0(
        serve: Any, tmp_path: Path, signum: int) -> None:
    daemon = serve("svjobs:slow")
    marker = tmp_path / "started"
    with Client.connect(daemon.requests, daemon.responses, timeout_s=WAIT_S) as client:
        future = client.submit({"marker": str(marker), "seconds": 1.0})
        wait_until(marker.exists, timeout_s=WAIT_S)
        daemon.proc.send_signal(signum)
        assert future.result(timeout=WAIT_S) == 1.0
    assert daemon.proc.wait(WAIT_S) == 0
    log = daemon.stderr()
    assert f"received {signal.Signals(signum).name}" in log
    stopped = [line for line in log.splitlines() if "stopped" in line]
    assert len(stopped) == 1 and " ok=1 failed=0 " in stopped[0], log
    assert "Traceback" not in log


def test_sigterm_to_a_stopped_daemon_ends_it_at_sigcont(serve: Any) -> None:
    # systemd stops a unit with SIGTERM then SIGCONT. Continued, the first of the daemon's
    # threads to run takes the signal, often not the main thread, where Python runs the
    # handler: the daemon must still notice it. (Without the fix, about a third of the
    # tries hung until killed: five make the test fail almost always.)
    for _ in range(5):
        daemon = serve("svjobs:square")
        daemon.proc.send_signal(signal.SIGSTOP)
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.proc.send_signal(signal.SIGCONT)
        assert daemon.proc.wait(WAIT_S) == 0
        assert "received SIGTERM" in daemon.stderr()


@pytest.mark.parametrize(("job", "message"), [
    ("nosuchmodule:f", "no module named 'nosuchmodule'"),
    ("svjobs:missing", "'svjobs' has no attribute 'missing'"),
    ("svjobs:NOT_A_JOB", "an int is not a job"),
    ("svjobs:NoRun", "a class without a run() method is not a job"),
    ("svjobs", "is not MODULE:OBJECT"),
])
def test_bad_module_object_is_one_line_and_exit_2(serve: Any, job: str, message: str) -> None:
    daemon = serve(job, wait=False)
    assert daemon.proc.wait(WAIT_S) == 2
    err = daemon.stderr()
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


def test_endpoint_in_use_is_one_line_and_exit_2(serve: Any) -> None:
    first = serve("svjobs:square")
    second = serve("svjobs:square", "--requests", first.requests, "--responses", ANY,
                   wait=False, env=_env())
    assert second.proc.wait(WAIT_S) == 2
    err = second.stderr()
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert f"cannot bind {first.requests}: address already in use" in err
    assert run("ping", *endpoints(first)).returncode == 0  # the first one is unharmed


def test_options_from_the_environment(serve: Any) -> None:
    daemon = serve("svjobs:square", env=_env(ZJOBS_SERVE_REQUESTS="tcp://*:*",
                                             ZJOBS_RESPONSES=ANY, ZJOBS_SERVE_NAME="envsq"))
    assert daemon.name == "envsq" and daemon.requests.startswith("tcp://0.0.0.0:")
    # A wildcard host is reached on loopback, so a health check can share serve's settings.
    pong = run("ping", env=_env(ZJOBS_REQUESTS=daemon.requests,
                                ZJOBS_PING_RESPONSES=daemon.responses))
    assert pong.returncode == 0, pong.stderr


def test_ping_without_a_processor_exits_1(ipc_dir: Path) -> None:
    pong = run("ping", "--requests", f"ipc://{ipc_dir}/none-req", "--responses",
               f"ipc://{ipc_dir}/none-resp", "--timeout", "0.3")
    assert pong.returncode == 1
    assert pong.stderr.startswith("Error: no pong") and pong.stderr.count("\n") == 1


def test_send_count_draws_a_progress_bar_when_stderr_is_a_terminal(serve: Any) -> None:
    import pty

    daemon = serve("svjobs:square")
    master, slave = pty.openpty()
    try:
        sent = subprocess.run([*ZJOBS, "send", *endpoints(daemon), "--count", "50", "2"],
                              stdout=subprocess.PIPE, stderr=slave, text=True,
                              timeout=WAIT_S * 2, env=_env())
        os.close(slave)
        slave = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert sent.returncode == 0
    assert "count=50 ok=50" in sent.stdout
    assert b"sending" in drawn and b"100%" in drawn


def test_listen_topic_and_count(serve: Any) -> None:
    daemon = serve("svjobs:square")
    count = 40
    with Client.connect(daemon.requests, daemon.responses, timeout_s=WAIT_S) as mine, \
            Client.connect(daemon.requests, daemon.responses, timeout_s=WAIT_S) as other:
        listener = subprocess.Popen(
            [*ZJOBS, "listen", "--responses", daemon.responses, "--topic", mine.topic,
             "--count", str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_env())
        assert listener.stdout is not None
        lines = Lines(listener.stdout)
        try:
            probes: list[int] = []
            first: list[int] = []

            def listener_saw_a_probe() -> bool:
                other.call(-1)  # another client's topic: never shown
                probes.append(len(probes) + 1)
                mine.call(probes[-1])
                try:
                    first.append(json.loads(lines.readline(0.2))["value"])
                    return True
                except TimeoutError:
                    return False

            wait_until(listener_saw_a_probe, timeout_s=WAIT_S)
            # Every probe after the first one shown is shown too; then fill up to --count.
            shown_from = probes.index(math.isqrt(first[0]))
            expected = [p * p for p in probes[shown_from:]]
            rest = list(range(1000, 1000 + count - len(expected)))
            for n in rest:
                mine.call(n)
            expected += [n * n for n in rest]
            seen = first + [json.loads(lines.readline())["value"]
                            for _ in range(len(expected) - 1)]
            assert seen == expected
            assert listener.wait(WAIT_S) == 0  # it exits after --count responses
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
            lines.close()
            listener.stdout.close()
            if listener.stderr is not None:
                listener.stderr.close()


def test_serve_reliability_options_reach_the_processor(serve: Any) -> None:
    daemon = serve("svjobs:square", "--heartbeat-interval-s", "0.05", "--dedup-size", "0")
    # Three heartbeats within 2 s: at the default interval (1 s) that would take 3 s.
    with ZmqReceiver(daemon.responses, topics=[HEARTBEAT_TOPIC]) as beats:
        deadline = time.monotonic() + 2.0
        frames = [beats.receive_frames(deadline) for _ in range(3)]
    assert all(f is not None and f[0] == HEARTBEAT_TOPIC for f in frames), frames
    # No replay window: a repeated id marked for dedup runs the job again, not a replay.
    with ZmqSender(daemon.requests) as tx, ZmqReceiver(daemon.responses, topics=["t"]) as rx:
        wait_subscribed(tx, rx, topic="t")
        for _ in range(2):
            tx.send(7, id="same-id", reply_to="t", dedup=True)
        answers = []
        while len(answers) < 2:
            response = rx.receive(timeout=WAIT_S)
            if response.id == "same-id":
                answers.append(response)
    assert [(r.value, r.replay) for r in answers] == [(49, False), (49, False)]


def test_a_crashed_processor_exits_1_with_the_cause_on_stderr(serve: Any) -> None:
    daemon = serve("svjobs:interrupt")
    with ZmqSender(daemon.requests) as sender:
        sender.send(1)
        assert daemon.proc.wait(WAIT_S) == 1
    assert "Error: processor 'interrupt' crashed: KeyboardInterrupt: the job pulled the plug" \
        in daemon.stderr()


def test_every_processor_option_has_a_flag_and_old_spellings_still_work(serve: Any) -> None:
    daemon = serve("svjobs:square", "--name", "sq", "--cache-size", "5", "--dedup-size", "0",
                   "--rcvhwm", "50", "--sndhwm", "500", "--linger-ms", "0", "--keepalive", "off",
                   "--max-message-size", "-1", "--heartbeat-interval", "0.05")
    assert daemon.name == "sq"
    assert "Warning: --heartbeat-interval is deprecated; use --heartbeat-interval-s" in \
        daemon.stderr()
    sent = run("send", *endpoints(daemon), input="3\n3\n")
    assert [json.loads(line)["cached"] for line in sent.stdout.splitlines()] == [False, True]
