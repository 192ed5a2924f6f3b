"""Processors in child processes: ProcessorProcess (spawn), several daemons behind one client."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from zjobs import BindError, Client, LoadError, ProcessorProcess, StartError, ZJobsError
from zjobs.demo import square
from zjobs.testing import wait_until

pytestmark = pytest.mark.timeout(90)
WAIT_S = 30.0

JOBS = '''
import pathlib
import time


def slow(request, resources):
    pathlib.Path(request["marker"]).write_text("started")
    time.sleep(request["seconds"])
    return request["seconds"]


def broken_resources():
    raise ConnectionError("database unreachable")
'''


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "rnjobs.py").write_text(JOBS)
    return str(tmp_path)


def test_three_daemons_one_client_every_processor_serves_some() -> None:
    children = [ProcessorProcess("zjobs.demo:square", name=f"square-{i}") for i in range(3)]
    try:
        for child in children:
            child.launch()
        for child in children:
            child.wait_started(WAIT_S)
        requests = [c.connect_endpoints.requests for c in children]
        responses = [c.connect_endpoints.responses for c in children]
        with Client.connect(requests, responses, timeout_s=WAIT_S,
                            ready_timeout_s=WAIT_S) as client:
            assert client.expect_processors == 3  # readiness waits for all three
            answers = [client.call_response(n) for n in range(300)]
        assert [a.value for a in answers] == [n * n for n in range(300)]
        served = collections.Counter(a.processor for a in answers)
        assert set(served) == {"square-0", "square-1", "square-2"}
        assert all(count > 0 for count in served.values()), served
    finally:
        codes = [child.stop() for child in children]
    assert codes == [0, 0, 0]
    for child in children:
        assert child.counters is not None
        assert child.counters.ok == served[child.name or ""]


def test_endpoints_name_repr_and_context_manager() -> None:
    with ProcessorProcess(square, requests="tcp://127.0.0.1:*") as child:
        assert child.state == "running" and child.is_alive()
        assert child.endpoints is not None
        assert child.endpoints.requests.startswith("tcp://127.0.0.1:")
        assert child.name == "square"
        assert f"pid={child.pid}" in repr(child) and child.endpoints.requests in repr(child)
        with child.client(timeout_s=WAIT_S, ready_timeout_s=WAIT_S) as client:
            assert client.call(12) == 144
    assert child.state == "stopped" and child.exitcode == 0
    assert child.stop() == 0  # idempotent


def test_stop_lets_the_job_in_progress_finish(app_dir: str, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with ProcessorProcess("rnjobs:slow", app_dir=app_dir) as child, \
            child.client(timeout_s=WAIT_S, ready_timeout_s=WAIT_S) as client:
        future = client.submit({"marker": str(marker), "seconds": 1.0})
        wait_until(marker.exists, timeout_s=WAIT_S)
        assert child.stop() == 0
        assert future.result(timeout=WAIT_S) == 1.0
    assert child.counters is not None and child.counters.ok == 1


def test_kill_does_not_wait() -> None:
    child = ProcessorProcess("zjobs.demo:sleep").start(WAIT_S)
    assert child.kill() == -signal.SIGKILL
    assert child.counters is None and not child.is_alive()


def test_load_error_in_the_child_is_raised_in_the_parent() -> None:
    child = ProcessorProcess("no_such_module_r:job")
    with pytest.raises(LoadError, match="no module named 'no_such_module_r'"):
        child.start(WAIT_S)
    assert child.exitcode == 2


def test_bind_error_in_the_child_is_raised_in_the_parent() -> None:
    with ProcessorProcess("zjobs.demo:square") as first:
        assert first.endpoints is not None
        taken = first.endpoints.requests
        second = ProcessorProcess("zjobs.demo:square", requests=taken)
        with pytest.raises(BindError) as info:
            second.start(WAIT_S)
        assert info.value.endpoint == taken and "already in use" in info.value.reason
        assert second.exitcode == 2


def test_failing_resources_factory_is_a_start_error(app_dir: str) -> None:
    child = ProcessorProcess("zjobs.demo:square", resources="rnjobs:broken_resources",
                             app_dir=app_dir)
    with pytest.raises(StartError, match="ConnectionError: database unreachable"):
        child.start(WAIT_S)
    assert child.exitcode == 1


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # exited, waiting for a reaper


PARENT = """
import sys, time
from zjobs import ProcessorProcess

if __name__ == "__main__":
    child = ProcessorProcess("zjobs.demo:square").start(60)
    print(child.pid, flush=True)
    time.sleep(120)
"""


def test_child_stops_when_its_parent_dies(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert not _gone(child_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(WAIT_S)
        wait_until(lambda: _gone(child_pid), timeout_s=WAIT_S)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if "child_pid" in locals() and not _gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_start_twice_is_refused() -> None:
    child = ProcessorProcess("zjobs.demo:square")
    with child, pytest.raises(ZJobsError, match="starts once"):
        child.start()
