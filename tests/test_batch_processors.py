"""The batch extension served by ZmqProcessor and AsyncZmqProcessor, from a raw pyzmq peer.

The peer builds its frames with its own msgpack calls, never zjobs' codec, so the
processors are checked against docs/PROTOCOL.md ("Extension: batches"), not themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from zjobs import ZmqProcessor
from zjobs.aio import AsyncZmqProcessor
from zjobs.processor.sync import BaseZmqProcessor
from zjobs.testing import wait_until

WAIT_S = 20.0
TOPIC = b"0123456789abcdef0123456789abcdef"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class Peer:
    """A PUSH and a SUB socket on one processor, with hand-made frames."""

    def __init__(self, proc: BaseZmqProcessor) -> None:
        ctx = zmq.Context.instance()
        self.push, self.sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        self.push.linger = self.sub.linger = 0
        self.sub.subscribe(TOPIC)
        self.sub.connect(proc.connect_endpoints.responses)
        self.push.connect(proc.connect_endpoints.requests)
        self.pong = self._handshake()

    def close(self) -> None:
        self.push.close()
        self.sub.close()

    def _handshake(self) -> dict[str, Any]:
        for n in range(2000):
            self.push.send_multipart([pack({"v": 1, "id": f"hs{n}", "reply_to": TOPIC,
                                            "ping": True}), b"\xc0"])
            if self.sub.poll(10):
                pong: dict[str, Any] = unpack(self.sub.recv_multipart()[1])
                return pong
        raise AssertionError("no pong")

    def ask(self, *frames: bytes, rid: str = "b1") -> tuple[dict[str, Any], Any]:
        """Send ``frames``; the header and decoded body of the answer with id ``rid``."""
        self.push.send_multipart(list(frames))
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.sub.poll(100):
                got = self.sub.recv_multipart()
                header = unpack(got[1])
                if header["id"] == rid:
                    assert got[0] == TOPIC and len(got) == 3
                    return header, unpack(got[2])
        raise AssertionError(f"no answer for {rid!r}")


def batch(items: Any, **fields: Any) -> list[bytes]:
    return [pack({"v": 1, "id": "b1", "reply_to": TOPIC, **fields}), pack(items), b"batch"]


def square(request: Any, resources: Any) -> Any:
    if not isinstance(request, int):
        raise TypeError("not an int")
    return request * request


async def async_square(request: Any, resources: Any) -> Any:
    return square(request, resources)


@pytest.fixture(params=["sync", "asyncio"])
def proc(request: pytest.FixtureRequest) -> Iterator[BaseZmqProcessor]:
    processor: ZmqProcessor | AsyncZmqProcessor
    if request.param == "sync":
        processor = ZmqProcessor(square, name="sq", batch_max=100)
    else:
        processor = AsyncZmqProcessor(async_square, name="sq", batch_max=100)
    with processor:
        yield processor


@pytest.fixture
def peer(proc: BaseZmqProcessor) -> Iterator[Peer]:
    raw = Peer(proc)
    try:
        yield raw
    finally:
        raw.close()


def test_pong_advertises_batches(peer: Peer) -> None:
    assert (peer.pong["ext"], peer.pong["batch_max"]) == (["batch"], 100)


def test_batch_frame_is_answered_item_by_item(peer: Peer, proc: BaseZmqProcessor) -> None:
    before = proc.counters
    header, body = peer.ask(*batch([3, "x", -4], meta={"trace": [1]}))
    assert (header["status"], header["cached"], header["meta"]) == ("batch", False, {"trace": [1]})
    assert body == [9, None, 16]
    [[index, error]] = header["errors"]
    assert (index, error["type"], error["message"]) == (1, "JobFailed", "TypeError: not an int")
    after = proc.counters
    assert (after.received - before.received, after.ok - before.ok,
            after.failed - before.failed, after.batches - before.batches) == (3, 2, 1, 1)


def test_refused_batches_answer_bad_request_and_the_processor_goes_on(peer: Peer) -> None:
    for frames in (batch(list(range(101))), batch([]), batch({"not": "a list"}),
                   batch([1], ping=True), [*batch([1])[:2], b"batch!"]):
        header, body = peer.ask(*frames)
        assert (header["status"], header["error"]["type"], body) == ("error", "BadRequest", None)
    header, body = peer.ask(pack({"v": 1, "id": "n", "reply_to": TOPIC}), pack(5), rid="n")
    assert (header["status"], body) == ("ok", 25)


def test_a_batch_of_the_largest_size_is_answered(peer: Peer) -> None:
    header, body = peer.ask(*batch(list(range(100))))
    assert "errors" not in header
    assert body == [i * i for i in range(100)]


@pytest.mark.parametrize("kind", ["sync", "asyncio"])
def test_batches_turned_off_are_refused_and_not_advertised(kind: str) -> None:
    processor: ZmqProcessor | AsyncZmqProcessor
    if kind == "sync":
        processor = ZmqProcessor(square, batch_max=0)
    else:
        processor = AsyncZmqProcessor(async_square, batch_max=0)
    with processor:
        raw = Peer(processor)
        try:
            assert "ext" not in raw.pong
            header, _ = raw.ask(*batch([1, 2]))
            assert header["error"]["type"] == "BadRequest"
            assert processor.counters.ok == 0
        finally:
            raw.close()


class Gathering:
    """An async job that records how many of its runs overlap."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    async def run(self, request: Any, resources: Any) -> Any:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.005)
        finally:
            self.running -= 1
        return request


def test_asyncio_runs_items_concurrently_within_its_limit() -> None:
    job = Gathering()
    with AsyncZmqProcessor(job, concurrency=5) as processor:
        raw = Peer(processor)
        try:
            header, body = raw.ask(*batch(list(range(40))))
        finally:
            raw.close()
        assert body == list(range(40)) and "errors" not in header
        # Every slot, and no more: the reader holds none while it waits for a message.
        assert job.most == processor.concurrency
        wait_until(lambda: processor.in_flight == 0)  # the task ends just after publishing


def test_asyncio_batch_shares_slots_with_requests() -> None:
    # Two batches and requests at once with two slots: all answered, none stuck.
    job = Gathering()
    with AsyncZmqProcessor(job, concurrency=2) as processor:
        raw = Peer(processor)
        try:
            raw.push.send_multipart([pack({"v": 1, "id": "b2", "reply_to": TOPIC}),
                                     pack(list(range(10))), b"batch"])
            for n in range(3):
                raw.push.send_multipart([pack({"v": 1, "id": f"r{n}", "reply_to": TOPIC}),
                                         pack(n)])
            _, body = raw.ask(*batch(list(range(10))))
            assert body == list(range(10))
        finally:
            raw.close()
        assert job.most <= 2
        counters = processor.counters
        assert counters.batches == 2
    assert counters.ok == 23
