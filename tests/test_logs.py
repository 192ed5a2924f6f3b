"""``--log-format json``: one JSON object per line from serve, link and up (real processes)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobs_interop import Peer, serve_command, subprocess_env

from zjobs.cli.logs import JsonFormatter, child_json_line


def test_a_record_is_one_json_line_with_its_traceback() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("zjobs.x", logging.ERROR, __file__, 1, "failed %s", ("now",),
                                   sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert (out["level"], out["logger"], out["message"]) == ("ERROR", "zjobs.x", "failed now")
    assert out["time"].endswith("Z") and out["pid"] > 0
    assert "ValueError: bad\nthing" in out["exception"]


def test_child_lines_keep_their_object_and_name_the_child() -> None:
    assert json.loads(child_json_line("a", '{"message": "hi", "level": "INFO"}')) == {
        "message": "hi", "level": "INFO", "child": "a"}
    wrapped = json.loads(child_json_line("a", "listening requests=x"))
    assert wrapped["message"] == "listening requests=x" and wrapped["child"] == "a"


def objects(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert all(isinstance(obj, dict) for obj in parsed)
    return parsed


def test_serve_logs_json_lines(ipc_dir: Path) -> None:
    peer = Peer([*serve_command(f"ipc://{ipc_dir}/s.req", f"ipc://{ipc_dir}/s.pub", "sq"),
                 "--log-format", "json"])
    assert peer.stop() == 0, peer.diagnostics()
    logs = objects(peer.stderr_text())
    messages = [obj["message"] for obj in logs]
    assert any(m.startswith("serving jobs_interop:job as 'sq'") for m in messages), messages
    assert any(m.startswith("received SIGTERM") for m in messages)
    assert any(m.startswith("stopped 'sq'") for m in messages)
    assert {obj["pid"] for obj in logs} == {peer.pid}


def test_up_writes_every_line_as_json_children_included(tmp_path: Path, ipc_dir: Path) -> None:
    (tmp_path / "jobs_logs.py").write_text("def inc(x, r):\n    return x + 1\n")
    system = tmp_path / "system.toml"
    system.write_text(f'''[system]
name = "logged"
[processors.a]
job = "jobs_logs:inc"
requests = "ipc://{ipc_dir}/a.req"
responses = "ipc://{ipc_dir}/a.pub"
[processors.b]
job = "jobs_logs:inc"
requests = "ipc://{ipc_dir}/b.req"
responses = "ipc://{ipc_dir}/b.pub"
[[links]]
from = "a"
to = "b"
''')
    up = subprocess.Popen([sys.executable, "-m", "zjobs", "up", "--log-format", "json",
                           str(system)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=subprocess_env(), stdin=subprocess.DEVNULL)
    assert up.stdout is not None
    seen: list[str] = []
    try:
        for line in up.stdout:
            seen.append(line)
            if '"ready: logged' in line:
                break
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, "".join(seen) + rest
    logs = objects("".join(seen) + rest)
    children = {obj.get("child") for obj in logs}
    assert {"a", "b", "a->b"} <= children
    own = [obj["message"] for obj in logs if "child" not in obj]
    assert own[-1] == "stopped logged" and any(m.startswith("ready: logged") for m in own)
    # The children's own log records, as objects (not wrapped text): from their loggers.
    assert any(obj.get("child") == "a" and obj.get("logger") == "zjobs.run.daemon"
               for obj in logs)
    assert any(obj.get("child") == "a->b" and obj["message"].startswith("forwarding ")
               for obj in logs)
