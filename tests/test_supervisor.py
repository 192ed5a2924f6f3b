"""The Supervisor with real child processes: backoff, readiness, stop escalation."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable

import pytest

from zjobs.errors import StartError
from zjobs.run.supervisor import ChildSpec, Supervisor
from zjobs.testing import wait_until


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def matching(self, pattern: str) -> list[re.Match[str]]:
        return [m for line in list(self.lines) if (m := re.search(pattern, line))]


def run_until(supervisor: Supervisor, done: Callable[[], bool]) -> None:
    runner = threading.Thread(target=supervisor.run, name="test-supervisor")
    runner.start()
    try:
        wait_until(done, timeout_s=30)
    finally:
        supervisor.request_stop()
        runner.join(10)
        supervisor.stop()


@pytest.mark.timeout(60)
def test_a_crashing_child_is_restarted_with_a_doubling_capped_backoff() -> None:
    out = Lines()
    supervisor = Supervisor(out=out, backoff_s=0.1, max_backoff_s=0.3, stable_s=60)
    supervisor.start([ChildSpec("crash", python("import sys; sys.exit(3)"))])
    run_until(supervisor, lambda: len(out.matching("restarting in")) >= 4)
    delays = [m[1] for m in out.matching(r"crash \(pid \d+\) exited with code 3 after "
                                         r"[\d.]+s; restarting in ([\d.]+)s")]
    assert delays[:4] == ["0.1", "0.2", "0.3", "0.3"]
    assert len(out.matching(r"^started crash \(pid \d+\)")) >= 4


@pytest.mark.timeout(60)
def test_a_child_that_ran_long_enough_starts_over_at_the_first_delay() -> None:
    out = Lines()
    supervisor = Supervisor(out=out, backoff_s=0.1, max_backoff_s=5, stable_s=0.2)
    supervisor.start([ChildSpec("steady", python("import time; time.sleep(0.4)"))])
    run_until(supervisor, lambda: len(out.matching("restarting in")) >= 3)
    assert {m[1] for m in out.matching(r"restarting in ([\d.]+)s")} == {"0.1"}


def test_start_waits_for_the_ready_line_and_prints_the_description() -> None:
    out = Lines()
    supervisor = Supervisor(out=out)
    code = "import time; print('booting'); time.sleep(0.2); print('ok ready'); time.sleep(60)"
    supervisor.start([ChildSpec("svc", python(code), ready_line="ok ready",
                                describe="svc listens on nothing")])
    try:
        assert out.lines[-1] == "svc listens on nothing"
        assert "svc | booting" in out.lines and "svc | ok ready" in out.lines
        pid = supervisor.pid("svc")
        assert pid is not None and f"started svc (pid {pid})" in out.lines
    finally:
        assert supervisor.stop() == 0
    assert out.matching(r"stopped svc \(pid \d+, signal SIGTERM\)")


def test_a_child_that_exits_while_starting_is_a_start_error() -> None:
    out = Lines()
    supervisor = Supervisor(out=out)
    with pytest.raises(StartError, match="bad exited with code 4 while starting"):
        supervisor.start([ChildSpec("bad", python("print('oops'); raise SystemExit(4)"),
                                    ready_line="never")])
    supervisor.stop()
    assert "bad | oops" in out.lines


def test_a_child_ignoring_sigterm_is_killed_after_the_stop_timeout() -> None:
    out = Lines()
    supervisor = Supervisor(out=out, stop_timeout_s=0.5)
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)")
    supervisor.start([ChildSpec("stubborn", python(code), ready_line="up")])
    assert supervisor.stop() == 1
    assert out.matching(r"stopped stubborn \(pid \d+, signal SIGKILL\)")
    assert supervisor.stop() == 0  # idempotent


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(60)
def test_each_child_gets_a_lifeline_pipe_and_restarts_leak_none() -> None:
    out = Lines()
    code = ("import os, stat; fd = int(os.environ['ZJOBS_LIFELINE']); "
            "print('lifeline pipe', stat.S_ISFIFO(os.fstat(fd).st_mode), flush=True)")
    before = open_fds()
    supervisor = Supervisor(out=out, backoff_s=0.01, max_backoff_s=0.01, stable_s=60)
    supervisor.start([ChildSpec("short", python(code), ready_line="lifeline")])
    run_until(supervisor, lambda: len(out.matching("restarting in")) >= 10)
    found = [m[1] for m in out.matching(r"short \| lifeline pipe (\w+)")]
    assert len(found) >= 10 and set(found) == {"True"}
    assert open_fds() == before


def test_a_failed_start_names_the_childs_own_error() -> None:
    out = Lines()
    supervisor = Supervisor(out=out)
    code = "import sys; print('Error: cannot bind tcp://127.0.0.1:1: busy'); sys.exit(2)"
    with pytest.raises(StartError, match=r"^bad exited with code 2 while starting: cannot "
                                         r"bind tcp://127.0.0.1:1: busy$"):
        supervisor.start([ChildSpec("bad", python(code), ready_line="never")])
    supervisor.stop()


def test_a_probe_gets_the_ready_line_and_readiness_waits_for_it() -> None:
    out = Lines()
    seen: list[str] = []

    def probe(line: str, timeout_s: float) -> None:
        seen.append(line)
        if len(seen) < 3:
            raise TimeoutError("not yet")

    supervisor = Supervisor(out=out)
    code = "import time; print('serving instance=abc', flush=True); time.sleep(60)"
    try:
        supervisor.start([ChildSpec("svc", python(code), ready_line="serving", probe=probe)])
        assert seen == ["serving instance=abc"] * 3
    finally:
        supervisor.stop()


def test_children_stderr_goes_to_err_and_stdout_to_out() -> None:
    out, err = Lines(), Lines()
    supervisor = Supervisor(out=out, child_err=lambda name, line: err(f"{name} | {line}"))
    code = "import sys; print('for scripts', flush=True); print('a log line', file=sys.stderr)"
    supervisor.start([ChildSpec("kid", python(code + "; import time; time.sleep(30)"))])
    try:
        wait_until(lambda: out.matching("for scripts") and err.matching("a log line"))
    finally:
        supervisor.stop()
    assert "kid | for scripts" in out.lines and "kid | a log line" in err.lines
    assert not out.matching("a log line") and not err.matching("for scripts")
