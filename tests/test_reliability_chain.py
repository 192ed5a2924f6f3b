"""Chains under restarts: a 3-stage system under a real ``zjobs up``, 2,000 calls through a
``Pipeline`` with retries, and a SIGKILL of the middle stage while they are in flight.

Each stage's job appends ``value pid`` to its own file in the test's folder, so the test
counts the runs of every input at every stage, and which process ran them.
"""

from __future__ import annotations

import collections
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, wait
from pathlib import Path

import pytest
from jobs_up import Up

from zjobs import Pipeline

CALLS = 2_000
IN_FLIGHT = 200
KILL_AFTER = 600  # answered calls before the middle stage is killed

JOBS = '''
import os, time

OUT = {out!r}

def _record(stage, x):
    # The work first, the effect last: a SIGKILL lands between them rarely.
    with open(os.path.join(OUT, stage + ".runs"), "a") as f:
        f.write(f"{{x}} {{os.getpid()}}\\n")

def a(x, resources):
    time.sleep(0.0005)
    _record("a", x)
    return x + 1

def b(x, resources):
    time.sleep(0.0005)
    _record("b", x)
    return x * 2

def c(x, resources):
    time.sleep(0.0005)
    _record("c", x)
    return -x
'''


def system_toml(module: str, ipc: Path) -> str:
    stages = "".join(f'''
[processors.{name}]
job = "{module}:{name}"
requests = "ipc://{ipc}/{name}.req"
responses = "ipc://{ipc}/{name}.pub"
''' for name in "abc")
    return f'[system]\nname = "chain"\n{stages}\n[[links]]\nfrom = "a"\nto = "b"\n\n' \
           '[[links]]\nfrom = "b"\nto = "c"\n'


def runs(folder: Path, stage: str) -> dict[int, list[int]]:
    """The pids that ran each input of ``stage``, in order."""
    found: dict[int, list[int]] = collections.defaultdict(list)
    for line in (folder / f"{stage}.runs").read_text().splitlines():
        value, pid = line.split()
        found[int(value)].append(int(pid))
    return found


@pytest.fixture
def chain(tmp_path: Path, ipc_dir: Path) -> Iterator[tuple[Up, Path]]:
    module = f"jobs_chain_{secrets.token_hex(4)}"
    (tmp_path / f"{module}.py").write_text(JOBS.format(out=str(tmp_path)))
    path = tmp_path / "system.toml"
    path.write_text(system_toml(module, ipc_dir))
    up = Up(path)
    try:
        up.wait_for(lambda line: line.startswith("ready: chain"))
        yield up, ipc_dir
    finally:
        up.cleanup()


@pytest.mark.timeout(120)
def test_kill_9_of_the_middle_stage_loses_no_call_with_retries(
        chain: tuple[Up, Path], tmp_path: Path) -> None:
    up, ipc = chain
    killed = up.pids()["b"]
    slots = threading.Semaphore(IN_FLIGHT)
    answered = collections.Counter[str]()
    kill_now = threading.Event()

    def settled(future: Future[int]) -> None:
        answered["all"] += 1
        if answered["all"] == KILL_AFTER:
            kill_now.set()
        slots.release()

    futures: list[Future[int]] = []
    sent_kill = False
    with Pipeline.connect(f"ipc://{ipc}/a.req", f"ipc://{ipc}/c.pub", timeout_s=3.0,
                          retries=5) as pipeline:
        pipeline.start()
        for i in range(CALLS):
            slots.acquire()
            if kill_now.is_set() and not sent_kill:
                os.kill(killed, signal.SIGKILL)
                sent_kill = True
            future = pipeline.submit(i)
            future.add_done_callback(settled)
            futures.append(future)
        done, _ = wait(futures, timeout=90)
        resent = pipeline.resent
    assert sent_kill
    up.wait_for(lambda line: line.startswith(f"b (pid {killed}) exited with signal SIGKILL"))

    results = [f.result() if f in done and f.exception() is None else None for f in futures]
    lost = [i for i, result in enumerate(results) if result != -(i + 1) * 2]
    assert lost == [], f"{len(lost)} of {CALLS} calls lost or wrong"
    assert resent > 0  # the kill did hit work in flight: retries recovered it

    a_runs, b_runs, c_runs = (runs(tmp_path, stage) for stage in "abc")
    # The stages that lived answered every repeat from their replay windows.
    assert sorted(a_runs) == list(range(CALLS))
    assert [x for x, pids in a_runs.items() if len(pids) > 1] == []
    assert sorted(c_runs) == [(i + 1) * 2 for i in range(CALLS)]
    assert [x for x, pids in c_runs.items() if len(pids) > 1] == []
    # The killed stage's window died with it: only work it had already run could run again
    # in its successor, and the successor ran each input once.
    assert sorted(b_runs) == [i + 1 for i in range(CALLS)]
    again = {x: pids for x, pids in b_runs.items() if len(pids) > 1}
    assert all(len(pids) == 2 and pids[0] == killed != pids[1] for pids in again.values()), again
    print(f"\nkill -9 of b under {CALLS} calls: {CALLS - len(lost)}/{CALLS} answered, "
          f"{resent} resent; re-runs: a 0, c 0, b {len(again)} (work the killed b had run)")

