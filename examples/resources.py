"""Resources: created once when the processor starts, passed to every run, closed when it stops.

Run: python examples/resources.py
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Iterator
from typing import Any

import zjobs


def open_db() -> Iterator[sqlite3.Connection]:
    """A generator factory: setup before the yield, cleanup after (also if jobs raised)."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.execute("create table seen (word text)")
    print("resources: opened")
    try:
        yield conn
    finally:
        conn.close()
        print("resources: closed")


def remember(request: str, db: sqlite3.Connection) -> int:
    """Store a word, return how many words are stored."""
    db.execute("insert into seen values (?)", (request,))
    count: Any = db.execute("select count(*) from seen").fetchone()[0]
    return int(count)


def main() -> None:
    with zjobs.ZmqProcessor(remember, resources=open_db) as processor, processor.client() as c:
        for word in ["alpha", "beta", "gamma"]:
            print(word, "->", c.call(word))


def _usage() -> None:
    """Answer --help with this file's description; the example takes no options."""
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


if __name__ == "__main__":
    _usage()
    main()
