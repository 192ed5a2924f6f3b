"""The ``zjobs demo`` system and its jobs."""

from __future__ import annotations

import pytest

from zjobs.demo import describe, lookup, run_demo, sleep, square


def test_jobs_are_plain_functions() -> None:
    assert square(7, None) == 49
    assert describe(9, None) == "9 is odd"
    assert sleep(0, None) == 0
    assert lookup.run("abc", None) == {"word": "abc", "length": 3, "vowels": 1}


@pytest.mark.timeout(30)
def test_demo_shows_chain_cache_and_error() -> None:
    lines: list[str] = []
    run_demo(lines.append)
    text = "\n".join(lines)
    # The chain: one id goes through square then describe, which records the path.
    for rid, n, sq in (("n-1", 3, 9), ("n-2", 4, 16), ("n-3", 12, 144)):
        sent = lines.index(f"  -> square    id={rid:4} {n}")
        assert lines[sent + 1].startswith(f"  <- square    id={rid:4} ok cached=false {sq} ")
        assert lines[sent + 2].startswith(f"  <- describe  id={rid:4} ok cached=false ")
        assert 'meta={"path": ["square", "describe"]}' in lines[sent + 2]
    assert "<- lookup    id=c-1  ok cached=false" in text
    assert "<- lookup    id=c-2  ok cached=true " in text
    assert "error JobFailed: TypeError" in text
    assert "<- square    id=e-2  ok cached=false 49" in text
    assert "lookup    received=" in text and "cache_hits=1" in text
