"""Watch (the heartbeats behind zjobs status/top/dashboard) and ``zjobs status``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from zjobs import ZmqProcessor
from zjobs.cli import main
from zjobs.cli.watch import MISSING, Expected, Watch, format_duration, sparkline
from zjobs.testing import wait_until


def square(request: Any, resources: Any) -> Any:
    if request == "boom":
        raise ValueError("boom")
    return request * request


def beating(ipc_dir: Path, name: str, **options: Any) -> ZmqProcessor:
    return ZmqProcessor(square, name=name, requests=f"ipc://{ipc_dir}/{name}.req",
                        responses=f"ipc://{ipc_dir}/{name}.pub", heartbeat_interval_s=0.05,
                        **options)


def poll_until(watch: Watch, predicate: Any, timeout_s: float = 10.0) -> None:
    def check() -> bool:
        watch.poll(0.02)
        return bool(predicate())
    wait_until(check, timeout_s, interval_s=0)


def test_rows_show_each_run_with_its_load_and_a_missing_endpoint(ipc_dir: Path) -> None:
    with beating(ipc_dir, "sq") as proc, proc.client() as client:
        nobody = f"ipc://{ipc_dir}/nobody.pub"
        with Watch([proc.connect_endpoints.responses, Expected(nobody, "ghost")]) as watch:
            assert not watch.wait_heard(0.3)  # nobody never answers
            for value in (2, 3, "boom"):
                client.submit(value).exception()
            poll_until(watch, lambda: watch.rows()[0].errors == 1)
            sq, ghost = watch.rows()
            assert (sq.name, sq.state, sq.instance, sq.pid > 0) == ("sq", "running",
                                                                    proc.instance, True)
            assert sq.counters["ok"] == 2 and sq.in_flight == 0
            assert (ghost.name, ghost.endpoint, ghost.state) == ("ghost", nobody, MISSING)
            assert watch.problems() == [f"ghost at {nobody}: missing"]
            history = watch.history(proc.instance)
            assert history is not None and len(history.requests_per_s) >= 1
            poll_until(watch, lambda: any(r > 0 for r in history.requests_per_s))


def test_a_stopped_run_shows_until_a_new_one_serves_on_its_endpoint(ipc_dir: Path) -> None:
    first = beating(ipc_dir, "sq").start()
    with Watch([first.connect_endpoints.responses]) as watch:
        try:
            assert watch.wait_heard(10)
        finally:
            first.stop()
        poll_until(watch, lambda: watch.rows()[0].state == "stopped")
        assert watch.problems() and "stopped" in watch.problems()[0]
        with beating(ipc_dir, "sq") as second:
            poll_until(watch, lambda: watch.rows()[0].instance == second.instance)
            assert [row.state for row in watch.rows()] == ["running"]
            assert watch.problems() == []


def test_a_silent_run_is_gone_after_its_liveness(ipc_dir: Path) -> None:
    clock_offset = [0.0]
    with beating(ipc_dir, "sq") as proc, Watch(
            [proc.connect_endpoints.responses],
            clock=lambda: time.monotonic() + clock_offset[0]) as watch:
        assert watch.wait_heard(10)
        clock_offset[0] = 1.0  # 20 intervals of silence, as the watch sees it
        assert watch.rows()[0].state == "gone"


def test_the_same_endpoint_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        Watch(["ipc:///tmp/x.pub", "ipc:///tmp/x.pub"])


def test_status_json_from_a_system_file_exits_1_for_a_missing_replica(ipc_dir: Path) -> None:
    system = ipc_dir / "system.toml"
    system.write_text(f"""
[processors.sq]
job = "jobs:square"
replicas = 2
requests = "ipc://{ipc_dir}/sq-{{i}}.req"
responses = "ipc://{ipc_dir}/sq-{{i}}.pub"
""")
    proc = ZmqProcessor(square, name="sq", requests=f"ipc://{ipc_dir}/sq-0.req",
                        responses=f"ipc://{ipc_dir}/sq-0.pub", heartbeat_interval_s=0.05)
    with proc:
        result = CliRunner().invoke(main, ["status", str(system), "--json", "--wait", "1"])
        assert result.exit_code == 1, result.output
        rows = json.loads(result.stdout)
        assert [(r["name"], r["state"]) for r in rows] == [("sq", "running"), ("sq", MISSING)]
        assert rows[0]["instance"] == proc.instance and rows[0]["host"]
        assert rows[1]["endpoint"] == f"ipc://{ipc_dir}/sq-1.pub"
        assert "sq at ipc://" in result.stderr and "missing" in result.stderr

        table = CliRunner().invoke(main, ["status", "--responses", f"ipc://{ipc_dir}/sq-0.pub"])
        assert table.exit_code == 0, table.output
        assert "running" in table.stdout and proc.instance[:8] in table.stdout


def test_status_needs_something_to_watch() -> None:
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 2 and "--responses" in result.output


def test_sparkline_and_durations() -> None:
    assert sparkline([0, 5, 10], 10) == "▁▅█"
    assert sparkline([1, 2, 3, 4], 2) == "▆█"
    assert sparkline([0, 0], 5) == "▁▁"
    assert [format_duration(s) for s in (None, 4e-6, 0.0123, 2.5)] == ["-", "4µs", "12.3ms",
                                                                       "2.5s"]
