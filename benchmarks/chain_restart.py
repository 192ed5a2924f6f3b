"""Chains under restarts: kill -9 of the middle stage of a 3-stage ``zjobs up`` system while
calls flow through a ``Pipeline``, with and without retries.

    python benchmarks/chain_restart.py [--rounds N] [--calls N]

Each round starts the system, makes ``--calls`` calls (200 in flight, ``timeout_s`` 3 s),
kills stage b with SIGKILL after 30 % of them were answered, and counts the calls
answered and the job runs per input at every stage (each job appends its input to a
file). Modes: no retries; link retries only (``retries = 3`` on both links); pipeline
retries (``retries=5``); both. The README's "Reliability and delivery guarantees" quotes
the output.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future, wait
from pathlib import Path

from zjobs import Pipeline

JOBS = '''
import os, time
OUT = {out!r}

def _record(stage, x):
    with open(os.path.join(OUT, stage + ".runs"), "a") as f:
        f.write(f"{{x}}\\n")

def a(x, resources):
    time.sleep(0.0005); _record("a", x); return x + 1

def b(x, resources):
    time.sleep(0.0005); _record("b", x); return x * 2

def c(x, resources):
    time.sleep(0.0005); _record("c", x); return -x
'''


def system(folder: Path, link_retries: int) -> Path:
    (folder / "jobs_bench_chain.py").write_text(JOBS.format(out=str(folder)))
    text = '[system]\nname = "chain"\n'
    for name in "abc":
        text += (f'\n[processors.{name}]\njob = "jobs_bench_chain:{name}"\n'
                 f'requests = "ipc://{folder}/{name}.req"\n'
                 f'responses = "ipc://{folder}/{name}.pub"\n')
    for source, target in ("ab", "bc"):
        text += f'\n[[links]]\nfrom = "{source}"\nto = "{target}"\n'
        if link_retries:
            text += f"retries = {link_retries}\nretry_timeout_s = 1.0\n"
    path = folder / "system.toml"
    path.write_text(text)
    return path


def one_round(calls: int, pipeline_retries: int, link_retries: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="zjc-", dir="/tmp") as name:
        folder = Path(name)
        up = subprocess.Popen([sys.executable, "-m", "zjobs", "up",
                               str(system(folder, link_retries))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=folder)
        assert up.stdout is not None
        pids: dict[str, int] = {}
        for line in up.stdout:
            if found := re.match(r"started (\S+) \(pid (\d+)\)", line):
                pids[found[1]] = int(found[2])
            if line.startswith("ready:"):
                break
        threading.Thread(target=up.stdout.read, daemon=True).start()  # keep it drained
        try:
            return _calls(folder, pids["b"], calls, pipeline_retries)
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(60)


def _calls(folder: Path, victim: int, calls: int, retries: int) -> dict[str, int]:
    slots = threading.Semaphore(200)
    answered = [0]
    kill_now = threading.Event()

    def settled(future: Future[int]) -> None:
        answered[0] += 1
        if answered[0] == calls * 3 // 10:
            kill_now.set()
        slots.release()

    futures: list[Future[int]] = []
    with Pipeline.connect(f"ipc://{folder}/a.req", f"ipc://{folder}/c.pub", timeout_s=3.0,
                          retries=retries) as pipeline:
        pipeline.start()
        killed = False
        for i in range(calls):
            slots.acquire()
            if kill_now.is_set() and not killed:
                os.kill(victim, signal.SIGKILL)
                killed = True
            future = pipeline.submit(i)
            future.add_done_callback(settled)
            futures.append(future)
        wait(futures, timeout=120)
    ok = sum(1 for i, f in enumerate(futures)
             if f.done() and f.exception() is None and f.result() == -(i + 1) * 2)
    out = {"answered": ok, "lost": calls - ok}
    for stage in "abc":
        runs = collections.Counter((folder / f"{stage}.runs").read_text().split())
        out[f"{stage}_again"] = sum(n - 1 for n in runs.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    modes = {"no retries": (0, 0), "link retries only": (0, 3),
             "pipeline retries": (5, 0), "pipeline and link retries": (5, 3)}
    print(f"kill -9 of the middle stage under {args.calls} pipeline calls, "
          f"{args.rounds} round(s) per mode")
    for mode, (pipeline_retries, link_retries) in modes.items():
        rounds = [one_round(args.calls, pipeline_retries, link_retries)
                  for _ in range(args.rounds)]
        print(f"{mode:28} lost per round {[r['lost'] for r in rounds]}; job re-runs per "
              f"round a {[r['a_again'] for r in rounds]} b {[r['b_again'] for r in rounds]} "
              f"c {[r['c_again'] for r in rounds]}", flush=True)


if __name__ == "__main__":
    main()
