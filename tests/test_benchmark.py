"""The benchmark harness (benchmarks/harness.py, outside the package) runs end to end (tiny
sizes; no timing is asserted: speed targets are ratios read from a full run, not test
conditions), and ``zjobs bench`` finds it in a source checkout or says why not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from zjobs.cli import main, tools
from zjobs.cli.app import RET_ERROR
from zjobs.cli.tools import BENCHMARKS

harness = tools.load_harness(BENCHMARKS)
Settings, met, run, write_json = harness.Settings, harness.met, harness.run, harness.write_json


def test_the_harness_is_not_part_of_the_package() -> None:
    assert Path(harness.__file__).resolve() == BENCHMARKS.resolve() / "harness.py"
    assert not (Path(tools.__file__).parent.parent / "benchmark.py").exists()


def test_bench_without_a_source_checkout_says_so(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "BENCHMARKS", tmp_path)
    done = CliRunner().invoke(main, ["bench", "--quick"])
    assert done.exit_code == RET_ERROR
    assert "zjobs bench needs a source checkout" in done.output
    assert str(tmp_path / "harness.py") in done.output


@pytest.mark.timeout(300)
def test_every_figure_is_measured_for_both_sides(tmp_path: Path) -> None:
    tiny = Settings(rounds=1, pipelined=400, window_count=400, window=50, sequential=50,
                    async_count=300, map_count=2_000, payload_count=20, scaling_count=40,
                    rss_in_flight=500, rss_requests=500, transports=("tcp", "ipc"))
    lines: list[str] = []
    results = run(tiny, out=lines.append)
    figures = {row["figure"]: row for row in results.rows}
    for transport in ("tcp", "ipc"):
        for name in (f"list comprehension of 400 submits, {transport}",
                     f"pipelined, 50 in flight, {transport}"):
            assert figures[name]["zjobs"] > 0 and figures[name]["raw"] > 0
        for p in ("p50", "p90", "p99"):
            row = figures[f"sequential latency {p}, {transport}"]
            assert row["zjobs"] > 0 and row["raw"] > 0 and row["ratio"] > 0
    for name in ("asyncio gather of call() vs raw zmq.asyncio", "asyncio map vs raw zmq.asyncio",
                 "sum(client.map(range(2,000))) vs raw per-message loop, tcp"):
        assert figures[name]["zjobs"] > 0 and figures[name]["raw"] > 0
    assert figures["CPU-bound: 2 processes vs 1"]["zjobs"] > 0
    assert figures["64 KiB payload echo, tcp"]["zjobs"] > 0
    assert figures["client RSS per call in flight (500 in flight)"]["zjobs"] != 0
    assert results.rss["client_after_mib"] > 0 and results.rss["processor_after_mib"] > 0
    assert results.rss["requests"] == 500
    # Every figure with a target says met or missed; all six targets are among them.
    for row in results.rows:
        assert (row["met"] is None) == (row["target"] == ""), row
        assert row["lost"] == 0, row
    assert {row["issue_target"] for row in results.rows} - {None} == {1, 2, 3, 4, 5, 6}
    summary = lines[lines.index("the six targets of the performance issue:") + 1:]
    assert len(summary) == sum(1 for row in results.rows if row["issue_target"])
    assert all(line.endswith((": met", ": missed")) for line in summary)
    write_json(results, tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())["rows"] == results.rows


def test_targets_are_read_as_ratios_or_absolute_bounds() -> None:
    assert met(">= 1.0x", 5.0, 1.2) is True
    assert met(">= 1.0x", 5.0, 0.9) is False
    assert met("<= 1.05x", 5.0, 1.05) is True
    assert met("<= 1024 B", 1500.0, None) is False
    assert met("<= 5 MiB", -0.5, None) is True
    assert met("", 1.0, 1.0) is None
    assert met(">= 1.0x", 1.0, None) is None


def test_bench_command_help_has_an_example() -> None:
    done = CliRunner().invoke(main, ["bench", "--help"])
    assert done.exit_code == 0
    assert "zjobs bench --quick" in done.output
    assert "--long" in done.output
    assert CliRunner().invoke(main, ["bench", "--rounds", "0"]).exit_code == 2
