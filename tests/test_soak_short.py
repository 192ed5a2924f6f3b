"""The soak benchmark (benchmarks/soak.py), short: 4 client processes at full speed for 5 s
against a zjobs serve daemon; no errors and no lost calls."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


@pytest.mark.timeout(150)
def test_short_soak_loses_nothing() -> None:
    spec = importlib.util.spec_from_file_location("zjobs_soak", SOAK)
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = soak  # dataclasses look their module up there
    try:
        spec.loader.exec_module(soak)
    finally:
        del sys.modules[spec.name]
    result = soak.run_soak(seconds=5.0, clients=4, window=50)
    print("\n" + result.summary())
    assert result.calls > 0
    assert result.errors == 0
    assert result.lost == 0
