"""How the daemons log: text lines for people, or one JSON object per line for machines
(``--log-format json`` on ``serve``, ``link`` and ``up``).

A JSON line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``message`` and ``pid``, plus ``exception`` (the traceback) when there is one. Under
``zjobs up`` every line is an object: the supervisor's own (``logger`` ``"zjobs.up"``), and
each child's, with ``"child"`` added (a child line that is not JSON, such as the
``listening ...`` line, becomes the ``message``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["FORMATS", "JsonFormatter", "child_json_line", "configure_logging", "json_line"]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS: Final = ("text", "json")
"""The values of ``--log-format``."""


def _now_iso(created: float) -> str:
    return (datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object (no newlines inside: tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _now_iso(record.created), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage(),
                               "pid": record.process}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send logs to stderr at ``level``, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def json_line(message: str, *, logger: str = "zjobs.up", level: str = "INFO",
              **fields: Any) -> str:
    """One JSON log line for a message that is not a log record (the supervisor's own)."""
    out = {"time": _now_iso(time.time()), "level": level, "logger": logger,
           "message": message, "pid": os.getpid(), **fields}
    return json.dumps(out, ensure_ascii=False, default=str)


def child_json_line(child: str, line: str) -> str:
    """A child's output line as JSON with ``"child"`` added: its own JSON object when it
    wrote one, else a record whose message is the line."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return json_line(line, logger=f"zjobs.up.{child}", child=child)
    record["child"] = child
    return json.dumps(record, ensure_ascii=False, default=str)
