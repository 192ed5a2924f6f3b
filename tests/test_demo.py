"""The ``zjobs demo`` system and its jobs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from zjobs.cli import main
from zjobs.demo import describe, lookup, run_demo, sleep, square

BIN = Path(sys.executable).with_name("zjobs")
ZJOBS = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "zjobs"]
WAIT_S = 60.0  # generous: other test suites load the machine


def test_jobs_are_plain_functions() -> None:
    assert square(7, None) == 49
    assert describe(9, None) == "9 is odd"
    assert sleep(0, None) == 0
    assert lookup.run("abc", None) == {"word": "abc", "length": 3, "vowels": 1}


def check_output(text: str) -> None:
    lines = text.splitlines()
    # The chain: the caller gets describe's result; square's result, tapped on its
    # responses, has the same id; the link appended square to meta "zjobs.path".
    for n, sq, words in ((3, 9, "9 is odd"), (4, 16, "16 is even"), (12, 144, "144 is even")):
        sent = lines.index(f"  -> square    {n}")
        middle = re.fullmatch(r"  \.\. square    id=(\S+) ok cached=false (\d+) "
                              r'meta=\{"zjobs.path": \[\]\}', lines[sent + 1])
        assert middle is not None, lines[sent + 1]
        assert int(middle[2]) == sq
        final = re.fullmatch(r"  <- describe  id=(\S+) ok cached=false \"(.*)\" "
                             r'meta=\{"zjobs.path": \["square"\]\} \(\d+\.\d ms\)',
                             lines[sent + 2])
        assert final is not None, lines[sent + 2]
        assert final[1] == middle[1] and final[2] == words
    # The cache: the same request twice, the repeat answered from the cache.
    first = lines.index('  -> lookup    "zeromq"')
    assert " ok cached=false " in lines[first + 1] and lines[first + 1].startswith("  <- lookup ")
    assert lines[first + 2] == '  -> lookup    "zeromq"'
    assert " ok cached=true  " in lines[first + 3] and lines[first + 3].startswith("  <- lookup ")
    # The error: square failed, the caller got a StageError naming it, the chain goes on.
    bad = lines.index('  -> square    "seven"')
    assert lines[bad + 1].startswith("  .. square    id=")
    assert " error JobFailed: TypeError: " in lines[bad + 1]
    assert lines[bad + 2].startswith('  <- StageError stage=square path=["square"]: '
                                     "JobFailed: TypeError: ")
    assert lines[bad + 3:bad + 5] == ["  -> square    7", '  <- describe  "49 is odd"']
    assert re.search(r"^  lookup .* cache_hits=1 ", text, re.MULTILINE)
    assert re.search(r"^  square->describe received=\d+ forwarded=4 errors=1 ", text,
                     re.MULTILINE)
    assert lines[-1].startswith("Done in ")


@pytest.mark.timeout(30)
def test_run_demo_shows_chain_cache_and_error() -> None:
    lines: list[str] = []
    run_demo(lines.append)
    check_output("\n".join(lines))


@pytest.mark.timeout(30)
def test_demo_command_exits_0() -> None:
    result = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    check_output(result.output)


@pytest.mark.timeout(90)
def test_demo_subprocess_exits_0() -> None:
    proc = subprocess.Popen([*ZJOBS, "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == ""
    check_output(out)
