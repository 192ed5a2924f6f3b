"""Send texts through the running example pipeline and show what was stored.

    zjobs up examples/pipeline/system.toml &     # in another terminal, or in the background
    python examples/pipeline/call.py "a great day" "slow and broken" ""
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from jobs import database_path

import zjobs

ENTRY = "ipc:///tmp/zjobs-pipeline/parse.req"   # the first stage's requests
EXIT = "ipc:///tmp/zjobs-pipeline/store.pub"    # the last stage's responses


def main(texts: list[str]) -> int:
    failed = 0
    # retries: a stage that zjobs up restarts meanwhile costs a retry, not a result; the
    # stages' replay windows answer repeats, so every text is stored once.
    with zjobs.Pipeline.connect(ENTRY, EXIT, timeout_s=10, retries=3) as pipeline:
        for text in texts:
            try:
                print(f"{text!r} -> {pipeline.call(text)}")
            except zjobs.StageError as exc:
                failed += 1
                print(f"{text!r} failed at stage {exc.stage!r}: {exc.message}")
    with sqlite3.connect(database_path()) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM results").fetchone()
    print(f"{count} row(s) in {database_path()}")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to send through the "
                        "pipeline [default: three samples]")
    texts = parser.parse_args().texts
    sys.exit(main(texts or ["a great day", "slow and broken", "nice, fast, clean"]))
