"""``zjobs top`` as a person sees it: run in tmux next to a real daemon, read with capture-pane
while the load changes, quit with q. The screen with load is kept as an SVG artifact."""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_interop import Peer, serve_command, skip_or_fail, subprocess_env, zjobs_command
from rich.console import Console
from rich.text import Text

from zjobs import Client
from zjobs.testing import wait_until

pytestmark = pytest.mark.timeout(120)


class Tmux:
    """A private tmux server (its own socket), with one session running a command."""

    def __init__(self, socket: Path, command: str, width: int = 200, height: int = 12) -> None:
        self.base = ["tmux", "-S", str(socket)]
        subprocess.run([*self.base, "new-session", "-d", "-s", "top", "-x", str(width),
                        "-y", str(height), command], check=True, env=subprocess_env())

    def screen(self, escapes: bool = False) -> str:
        flags = ["-e"] if escapes else []
        out = subprocess.run([*self.base, "capture-pane", "-p", *flags, "-t", "top"],
                             capture_output=True, text=True, check=False)
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "top", *keys], check=True)

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def tmux_socket(ipc_dir: Path) -> Iterator[Path]:
    if shutil.which("tmux") is None:
        skip_or_fail("tmux not found, zjobs top cannot be tested (apt-get install tmux)")
    yield ipc_dir / "tmux.sock"


def rate_of(screen: str, name: str) -> float | None:
    """The REQ/S column of the row named ``name`` (None while it is not shown)."""
    for line in screen.splitlines():
        cells = line.split()
        if cells and cells[0] == name and len(cells) >= 5:
            try:
                return float(cells[4])
            except ValueError:
                return None
    return None


def test_top_shows_processors_live_and_quits_on_q(ipc_dir: Path, tmux_socket: Path,
                                                  artifacts: Path) -> None:
    requests, responses = f"ipc://{ipc_dir}/sq.req", f"ipc://{ipc_dir}/sq.pub"
    nobody = f"ipc://{ipc_dir}/nobody.pub"
    daemon = Peer([*serve_command(requests, responses, "squarer"),
                   "--heartbeat-interval", "0.2"])
    exit_file = ipc_dir / "top.exit"
    top = " ".join([*zjobs_command(), "top", "--responses", responses, "--responses", nobody,
                    "--refresh", "0.2"])
    tmux = Tmux(tmux_socket, f"{top}; echo $? > {exit_file}")
    stop_load = threading.Event()
    try:
        wait_until(lambda: "squarer" in tmux.screen() and "missing" in tmux.screen(), 30)
        screen = tmux.screen()
        assert "running" in screen and nobody in screen and "THROUGHPUT" in screen
        wait_until(lambda: rate_of(tmux.screen(), "squarer") == 0.0, 30)  # idle

        seen: set[float] = set()
        with Client.connect(requests, responses) as client:
            def load() -> None:
                while not stop_load.is_set():
                    client.call(3)

            worker = threading.Thread(target=load, name="test-top-load")
            worker.start()
            try:
                def changing() -> bool:
                    rate = rate_of(tmux.screen(), "squarer")
                    if rate:
                        seen.add(rate)
                    return len(seen) >= 2  # numbers that move with the load

                wait_until(changing, 30, interval_s=0.05)
                keep = tmux.screen(escapes=True)
            finally:
                stop_load.set()
                worker.join(30)
        wait_until(lambda: rate_of(tmux.screen(), "squarer") == 0.0, 30)  # idle again
        assert all(rate > 0 for rate in seen)

        tmux.keys("q")
        wait_until(lambda: exit_file.exists() and exit_file.read_text().strip() != "", 30)
        assert exit_file.read_text().strip() == "0"
    finally:
        stop_load.set()
        tmux.close()
        assert daemon.stop() == 0, daemon.diagnostics()
    _save_svg(keep, artifacts / "top.svg")


def _save_svg(ansi: str, path: Path) -> None:
    """The terminal screen (with its colours) as an SVG image, through rich's export."""
    lines = ansi.rstrip("\n").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    console = Console(record=True, width=max(len(Text.from_ansi(line)) for line in lines),
                      file=io.StringIO(), color_system="truecolor")
    console.print(Text.from_ansi("\n".join(lines)))
    console.save_svg(str(path), title="zjobs top")
