"""Every standalone example runs to completion, as a reader of the README would run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [*sorted((ROOT / "examples").glob("*.py")),
           ROOT / "examples" / "daemons" / "three_daemons.py"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_runs(script: Path) -> None:
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=80)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "an example shows what it does"
    assert "Traceback" not in done.stderr


def _scripts() -> list[list[str]]:
    """Every script a reader may run: Python files with a main block, shell and Node.js."""
    ours = [p for p in sorted([*ROOT.glob("benchmarks/*"), *ROOT.glob("examples/**/*")])
            if "node_modules" not in p.parts and p.is_file()]
    commands = [[sys.executable, str(p)] for p in ours
                if p.suffix == ".py" and 'if __name__ == "__main__"' in p.read_text()]
    commands += [["bash", str(p)] for p in ours if p.suffix == ".sh"]
    if shutil.which("node") and (ROOT / "examples" / "node" / "node_modules").is_dir():
        commands += [["node", str(p)] for p in ours if p.suffix == ".js"]
    return commands


@pytest.mark.parametrize("command", _scripts(), ids=lambda c: str(Path(c[-1]).relative_to(ROOT)))
def test_every_script_answers_help_with_usage(command: list[str]) -> None:
    done = subprocess.run([*command, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.lower().startswith("usage:"), done.stdout[:500]
    assert "Traceback" not in done.stderr
