"""``zjobs serve`` on async jobs (detected) and ``--concurrency``: real daemons in subprocesses."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from zjobs import Client
from zjobs.cli import main
from zjobs.testing import wait_until

BIN = Path(sys.executable).with_name("zjobs")
ZJOBS = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "zjobs"]
WAIT_S = 30.0  # generous: other test suites load the machine

JOBS = '''
import asyncio
import pathlib
import threading
import time

current = peak = 0
lock = threading.Lock()


async def gauge(request, resources):
    """Waits request["s"] seconds; returns the most requests it saw in flight at once."""
    global current, peak
    current += 1
    peak = max(peak, current)
    if "marker" in request:
        pathlib.Path(request["marker"]).write_text("started")
    await asyncio.sleep(request["s"])
    current -= 1
    return peak


def blocking_gauge(request, resources):
    global current, peak
    with lock:
        current += 1
        peak = max(peak, current)
    time.sleep(request["s"])
    with lock:
        current -= 1
        return peak


async def open_log():
    path = pathlib.Path(__file__).with_name("resources.log")
    path.write_text("opened\\n")
    yield "res"
    with path.open("a") as log:
        log.write("closed\\n")
'''

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "aiojobs.py").write_text(JOBS)
    return tmp_path


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ZJOBS_")}


def _readline(proc: subprocess.Popen[bytes], timeout_s: float = WAIT_S) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout_s), f"no line within {timeout_s}s"
    return proc.stdout.readline().decode()


@pytest.fixture
def serve(app_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """Start ``zjobs serve`` subprocesses; each is killed (by PID) if a test left it running."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(job: str, *options: str) -> tuple[subprocess.Popen[bytes], dict[str, str], Path]:
        err = tmp_path / f"serve-{len(procs)}.err"
        with err.open("wb") as stderr:
            proc = subprocess.Popen(
                [*ZJOBS, "serve", job, "--app-dir", str(app_dir), "--requests",
                 "tcp://127.0.0.1:*", "--responses", "tcp://127.0.0.1:*", *options],
                stdout=subprocess.PIPE, stderr=stderr, env=_env())
        procs.append(proc)
        line = _readline(proc)
        assert line.startswith("listening "), (line, err.read_text())
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        return proc, fields, err

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


def test_async_job_is_served_concurrently_and_stops_on_sigterm(
        serve: Any, app_dir: Path) -> None:
    proc, ep, err = serve("aiojobs:gauge", "--concurrency", "4", "--resources",
                          "aiojobs:open_log", "--name", "gauge")
    assert ep["name"] == "gauge"
    with Client.connect(ep["requests"], ep["responses"], timeout_s=WAIT_S) as client:
        futures = [client.submit({"s": 0.3}) for _ in range(12)]
        peaks = [f.result() for f in futures]
    assert 1 < max(peaks) <= 4  # concurrent, within the limit
    assert (app_dir / "resources.log").read_text() == "opened\n"
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT_S) == 0
    assert (app_dir / "resources.log").read_text() == "opened\nclosed\n"
    assert "stopped 'gauge'" in err.read_text()


def test_sigterm_lets_jobs_in_flight_finish(serve: Any, tmp_path: Path) -> None:
    proc, ep, _ = serve("aiojobs:gauge")  # async: detected without --concurrency
    marker = tmp_path / "started"
    with Client.connect(ep["requests"], ep["responses"], timeout_s=WAIT_S) as client:
        future = client.submit({"s": 1.0, "marker": str(marker)})
        wait_until(marker.exists, WAIT_S)
        proc.send_signal(signal.SIGTERM)
        assert future.result() == 1  # answered during the graceful stop
    assert proc.wait(WAIT_S) == 0


def test_sync_job_with_concurrency_runs_in_threads(serve: Any) -> None:
    proc, ep, _ = serve("aiojobs:blocking_gauge", "--concurrency", "3")
    with Client.connect(ep["requests"], ep["responses"], timeout_s=WAIT_S) as client:
        start = time.monotonic()
        peaks = [f.result() for f in [client.submit({"s": 0.3}) for _ in range(9)]]
        assert time.monotonic() - start > 0.8  # three rounds of 0.3 s at most three at once
    assert 1 < max(peaks) <= 3
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT_S) == 0


def test_serve_help_documents_concurrency() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # help lines wrap
    assert "--concurrency N" in text and "async def run" in text
