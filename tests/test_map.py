"""Client.map and AsyncClient.map: one behaviour suite for both clients, against real
processors over ZeroMQ (batches when every processor takes them, one message per value
otherwise, a failed value failing only its own result)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from zjobs import Client, EncodeError, RemoteError, ZmqProcessor
from zjobs.aio import AsyncClient
from zjobs.testing import wait_until

KINDS = ["sync", "asyncio"]


def square(request: Any, resources: Any) -> Any:
    if not isinstance(request, int):
        raise TypeError(f"not an int: {request!r}")
    return request * request


class Recording:
    """The square job, remembering every value it ran with."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.seen: list[Any] = []
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def run(self, request: Any, resources: Any) -> Any:
        with self.lock:
            self.seen.append(request)
        if self.delay_s:
            time.sleep(self.delay_s)
        return square(request, resources)


@dataclass
class Mapped:
    results: list[Any]
    error: BaseException | None


def mapped(kind: str, processors: list[ZmqProcessor], values: Iterable[Any], *,
           take: int | None = None, **options: Any) -> Mapped:
    """Run ``client.map(values, **options)`` with a new client of ``kind``; collect at most
    ``take`` results, or until the map raises."""
    requests = [p.connect_endpoints.requests for p in processors]
    responses = [p.connect_endpoints.responses for p in processors]
    results: list[Any] = []
    if kind == "sync":
        with Client.connect(requests, responses, timeout_s=20.0) as client:
            try:
                for result in itertools.islice(client.map(values, **options), take):
                    results.append(result)
            except Exception as exc:
                return Mapped(results, exc)
            wait_until(lambda: client.pending == 0)  # stopped early: the rest is let go
        return Mapped(results, None)

    async def main() -> Mapped:
        async with AsyncClient.connect(requests, responses, timeout_s=20.0) as client:
            try:
                async for result in client.map(values, **options):
                    results.append(result)
                    if take is not None and len(results) >= take:
                        break
            except Exception as exc:
                return Mapped(results, exc)
            for _ in range(1000):
                if client.pending == 0:
                    break
                await asyncio.sleep(0.01)
            assert client.pending == 0
        return Mapped(results, None)

    return asyncio.run(main())


@pytest.fixture
def proc() -> Iterator[ZmqProcessor]:
    with ZmqProcessor(square, name="sq") as processor:
        yield processor


@pytest.mark.parametrize("kind", KINDS)
def test_results_come_in_input_order_in_batches(kind: str, proc: ZmqProcessor) -> None:
    n = 10_000
    got = mapped(kind, [proc], range(n), batch_size=300)
    assert got.error is None
    assert got.results == [i * i for i in range(n)]
    counters = proc.counters
    assert counters.batches == -(-n // 300)  # every value in a batch of at most 300
    assert counters.received == n + counters.pongs


@pytest.mark.parametrize("kind", KINDS)
def test_map_streams_an_endless_input_with_bounded_reads(kind: str, proc: ZmqProcessor) -> None:
    read = itertools.count()
    source = (next(read) for _ in itertools.count())  # endless, counting what was read
    got = mapped(kind, [proc], source, take=2_500, batch_size=100, window=400)
    assert got.error is None and got.results == [i * i for i in range(2_500)]
    assert next(read) <= 2_500 + 400 + 100  # what was handed out, in flight, one chunk


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_value_fails_only_its_own_result(kind: str, proc: ZmqProcessor) -> None:
    values = [1, 2, "x", 4, {5}, 6]
    got = mapped(kind, [proc], values, return_exceptions=True)
    assert got.error is None
    assert got.results[:2] == [1, 4] and got.results[3] == 16 and got.results[5] == 36
    remote, unencodable = got.results[2], got.results[4]
    assert isinstance(remote, RemoteError) and remote.type == "JobFailed"
    assert "not an int" in remote.message
    assert isinstance(unencodable, EncodeError)
    raised = mapped(kind, [proc], values)
    assert raised.results == [1, 4]  # everything before the failed value
    assert isinstance(raised.error, RemoteError) and raised.error.type == "JobFailed"


@pytest.mark.parametrize("kind", KINDS)
def test_processor_without_batches_gets_one_message_per_value(kind: str) -> None:
    job = Recording()
    with ZmqProcessor(job, batch_max=0) as processor:
        got = mapped(kind, [processor], range(500))
        assert got.results == [i * i for i in range(500)]
        assert processor.counters.batches == 0
        assert processor.counters.bad_requests == 0  # not even tried
    assert job.seen == list(range(500))


@pytest.mark.parametrize("kind", KINDS)
def test_group_batches_only_when_every_processor_advertised(kind: str,
                                                            proc: ZmqProcessor) -> None:
    job = Recording()
    with ZmqProcessor(job, batch_max=0) as plain:
        got = mapped(kind, [proc, plain], range(1_000))
        assert got.results == [i * i for i in range(1_000)]
        assert proc.counters.batches == plain.counters.batches == 0
        assert plain.counters.bad_requests == 0
    assert all(isinstance(value, int) for value in job.seen)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_size_is_capped_by_what_the_processor_takes(kind: str) -> None:
    with ZmqProcessor(square, batch_max=7) as processor:
        got = mapped(kind, [processor], range(70), batch_size=1000)
        assert got.results == [i * i for i in range(70)]
        assert processor.counters.batches == 10
        assert processor.counters.bad_requests == 0


def test_a_processor_joining_without_batches_never_runs_one(proc: ZmqProcessor) -> None:
    # The client is ready with a batching processor; a plain one (no heartbeats, so the
    # client does not hear of it first) joins the group. A batch round-robined to it is
    # refused, nothing runs, its values are sent again one per message, batching stops.
    job = Recording()
    with ZmqProcessor(job, batch_max=0, heartbeat_interval_s=None) as plain, \
            Client.connect(proc.connect_endpoints.requests,
                           proc.connect_endpoints.responses) as client:
        client.wait_ready()
        client.update_endpoints(
            [proc.connect_endpoints.requests, plain.connect_endpoints.requests],
            [proc.connect_endpoints.responses, plain.connect_endpoints.responses])
        sender = client.sender

        def reaches_plain() -> bool:
            # A message nobody answers (a reserved reply_to), until one reaches it.
            sender.send(None, reply_to=b"\x00probe", timeout_s=1)
            return plain.counters.dropped > 0

        wait_until(reaches_plain)
        results = list(client.map(range(6_000), batch_size=100, timeout_s=5, retries=2))
    assert results == [i * i for i in range(6_000)]
    assert plain.counters.bad_requests >= 1  # a batch reached it and was refused
    assert all(isinstance(value, int) for value in job.seen)  # never a list as one value
    assert set(job.seen) | set(range(6_000)) == set(range(6_000))


@pytest.mark.parametrize("kind", KINDS)
def test_a_retried_batch_runs_its_items_once(kind: str) -> None:
    # Each attempt times out before the batch is done: the batch is sent again with the
    # same id, and the processor answers the repeat from the original's response.
    job = Recording(delay_s=0.2)
    with ZmqProcessor(job) as processor:
        got = mapped(kind, [processor], [1, 2, 3], timeout_s=0.5, retries=5)
        assert got.error is None and got.results == [1, 4, 9]
        # The repeat (sent at 0.5 s, while the batch ran) is answered from the window.
        wait_until(lambda: processor.counters.replays >= 3)
        assert processor.counters.batches >= 2
    assert sorted(job.seen) == [1, 2, 3]


def test_map_checks_its_arguments_at_once(proc: ZmqProcessor) -> None:
    with proc.client() as client:
        for bad in ({"batch_size": 0}, {"window": 0}, {"timeout_s": 0}, {"retries": -1}):
            with pytest.raises(ValueError):
                client.map([1], **bad)
        assert client.pending == 0
