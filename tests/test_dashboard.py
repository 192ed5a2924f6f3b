"""``zjobs dashboard`` in a real browser: headless Chromium, driven over the DevTools protocol
(``--remote-debugging-pipe``, no extra library), loads the page once and watches names and
numbers change while the load on two daemons changes. The screenshot is kept as an artifact."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs_interop import Peer, serve_command, skip_or_fail, zjobs_command

from zjobs import Client, RemoteError
from zjobs.testing import wait_until

pytestmark = pytest.mark.timeout(120)


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    skip_or_fail("chromium not found, the dashboard cannot be tested in a browser "
                 "(apt-get install chromium)")
    raise AssertionError("unreachable")


class Browser:
    """Headless Chromium, spoken to over the DevTools protocol on a pipe: commands go in
    on its fd 3, answers and events come out on its fd 4, one JSON text per NUL byte."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()
        # The child's ends move to fds >= 10, so that bash can put them on 3 and 4 without
        # clobbering one with the other; then bash becomes chromium (same PID).
        child_in = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
        os.close(to_child)
        os.close(from_child)
        redirect = (f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} '
                    f'{child_in}<&- {child_out}>&-')
        try:
            self.proc = subprocess.Popen(
                ["bash", "-c", redirect, binary, "--headless", "--no-sandbox",
                 "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}",
                 "--window-size=1300,900", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=(child_in, child_out))
        finally:
            os.close(child_in)
            os.close(child_out)
        self._buffer = b""
        self._next_id = 0
        self.session = ""
        try:
            targets = self.command("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self.session = self.command("Target.attachToTarget", targetId=page["targetId"],
                                        flatten=True)["sessionId"]
        except BaseException:
            self.close()
            raise

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 16)
                if not chunk:
                    raise AssertionError(f"chromium closed the pipe during {method}")
                self._buffer += chunk
            text, _, self._buffer = self._buffer.partition(b"\0")
            answer = json.loads(text)
            if answer.get("id") == self._next_id:  # events (no id) are not needed here
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """The page as a PNG, cut below its content."""
        height = self.evaluate("document.querySelector('main').getBoundingClientRect().bottom")
        clip = {"x": 0, "y": 0, "width": 1300, "height": min(900, int(height) + 8), "scale": 1}
        data = self.command("Page.captureScreenshot", format="png", clip=clip)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.session = ""
                    self.command("Browser.close")
                except (AssertionError, OSError):
                    pass
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(30)
        finally:
            os.close(self._out)
            os.close(self._in)


NONE = "\u2013"  # what the page shows for a number not known (an en dash)

CARD_NUMBERS = """(() => {
  const status = document.getElementById("status");
  if (!status) return {updates: 0, cards: {}};  // the page is not there yet
  const out = {};
  for (const card of document.querySelectorAll("section.card")) {
    out[card.dataset.name] = {
      state: card.dataset.state, rate: card.querySelector(".rate").textContent,
      errors: card.querySelector(".errors").textContent,
      points: card.querySelector("polyline").getAttribute("data-values")};
  }
  return {updates: Number(status.dataset.updates), cards: out};
})()"""


@pytest.fixture
def daemons(ipc_dir: Path) -> Iterator[list[Peer]]:
    peers: list[Peer] = []
    try:
        for name in ("resize", "thumbnail"):
            peers.append(Peer([*serve_command(f"ipc://{ipc_dir}/{name}.req",
                                              f"ipc://{ipc_dir}/{name}.pub", name),
                               "--heartbeat-interval", "0.25"]))
        yield peers
    finally:
        for peer in peers:
            assert peer.stop() == 0, peer.diagnostics()


@pytest.fixture
def dashboard(daemons: list[Peer]) -> Iterator[str]:
    args = [arg for peer in daemons for arg in ("--responses", peer.responses)]
    server = Peer([*zjobs_command(), "dashboard", *args, "--http", "127.0.0.1:0"],
                  wait_listening=False)
    try:
        wait_until(lambda: bool(server.lines) or server.proc.poll() is not None, 60)
        found = re.fullmatch(r"dashboard (http://\S+/)", server.lines[0] if server.lines else "")
        assert found, server.diagnostics()
        yield found.group(1)
    finally:
        assert server.stop() == 0, server.diagnostics()


def test_the_state_api_lists_every_processor(dashboard: str, daemons: list[Peer]) -> None:
    def state() -> dict[str, Any]:
        with urllib.request.urlopen(dashboard + "api/state", timeout=10) as page:
            return dict(json.loads(page.read()))

    wait_until(lambda: len([p for p in state()["processors"] if p["state"] == "running"]) == 2,
               30)
    names = sorted(p["name"] for p in state()["processors"])
    assert names == ["resize", "thumbnail"]
    with urllib.request.urlopen(dashboard, timeout=10) as page:
        html = page.read().decode()
    assert "<title>zjobs dashboard</title>" in html and "http" not in html.split("<body>")[1]


def test_the_page_shows_processors_live_in_chromium(dashboard: str, daemons: list[Peer],
                                                   tmp_path: Path, artifacts: Path) -> None:
    browser = Browser(chromium_binary(), tmp_path / "profile")
    stop = threading.Event()
    try:
        browser.command("Page.navigate", url=dashboard)
        cards = lambda: browser.evaluate(CARD_NUMBERS)  # noqa: E731
        wait_until(lambda: {n: c["state"] for n, c in cards()["cards"].items()}
                   == {"resize": "running", "thumbnail": "running"}, 30, interval_s=0.1)
        first_updates = cards()["updates"]

        resize, thumbnail = daemons
        with Client.connect(resize.requests, resize.responses) as one, \
                Client.connect(thumbnail.requests, thumbnail.responses) as other:
            def load() -> None:
                count = 0
                while not stop.is_set():
                    one.call(count)
                    if count % 3 == 0:
                        other.call(count)
                    if count % 50 == 0:
                        with pytest.raises(RemoteError):
                            other.call({"fail": "bad image"})
                    count += 1

            worker = threading.Thread(target=load, name="test-dashboard-load")
            worker.start()
            rates: set[str] = set()
            try:
                def changing() -> bool:
                    now = cards()["cards"]
                    rate = now["resize"]["rate"]
                    if rate not in (NONE, "0.0"):
                        rates.add(rate)
                    return len(rates) >= 2 and now["thumbnail"]["errors"] not in ("0", NONE)

                wait_until(changing, 60, interval_s=0.1)
                wait_until(lambda: len(cards()["cards"]["resize"]["points"].split()) >= 6, 30)
                browser.screenshot(artifacts / "dashboard.png")
            finally:
                stop.set()
                worker.join(30)
        shown = cards()
        assert shown["updates"] > first_updates + 1  # the same page, updated in place
        assert int(shown["cards"]["thumbnail"]["errors"]) >= 1
        assert (artifacts / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        stop.set()
        browser.close()
