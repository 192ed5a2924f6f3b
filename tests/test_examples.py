"""Every standalone example runs to completion, as a reader of the README would run it."""

from __future__ import annotations

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
