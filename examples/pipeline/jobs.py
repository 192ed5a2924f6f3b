"""The three stages of the example pipeline: parse -> score -> store (SQLite).

Run them with `zjobs up examples/pipeline/system.toml`; call them with `call.py`.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

POSITIVE = frozenset({"good", "great", "fast", "love", "nice", "happy", "clean"})
NEGATIVE = frozenset({"bad", "slow", "hate", "broken", "sad", "ugly", "lost"})


def parse(text: str, resources: Any) -> dict[str, Any]:
    """Stage 1: split a text into lower-case words."""
    if not isinstance(text, str):
        raise TypeError(f"expected a text, got {type(text).__name__}")
    return {"text": text, "words": re.findall(r"[a-z']+", text.lower())}


def score(parsed: dict[str, Any], resources: Any) -> dict[str, Any]:
    """Stage 2: a toy sentiment score, +1 per positive word and -1 per negative one."""
    words: list[str] = parsed["words"]
    if not words:
        raise ValueError("nothing to score: the text has no words")
    points = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    return {"text": parsed["text"], "words": len(words), "score": points}


def to_row(scored: dict[str, Any]) -> list[Any]:
    """The link score -> store: the scored text as a row (text, words, score)."""
    return [scored["text"], scored["words"], scored["score"]]


def database_path() -> Path:
    """Where results are stored: $ZJOBS_PIPELINE_DB, or results.db in a temporary folder."""
    default = Path(tempfile.gettempdir()) / "zjobs-pipeline" / "results.db"
    return Path(os.environ.get("ZJOBS_PIPELINE_DB", default))


def open_db() -> Iterator[sqlite3.Connection]:
    """Resources of the store stage: a SQLite connection, opened when the processor
    starts and closed when it stops."""
    path = database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS results ("
                           "id INTEGER PRIMARY KEY, text TEXT, words INTEGER, score INTEGER)")
        connection.commit()
        print(f"store: opened {path}", flush=True)
        yield connection
    finally:
        connection.close()
        print(f"store: closed {path}", flush=True)


def store(row: list[Any], db: sqlite3.Connection) -> dict[str, Any]:
    """Stage 3: insert the row; answer with its id and contents."""
    text, words, points = row
    cursor = db.execute("INSERT INTO results (text, words, score) VALUES (?, ?, ?)",
                        (text, words, points))
    db.commit()
    return {"id": cursor.lastrowid, "text": text, "words": words, "score": points}
