"""zjobs.cli.console: what send and listen write, over the in-memory transport (no sockets)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from zjobs import Client, MemoryProcessor
from zjobs.cli.console import (
    SendSummary,
    json_line,
    listen,
    response_json,
    send_each,
    send_repeatedly,
)
from zjobs.errors import CallTimeout, ReceiveTimeout, RemoteError
from zjobs.wire.protocol import OK, PONG, ErrorInfo, Response


def square(request: Any, resources: Any) -> Any:
    return request * request


@pytest.fixture
def client() -> Iterator[Client]:
    with MemoryProcessor(square) as proc, proc.client() as client:
        client.wait_ready()
        yield client


class Lines:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []


def test_send_each_writes_responses_in_input_order_and_errors_apart(client: Client) -> None:
    lines = Lines()
    ok = send_each(client, [1, "x", 3, 4], concurrency=3, timeout_s=10.0,
                   write=lines.out.append, error=lines.err.append)
    assert not ok
    parsed = [json.loads(line) for line in lines.out]
    assert [p["status"] for p in parsed] == ["ok", "error", "ok", "ok"]
    assert [p.get("value") for p in parsed] == [1, None, 9, 16]
    assert len(lines.err) == 1 and "failed at 'square': JobFailed: TypeError" in lines.err[0]


def test_send_each_writes_what_was_answered_before_the_input_fails(client: Client) -> None:
    def values() -> Iterator[int]:
        yield 2
        yield 3
        raise ValueError("bad input")

    lines = Lines()
    with pytest.raises(ValueError, match="bad input"):
        send_each(client, values(), concurrency=4, timeout_s=10.0,
                  write=lines.out.append, error=lines.err.append)
    assert [json.loads(line)["value"] for line in lines.out] == [4, 9]


def test_send_repeatedly_sums_up(client: Client) -> None:
    sent: list[None] = []
    summary = send_repeatedly(client, 7, 50, concurrency=5, on_sent=lambda: sent.append(None))
    assert summary.ok and summary.failure() is None
    assert (summary.count, len(summary.latencies_s), len(sent)) == (50, 50, 50)
    assert summary.latencies_s == sorted(summary.latencies_s)
    assert summary.line().startswith("count=50 ok=50 errors=0 timeouts=0 seconds=")


def test_send_repeatedly_counts_failures(client: Client) -> None:
    summary = send_repeatedly(client, "x", 10, concurrency=2)
    assert not summary.ok
    assert "count=10 ok=0 errors=10 timeouts=0" in summary.line()
    assert (summary.failure() or "").startswith("10 of 10 requests failed; first: JobFailed")


class SlowCallbackFuture(Future[Any]):
    """Fails once send_repeatedly has added its callback, after a slow callback of its own
    that runs first, so a waiter on the future wakes up before send_repeatedly's callback."""

    def __init__(self) -> None:
        super().__init__()
        super().add_done_callback(lambda _: time.sleep(0.2))
        self.registered = threading.Event()
        self.thread = threading.Thread(target=self._fail)
        self.thread.start()

    def add_done_callback(self, fn: Any) -> None:
        super().add_done_callback(fn)
        self.registered.set()

    def _fail(self) -> None:
        assert self.registered.wait(10.0)
        self.set_exception(RemoteError("E", "m"))


class SlowCallbacksClient:
    def __init__(self) -> None:
        self.futures: list[SlowCallbackFuture] = []

    def submit(self, value: Any) -> Future[Any]:
        self.futures.append(SlowCallbackFuture())
        return self.futures[-1]


def test_send_repeatedly_waits_for_every_outcome() -> None:
    client = SlowCallbacksClient()
    try:
        summary = send_repeatedly(client, 1, 3, concurrency=3)  # type: ignore[arg-type]
    finally:
        for future in client.futures:
            future.thread.join()
    assert len(summary.failures) == 3 and len(summary.latencies_s) == 3
    assert not summary.ok


def test_summary_line_and_failure_reason() -> None:
    timeout = CallTimeout("r1", 1.0)
    summary = SendSummary(4, 2.0, [0.001, 0.002, 0.003, 0.004],
                          [timeout, RemoteError("E", "m")], timeouts=1)
    assert summary.line() == ("count=4 ok=2 errors=1 timeouts=1 seconds=2.000 req/s=2.0 "
                              "p50_ms=2.000 p99_ms=4.000")
    assert summary.failure() == f"2 of 4 requests failed; first: {timeout}"
    other = SendSummary(1, 1.0, [], [OSError("gone")], timeouts=0)
    assert other.failure() == "1 of 1 requests failed; first: OSError('gone')"
    assert "p50_ms=nan p99_ms=nan" in other.line()


class FakeReceiver:
    """An McReceive that hands out a fixed list, then times out forever."""

    def __init__(self, responses: list[Response]) -> None:
        self.responses = responses

    def receive(self, timeout: float | None = None) -> Response:
        if not self.responses:
            raise ReceiveTimeout(timeout)
        return self.responses.pop(0)

    def subscribe(self, topic: str | bytes) -> None:
        pass

    def close(self) -> None:
        pass


def test_listen_writes_count_responses_skipping_pongs_unless_asked() -> None:
    stream = [Response("p", PONG), Response("a", OK, value=1), Response("b", OK, value=2)]
    out: list[str] = []
    listen(FakeReceiver(list(stream)), out.append, count=2)
    assert [json.loads(line)["id"] for line in out] == ["a", "b"]
    out.clear()
    listen(FakeReceiver(list(stream)), out.append, count=2, pongs=True)
    assert [json.loads(line)["id"] for line in out] == ["p", "a"]


def test_response_json_and_json_line() -> None:
    error = Response(id="a", status="error", error=ErrorInfo("BadRequest", "no", {"x": 1}))
    assert response_json(error)["error"] == {"x": 1, "type": "BadRequest", "message": "no"}
    assert json_line({"s": "é"}) == '{"s": "é"}'
    with pytest.raises(ValueError):
        json_line(float("nan"))
