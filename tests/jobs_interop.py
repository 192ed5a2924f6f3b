"""The job that the interop tests serve, and the helpers that start peers as subprocesses.

``zjobs serve jobs_interop:job`` serves :func:`job`: an int is squared, a map with the key
``"fail"`` raises ``ValueError(<fail>)``, anything else is echoed. The C, Node.js and
namespace tests start it (and the Node.js processor) as real subprocesses through
:class:`Peer`, which waits for the one ``listening ...`` line and stops the process by its
PID, also when the test fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# A loaded 2-core machine can take seconds to start Python or Node and import everything.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def job(request: Any, resources: Any) -> Any:
    """Square an int, raise ValueError for {"fail": message}, echo anything else."""
    if type(request) is int:
        return request * request
    if isinstance(request, dict) and "fail" in request:
        raise ValueError(request["fail"])
    return request


# -- helpers for the tests -----------------------------------------------------------------


def subprocess_env() -> dict[str, str]:
    """The environment for peers: this folder (for jobs_interop) and the repo importable."""
    env = dict(os.environ)
    paths = [str(TESTS), str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def zjobs_command() -> list[str]:
    """How to run the ``zjobs`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("zjobs")
    if script.exists():
        return [str(script)]
    # Not installed as a script (a source checkout on the path): the same entry point.
    return [sys.executable, "-m", "zjobs"]


def serve_command(requests: str, responses: str, name: str) -> list[str]:
    """``zjobs serve jobs_interop:job`` on the given endpoints."""
    return [*zjobs_command(), "serve", "jobs_interop:job",
            "--requests", requests, "--responses", responses, "--name", name]


LISTENING = re.compile(r"^listening requests=(\S+) responses=(\S+) name=(\S+)(?: instance=\S+)?$")


class Peer:
    """A processor (or any program) run as a subprocess, known by its PID.

    Args:
        argv: the command; it must print ``listening requests=EP responses=EP name=NAME``
            on stdout once bound (unless ``wait_listening`` is False).
        prefix: put before argv (e.g. ``ip netns exec NS``); ``ip netns exec`` execs the
            command, so the PID stays the program's own.
    """

    def __init__(self, argv: Sequence[str], *, prefix: Sequence[str] = (),
                 cwd: Path | None = None, wait_listening: bool = True) -> None:
        self.argv = [*prefix, *argv]
        self.lines: list[str] = []
        self._got_line = threading.Event()
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self._stderr_final = ""
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            cwd=cwd or TESTS, env=subprocess_env(), text=True,
        )
        self._reader = threading.Thread(target=self._read, name="interop-peer-stdout",
                                         daemon=True)
        self._reader.start()
        self.requests = self.responses = self.name = ""
        if wait_listening:
            try:
                self._wait_listening()
            except BaseException:
                self.stop()
                raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._got_line.set()

    def _wait_listening(self) -> None:
        if not self._got_line.wait(START_TIMEOUT_S) or not self.lines:
            raise AssertionError(f"no listening line from {self.argv} within "
                                 f"{START_TIMEOUT_S}s; {self.diagnostics()}")
        match = LISTENING.match(self.lines[0])
        if match is None:
            raise AssertionError(f"unexpected first line {self.lines[0]!r}; {self.diagnostics()}")
        self.requests, self.responses, self.name = match.groups()

    def stderr_text(self) -> str:
        if self._stderr.closed:
            return self._stderr_final
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def diagnostics(self) -> str:
        code = self.proc.poll()
        tail = self.stderr_text()[-2000:]
        return f"exit code {code}; stdout {self.lines!r}; stderr tail {tail!r}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process by PID, wait for it (SIGKILL after a while); its exit code."""
        try:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, sig)
                try:
                    self.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(STOP_TIMEOUT_S)
            return self.proc.returncode
        finally:
            self._reader.join(STOP_TIMEOUT_S)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._stderr_final = self.stderr_text()
            self._stderr.close()


def run(argv: Sequence[str], *, timeout_s: float = 60.0, prefix: Sequence[str] = (),
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to its end (killed by PID on timeout, by subprocess.run)."""
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout_s,
                          cwd=cwd or TESTS, env=subprocess_env(), stdin=subprocess.DEVNULL,
                          check=False)


FIELD = re.compile(r" (?=[a-z][\w.]*=)")


def parse_line(line: str) -> dict[str, str]:
    """Split a client's output line ``status=ok id=r1 ...`` into its fields.

    A field ends where the next `` name=`` begins, so an error message may hold spaces.
    """
    fields = {}
    for part in FIELD.split(line.strip()):
        key, _, value = part.partition("=")
        fields[key] = value
    return fields


class ClientCLI:
    """One of the example clients (C or Node.js): same options, same one-line output."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)

    def __call__(self, requests: str, responses: str, *args: str, timeout_ms: int = 20000,
                 prefix: Sequence[str] = ()) -> tuple[int, dict[str, str], str]:
        """Run it once; return (exit code, fields of its stdout line, stderr)."""
        argv = [*self.argv, "--requests", requests, "--responses", responses,
                "--timeout-ms", str(timeout_ms), *args]
        done = run(argv, timeout_s=timeout_ms / 1000 + 60, prefix=prefix)
        lines = done.stdout.splitlines()
        assert len(lines) <= 1, f"more than one output line: {done.stdout!r}"
        return done.returncode, parse_line(lines[0]) if lines else {}, done.stderr


def skip_or_fail(reason: str) -> None:
    """Skip for a missing toolchain, or fail where ZJOBS_REQUIRE_INTEROP=1 (CI) says it must run."""
    import pytest

    if os.environ.get("ZJOBS_REQUIRE_INTEROP") == "1":
        pytest.fail(f"ZJOBS_REQUIRE_INTEROP=1 but {reason}")
    pytest.skip(reason)


class ClientContract:
    """The checks every example client passes against ``zjobs serve jobs_interop:job``.

    A test module subclasses it as ``Test...`` and provides two fixtures: ``client`` (a
    :class:`ClientCLI`) and ``daemon`` (a :class:`Peer` running ``zjobs serve`` named
    ``interop``).
    """

    @staticmethod
    def call(client: ClientCLI, daemon: Peer, *args: str) -> tuple[int, dict[str, str], str]:
        return client(daemon.requests, daemon.responses, *args)

    def test_ping(self, client: ClientCLI, daemon: Peer) -> None:
        code, out, err = self.call(client, daemon, "--ping", "--id", "p1")
        assert code == 0, err
        assert out["status"] == "pong"
        assert out["id"] == "p1"
        assert out["processor"] == "interop"
        assert re.fullmatch(r"\S+", out["instance"])

    def test_ordinary_request(self, client: ClientCLI, daemon: Peer) -> None:
        code, out, err = self.call(client, daemon, "--json-int", "7", "--id", "r1")
        assert code == 0, err
        assert out == {"status": "ok", "id": "r1", "cached": "false", "processor": "interop",
                       "value": "49"}

    def test_echo_and_large_values(self, client: ClientCLI, daemon: Peer) -> None:
        for args, value in [
            (("--json-str", "hello wörld"), "hello wörld"),
            (("--nil",), "nil"),
            (("--json-int", "-3037000499"), "9223372030926249001"),
        ]:
            code, out, err = self.call(client, daemon, *args)
            assert code == 0, err
            assert (out["status"], out["value"]) == ("ok", value)

    def test_error_response(self, client: ClientCLI, daemon: Peer) -> None:
        # 2**32 squared is 2**64, one more than msgpack's largest int: the job's value cannot
        # be encoded, which ZJP/1 answers with JobFailed.
        code, out, err = self.call(client, daemon, "--json-int", "4294967296", "--id", "e1")
        assert code == 1, err
        assert out["status"] == "error"
        assert out["id"] == "e1"
        assert out["type"] == "JobFailed"
        assert re.match(r"\w+: ", out["message"]), out

    def test_str_and_bin_ids(self, client: ClientCLI, daemon: Peer) -> None:
        # The client only accepts a response whose id has the msgpack type and bytes it sent.
        for args, printed in [
            (("--id", "ü-str-id"), "ü-str-id"),
            (("--id", "x" * 255), "x" * 255),
            (("--bin-id", "00ff10"), "hex:00ff10"),
            (("--bin-id", "72" * 255), "hex:" + "72" * 255),
        ]:
            code, out, err = self.call(client, daemon, "--json-int", "3", *args)
            assert code == 0, err
            assert (out["id"], out["value"]) == (printed, "9")

    def test_meta_echo(self, client: ClientCLI, daemon: Peer) -> None:
        meta = ("--meta-key", "trace", "--meta-value", "abc",
                "--meta-key", "n", "--meta-value", "1")
        for args, status in [(("--json-int", "2"), "ok"), (("--ping",), "pong"),
                             (("--json-int", "4294967296"), "error")]:
            code, out, err = self.call(client, daemon, *args, *meta)
            assert code == (1 if status == "error" else 0), err
            assert out["status"] == status
            assert (out["meta.trace"], out["meta.n"]) == ("abc", "1")

    def test_timeout_exit_code(self, client: ClientCLI) -> None:
        import zmq

        # Bound sockets that never answer: the handshake cannot finish.
        ctx = zmq.Context.instance()
        with ctx.socket(zmq.PULL) as pull, ctx.socket(zmq.PUB) as pub:
            pull.linger = pub.linger = 0
            pull.bind("tcp://127.0.0.1:*")
            pub.bind("tcp://127.0.0.1:*")
            code, out, err = client(pull.LAST_ENDPOINT.decode(), pub.LAST_ENDPOINT.decode(),
                                    "--json-int", "1", timeout_ms=300)
        assert code == 3
        assert out == {}
        assert "timeout" in err

    def test_usage_exit_code(self, client: ClientCLI) -> None:
        code, out, err = client("inproc://unused", "inproc://unused", "--bogus")
        assert code == 2
        assert out == {}
        assert "usage" in err


def worked_example() -> tuple[list[bytes], list[bytes]]:
    """The request frames and response frames of the hex dumps in docs/PROTOCOL.md."""
    text = (REPO / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    section = text[text.index("## Worked example"):text.index("### What zjobs sends")]
    frames: list[bytes] = []
    current: bytearray | None = None
    for line in section.splitlines():
        if re.match(r"frame \d \(", line):
            current = bytearray()
            frames.append(b"")
        elif current is not None and (hexdump := re.match(r"[0-9a-f]{4}  ((?:[0-9a-f]{2} ?)+)$",
                                                         line)):
            current += bytes.fromhex(hexdump.group(1))
            frames[-1] = bytes(current)
    assert len(frames) == 5, f"expected 2 request and 3 response frames, found {len(frames)}"
    return frames[:2], frames[2:]


def batch_example() -> tuple[list[bytes], list[bytes]]:
    """The batch request and batch response frames of docs/PROTOCOL.md's "A batch, byte by
    byte"."""
    text = (REPO / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    section = text[text.index("### A batch, byte by byte"):]
    section = section[:section.index("\n## ")]  # up to the next section
    request: list[bytes] = []
    response: list[bytes] = []
    current: list[bytes] | None = None
    for line in section.splitlines():
        if line.startswith("batch frame "):
            current = request
            current.append(b"")
        elif line.startswith("batch response frame "):
            current = response
            current.append(b"")
        elif line.startswith("pong header"):
            current = None
        elif current is not None and (hexdump := re.match(r"[0-9a-f]{4}  ((?:[0-9a-f]{2} ?)+)$",
                                                         line)):
            current[-1] += bytes.fromhex(hexdump.group(1))
    assert (len(request), len(response)) == (3, 3), "expected 3 request and 3 response frames"
    return request, response
