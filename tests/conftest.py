"""Shared fixtures: every test must leave no zjobs thread and no open socket behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from drivers import Driven


def _zjobs_threads() -> set[threading.Thread]:
    # zjobs' own threads are named zjobs-*; a ZAP authenticator is pyzmq's thread class.
    return {t for t in threading.enumerate() if t.is_alive() and (
        t.name.startswith("zjobs-") or type(t).__name__ == "AuthenticationThread")}


def _open_sockets(ctx: zmq.Context[zmq.Socket[bytes]]) -> set[int]:
    return {id(s) for s in list(ctx._sockets) if not s.closed}  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a zjobs thread running or a socket of the shared context open."""
    ctx = zmq.Context.instance()
    threads_before = _zjobs_threads()
    sockets_before = _open_sockets(ctx)
    yield
    deadline = time.monotonic() + 5.0
    while True:
        threads = _zjobs_threads() - threads_before
        sockets = _open_sockets(ctx) - sockets_before
        if not threads and not sockets:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    names = sorted(t.name for t in threads)
    pytest.fail(f"leaked {len(threads)} thread(s) {names} and {len(sockets)} socket(s)")


@pytest.fixture
def ipc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short temporary folder for ipc:// endpoints (socket paths are limited to ~100 bytes)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="zj-", dir="/tmp"))
    yield path  # type: ignore[misc]
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where a test keeps what a person should look at afterwards (screenshots): the folder
    named by ZJOBS_ARTIFACTS (CI sets it), else the test's temporary folder."""
    import os

    folder = os.environ.get("ZJOBS_ARTIFACTS")
    path = Path(folder) if folder else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> Iterator[Callable[..., Driven]]:
    """Make clients of both kinds (the test runs once with each), shut down at the end."""
    made: list[Driven] = []

    def make(requests: Any, responses: Any, **options: Any) -> Driven:
        client = Driven(request.param, requests, responses, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown()
