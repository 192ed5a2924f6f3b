"""Prometheus metrics: the processors' /metrics page, and a real Prometheus server scraping a
``zjobs serve --metrics`` daemon, read back through its HTTP query API."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs_interop import Peer, serve_command, skip_or_fail, subprocess_env
from prometheus_client.parser import text_string_to_metric_families

from zjobs import BindError, Client, RemoteError, ServeSettings, ZmqProcessor
from zjobs.aio import AsyncZmqProcessor
from zjobs.testing import wait_until

pytestmark = pytest.mark.timeout(120)


def job(request: Any, resources: Any) -> Any:
    if request == "fail":
        raise ValueError("asked to fail")
    return request


async def async_job(request: Any, resources: Any) -> Any:
    return job(request, resources)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by name and labels."""
    with urllib.request.urlopen(url, timeout=10) as page:
        text = page.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_processor_serves_its_counters_histogram_and_in_flight(kind: str) -> None:
    proc = (ZmqProcessor(job, name="echo", metrics="127.0.0.1:0") if kind == "sync"
            else AsyncZmqProcessor(async_job, name="echo", metrics="127.0.0.1:0"))
    assert proc.metrics is not None and re.fullmatch(r"127\.0\.0\.1:\d+", proc.metrics.address)
    with proc, proc.client() as client:
        for value in range(5):
            assert client.call(value) == value
        with pytest.raises(RemoteError):
            client.call("fail")
        samples = scrape(proc.metrics.url)
    p = ("processor", "echo")
    assert samples["zjobs_requests_total", (p, ("status", "ok"))] == 5
    assert samples["zjobs_requests_total", (p, ("status", "failed"))] == 1
    assert samples["zjobs_requests_total", (p, ("status", "pong"))] >= 1
    assert samples["zjobs_job_duration_seconds_count", (p,)] == 6
    assert samples["zjobs_job_duration_seconds_bucket", (("le", "+Inf"), p)] == 6
    assert samples["zjobs_job_duration_seconds_bucket", (("le", "10"), p)] == 6
    assert 0 < samples["zjobs_job_duration_seconds_sum", (p,)] < 6
    assert samples["zjobs_in_flight", (p,)] == 0
    assert samples["zjobs_cache_hits_total", (p,)] == 0
    with pytest.raises(OSError):  # stopped: the port is released
        scrape(proc.metrics.url)


def test_a_taken_metrics_port_is_a_bind_error_naming_it() -> None:
    with ZmqProcessor(job, metrics="127.0.0.1:0") as first:
        assert first.metrics is not None
        with pytest.raises(BindError, match=re.escape(first.metrics.address)):
            ZmqProcessor(job, metrics=first.metrics.address)
    with pytest.raises(ValueError, match="HOST:PORT"):
        ZmqProcessor(job, metrics="9100")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """A Prometheus server of its own (temporary config and storage), scraping ``target``
    every second, on a free loopback port; stopped by its PID."""

    def __init__(self, target: str, folder: Path) -> None:
        config = folder / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          "scrape_configs:\n  - job_name: zjobs\n    static_configs:\n"
                          f"      - targets: ['{target}']\n")
        self._log = tempfile.TemporaryFile()
        for _ in range(3):  # the free port may be taken between looking and binding
            self.address = f"127.0.0.1:{_free_port()}"
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={folder / 'data'}",
                 f"--web.listen-address={self.address}"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
            try:
                wait_until(self._ready, 60, interval_s=0.1)
                return
            except TimeoutError:
                self.stop()
        raise AssertionError(f"prometheus did not start: {self.log()}")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise TimeoutError("exited")
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as page:
                return bool(page.status == 200)
        except OSError:
            return False

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = (f"http://{self.address}/api/v1/query?"
               + urllib.parse.urlencode({"query": expression}))
        with urllib.request.urlopen(url, timeout=10) as page:
            answer = json.loads(page.read())
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def value(self, expression: str) -> float | None:
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)

    def close(self) -> None:
        self.stop()
        self._log.close()


@pytest.fixture
def prometheus_binary() -> None:
    if shutil.which("prometheus") is None:
        skip_or_fail("prometheus not found, metrics cannot be checked against it "
                     "(apt-get install prometheus)")


@pytest.fixture
def metrics_daemon() -> Iterator[tuple[Peer, str]]:
    daemon = Peer([*serve_command("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "scraped"),
                   "--metrics", "127.0.0.1:0"])
    try:
        found = re.search(r"metrics for 'scraped' at http://(\S+)/metrics", daemon.stderr_text())
        assert found, daemon.diagnostics()
        yield daemon, found.group(1)
    finally:
        assert daemon.stop() == 0, daemon.diagnostics()


def test_prometheus_scrapes_a_daemon(prometheus_binary: None, metrics_daemon: tuple[Peer, str],
                                     tmp_path: Path) -> None:
    daemon, target = metrics_daemon

    with Client.connect(daemon.requests, daemon.responses) as client:
        for value in range(7):
            assert client.call(value) == value * value
        for _ in range(2):
            with pytest.raises(RemoteError):
                client.call({"fail": "no"})
    server = Prometheus(target, tmp_path)
    try:
        ok = 'zjobs_requests_total{processor="scraped",status="ok"}'
        wait_until(lambda: server.value(ok) == 7, 60, interval_s=0.2)
        assert server.value('zjobs_requests_total{status="failed"}') == 2
        assert server.value('zjobs_job_duration_seconds_count{processor="scraped"}') == 9
        assert server.value('zjobs_in_flight{processor="scraped"}') == 0
        assert server.value('up{job="zjobs"}') == 1
        quantile = server.value("histogram_quantile(0.5, zjobs_job_duration_seconds_bucket)")
        assert quantile is not None and 0 < quantile < 1
    except BaseException:
        print(server.log())
        raise
    finally:
        server.close()


def test_the_system_file_gives_each_replica_its_metrics_address(tmp_path: Path) -> None:
    from zjobs.run.system import SystemFileError, load_system, processor_children

    system = tmp_path / "system.toml"
    system.write_text("""
[processors.sq]
job = "jobs:square"
replicas = 2
requests = "tcp://127.0.0.1:710{i}"
responses = "tcp://127.0.0.1:711{i}"
metrics = "127.0.0.1:712{i}"
""")
    loaded = load_system(system, check_imports=False)
    assert loaded.processors["sq"].metrics == ("127.0.0.1:7120", "127.0.0.1:7121")
    children = processor_children(loaded)  # each is handed its ServeSettings as JSON
    settings = [ServeSettings.from_dict(json.loads(child.argv[4])) for child in children]
    assert [s.metrics for s in settings] == ["127.0.0.1:7120", "127.0.0.1:7121"]

    system.write_text("""
[processors.sq]
job = "jobs:square"
requests = "tcp://127.0.0.1:7100"
responses = "tcp://127.0.0.1:7110"
metrics = "127.0.0.1:0"
""")
    with pytest.raises(SystemFileError, match=r"system.toml:6: .*address '127.0.0.1:0' port 0"):
        load_system(system, check_imports=False)


def test_serve_metrics_without_the_extra_is_a_one_line_usage_error() -> None:
    # As if prometheus_client were not installed: a None entry makes its import fail.
    code = ("import sys; sys.modules['prometheus_client'] = None; "
            "from zjobs.cli import main; main()")
    done = subprocess.run(
        [sys.executable, "-c", code, "serve", "jobs_interop:job", "--requests",
         "tcp://127.0.0.1:*", "--responses", "tcp://127.0.0.1:*", "--metrics", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(),
        stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert "pip install 'zjobs[metrics]'" in done.stderr and "Traceback" not in done.stderr
