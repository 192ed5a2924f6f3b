"""CURVE from the command line: ``zjobs keygen``, and ``zjobs serve/send/ping/listen`` with
key files, as real subprocesses; bad key files via click's CliRunner (exit code 2)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from click.testing import CliRunner, Result

from zjobs import Client, CurveClient, CurveServer, KeyPair
from zjobs.cli import main
from zjobs.run.runner import ProcessorProcess
from zjobs.transport.security import load_public_key, write_key_pair

pytestmark = pytest.mark.timeout(90)

BIN = Path(sys.executable).with_name("zjobs")
ZJOBS = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "zjobs"]
ANY = "tcp://127.0.0.1:*"
WAIT_S = 30.0  # generous: other suites load the machine


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ZJOBS_")}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={k: None for k in os.environ
                                                     if k.startswith("ZJOBS_")},
                              catch_exceptions=False)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZJOBS, *args], capture_output=True, text=True,
                          timeout=WAIT_S * 2, env=_env())


@dataclass
class Keys:
    dir: Path
    clients: Path

    def secret(self, name: str) -> str:
        return str(self.dir / f"{name}.key_secret")

    def public(self, name: str) -> str:
        return str(self.dir / f"{name}.key")

    def client_args(self, name: str) -> list[str]:
        return ["--server-key", self.public("server"), "--secret-key", self.secret(name)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("clikeys")
    for name in ("server", "alice", "eve"):
        write_key_pair(name, base)
    clients = base / "clients"
    clients.mkdir()
    (clients / "alice.key").write_bytes((base / "alice.key").read_bytes())
    return Keys(base, clients)


class Served:
    """A ``zjobs serve`` subprocess: stdout read line by line with a timeout, stderr to a file."""

    def __init__(self, args: list[str], tmp: Path) -> None:
        self.err_path = tmp / f"serve-{time.monotonic_ns()}.err"
        with self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([*ZJOBS, "serve", "zjobs.demo:square", "--requests",
                                          ANY, "--responses", ANY, *args],
                                         stdout=subprocess.PIPE, stderr=err, env=_env())
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, WAIT_S)
        assert line.startswith("listening "), (line, self.stderr())
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        self.requests, self.responses = fields["requests"], fields["responses"]

    @property
    def endpoints(self) -> list[str]:
        return ["--requests", self.requests, "--responses", self.responses]

    def stderr(self) -> str:
        return self.err_path.read_text()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(WAIT_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _readline(pipe: IO[bytes], timeout_s: float) -> str:
    """One line from ``pipe`` within ``timeout_s`` (the pipe is read unbuffered)."""
    fd = pipe.fileno()
    deadline = time.monotonic() + timeout_s
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise TimeoutError(f"no line within {timeout_s}s (have {data!r})")
            byte = os.read(fd, 1)
            if not byte:
                raise EOFError(f"pipe closed (have {data!r})")
            data += byte
    return data.decode().rstrip("\n")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[Served]]:
    started: list[Served] = []

    class Tracked(Served):
        def __init__(self, args: list[str], tmp: Path = tmp_path) -> None:
            started.append(self)
            super().__init__(args, tmp)

    try:
        yield Tracked
    finally:
        for served in started:
            served.close()


# -- keygen ---------------------------------------------------------------------------------


def test_keygen_writes_a_key_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    result = invoke("keygen", "node", "--dir", str(tmp_path / "k"))
    assert result.exit_code == 0, result.output
    public, secret = tmp_path / "k" / "node.key", tmp_path / "k" / "node.key_secret"
    assert result.output == f"public={public} secret={secret}\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pair = KeyPair.load(secret)
    assert load_public_key(public) == pair.public

    again = invoke("keygen", "node", "--dir", str(tmp_path / "k"))
    assert again.exit_code == 2
    assert again.output == f"Error: key file {public}: already exists (refusing to overwrite " \
                           "a key)\n"
    assert KeyPair.load(secret) == pair
    forced = invoke("keygen", "node", "--dir", str(tmp_path / "k"), "--force")
    assert forced.exit_code == 0 and KeyPair.load(secret) != pair

    bad = invoke("keygen", "../up", "--dir", str(tmp_path))
    assert bad.exit_code == 2 and "plain file name" in bad.output


# -- bad key files: one line naming the file, exit code 2 ----------------------------------


def _bad_key_cases(tmp_path: Path, keys: Keys) -> list[tuple[list[str], str]]:
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text("not a certificate\n")
    missing = str(tmp_path / "missing.key_secret")
    serve = ["serve", "zjobs.demo:square", "--requests", ANY, "--responses", ANY]
    ping = ["ping", "--requests", "tcp://127.0.0.1:9", "--responses", "tcp://127.0.0.1:9",
            "--timeout", "0.1"]
    listen = ["listen", "--responses", "tcp://127.0.0.1:9", "--count", "1"]
    return [
        ([*serve, "--secret-key", missing], f"key file {missing}: no such file"),
        ([*serve, "--secret-key", str(garbage)], f"key file {garbage}: not a CURVE certificate"),
        ([*serve, "--secret-key", keys.public("server")],
         f"key file {keys.public('server')}: holds no secret key"),
        ([*serve, "--secret-key", keys.secret("server"), "--allow-clients",
          str(tmp_path / "nodir")], f"key file {tmp_path / 'nodir'}: no such directory"),
        ([*serve, "--allow-clients", str(keys.clients)], "--allow-clients needs --secret-key"),
        ([*ping, "--server-key", missing], f"key file {missing}: no such file"),
        ([*ping, "--server-key", keys.public("server"), "--secret-key", keys.public("alice")],
         f"key file {keys.public('alice')}: holds no secret key"),
        ([*ping, "--secret-key", keys.secret("alice")], "--secret-key needs --server-key"),
        (["send", *ping[1:], "--server-key", str(garbage), "1"],
         f"key file {garbage}: not a CURVE certificate"),
        ([*listen, "--server-key", keys.public("server"), "--secret-key", missing],
         f"key file {missing}: no such file"),
        (["link", "--from", "tcp://127.0.0.1:9", "--to-requests", "tcp://127.0.0.1:9",
          "--server-key", keys.public("server"), "--secret-key", str(garbage)],
         f"key file {garbage}: not a CURVE certificate"),
    ]


def test_bad_key_files_are_one_line_errors_exit_2(tmp_path: Path, keys: Keys) -> None:
    for args, text in _bad_key_cases(tmp_path, keys):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith(f"Error: {text}"), (args, result.output)
        assert result.output.count("\n") == 1, (args, result.output)


def test_bad_key_file_from_a_real_process_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "server.key_secret"
    result = run("serve", "zjobs.demo:square", "--requests", ANY, "--responses", ANY,
                 "--secret-key", str(missing))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"Error: key file {missing}: no such file"
    assert result.stdout == ""


# -- secured daemons ------------------------------------------------------------------------


def test_secured_daemon_serves_allowed_clients_only(serve: type[Served], keys: Keys) -> None:
    daemon = serve(["--secret-key", keys.secret("server"), "--allow-clients", str(keys.clients)])
    assert f"CURVE on: encrypted, 1 allowed client key from {keys.clients}" in daemon.stderr()

    sent = run("send", *daemon.endpoints, *keys.client_args("alice"), "7")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["value"] == 49

    calls = 0
    listen = subprocess.Popen([*ZJOBS, "listen", "--responses", daemon.responses, "--count",
                               "1", *keys.client_args("alice")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=_env())
    try:
        # Call from Python as alice until the listener, subscribed to everything, shows a
        # response: proof that it was admitted to the response socket.
        security = CurveClient(keys.public("server"), keys.secret("alice"))
        with Client.connect(daemon.requests, daemon.responses, security=security,
                            timeout_s=WAIT_S) as client:
            deadline = time.monotonic() + WAIT_S
            while listen.poll() is None and time.monotonic() < deadline:
                assert client.call(3) == 9
                calls += 1
                time.sleep(0.05)
        out, err = listen.communicate(timeout=WAIT_S)
        assert listen.returncode == 0, err
        assert json.loads(out)["value"] == 9
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.communicate()

    refused = run("ping", *daemon.endpoints, *keys.client_args("eve"), "--timeout", "1")
    assert refused.returncode == 1 and "no pong" in refused.stderr
    plaintext = run("ping", *daemon.endpoints, "--timeout", "1")
    assert plaintext.returncode == 1 and "no pong" in plaintext.stderr

    assert daemon.stop() == 0
    log = daemon.stderr()
    eve = KeyPair.load(keys.secret("eve")).public.decode()
    assert f"refused a CURVE client whose public key {eve} is not allowed" in log
    # the jobs run: alice's send and her Python calls, nothing else
    assert f" ok={1 + calls} failed=0 expired=0 bad_requests=0 " in log


def test_daemon_without_allow_list_logs_unauthenticated(serve: type[Served], keys: Keys) -> None:
    daemon = serve(["--secret-key", keys.secret("server")])
    assert "CURVE on: encrypted but unauthenticated" in daemon.stderr()
    anyone = run("ping", *daemon.endpoints, "--server-key", keys.public("server"))
    assert anyone.returncode == 0, anyone.stderr
    assert daemon.stop() == 0


def test_processor_process_takes_a_curve_server(keys: Keys) -> None:
    server = CurveServer(keys.secret("server"), allow_clients=keys.clients)
    with ProcessorProcess("zjobs.demo:square", security=server) as process:
        alice = CurveClient(keys.public("server"), keys.secret("alice"))
        with process.client(security=alice, timeout_s=WAIT_S) as client:
            assert client.call(6) == 36
