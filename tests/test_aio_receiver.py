"""AsyncZmqReceiver and AsyncZmqSender: async for, timeouts, closing, skipped messages."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
import zmq

from zjobs import ClosedError, ConnectError, ReceiveTimeout, Response
from zjobs.aio import AsyncZmqProcessor, AsyncZmqReceiver, AsyncZmqSender
from zjobs.aio.testing import wait_subscribed


async def echo(request: Any, resources: Any) -> Any:
    return request


async def test_async_for_over_responses() -> None:
    async with AsyncZmqProcessor(echo) as processor:
        ep = processor.connect_endpoints
        async with AsyncZmqSender(ep.requests) as sender, \
                AsyncZmqReceiver(ep.responses, topics=("mine",)) as receiver:
            await wait_subscribed(sender, receiver, topic="mine")
            sent = [await sender.send(i, reply_to="mine") for i in range(5)]
            await sender.send("other", reply_to="theirs")  # not subscribed: never seen
            seen: list[Response] = []
            async for response in receiver:
                seen.append(response)
                if len(seen) == 5:
                    break
            assert sorted(r.value for r in seen) == list(range(5))
            assert {r.id for r in seen} == set(sent)
            assert all(r.topic == b"mine" for r in seen)
            with pytest.raises(ReceiveTimeout):
                await receiver.receive(timeout=0.1)


async def test_closing_ends_async_for_and_pending_receive() -> None:
    receiver = AsyncZmqReceiver()

    async def consume() -> list[Response]:
        return [response async for response in receiver]

    async def receive_one() -> Response:
        return await receiver.receive()

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    receiver.close()
    assert await asyncio.wait_for(consumer, 10) == []
    assert receiver.closed and "closed" in repr(receiver)
    with pytest.raises(ClosedError):
        await receive_one()
    receiver.close()  # idempotent


async def test_pending_receive_raises_closed_error_when_closed() -> None:
    receiver = AsyncZmqReceiver()
    pending = asyncio.create_task(receiver.receive())
    await asyncio.sleep(0.01)
    receiver.close()
    with pytest.raises(ClosedError):
        await asyncio.wait_for(pending, 10)


async def test_non_responses_are_skipped() -> None:
    ctx = zmq.Context.instance()
    xpub = ctx.socket(zmq.XPUB)
    try:
        port = xpub.bind_to_random_port("tcp://127.0.0.1")
        async with AsyncZmqReceiver(f"tcp://127.0.0.1:{port}") as receiver:
            assert xpub.poll(10_000), "no subscription arrived"
            assert xpub.recv() == b"\x01"  # subscribed to everything: deterministic from here
            pack = msgpack.packb
            header = {"v": 1, "id": "r1", "status": "ok", "cached": False, "processor": "p"}
            xpub.send_multipart([b"\x00heartbeat", pack(header), pack(1)])  # reserved topic
            xpub.send_multipart([b"t", b"junk"])  # not ZJP/1
            xpub.send_multipart([b"t", pack({**header, "status": "later"}), pack(None)])
            xpub.send_multipart([b"t", pack(header), pack("value")])
            response = await receiver.receive(timeout=10)
            assert response.id == "r1" and response.value == "value"
            assert receiver.skipped == 3
    finally:
        xpub.close()


async def test_sender_and_receiver_errors() -> None:
    with pytest.raises(ConnectError, match="no-such-transport"):
        AsyncZmqSender("no-such-transport://x")
    with pytest.raises(ConnectError):
        AsyncZmqReceiver("no-such-transport://x")
    sender = AsyncZmqSender()
    sender.close()
    assert sender.closed and "closed" in repr(sender)
    with pytest.raises(ClosedError):
        await sender.send(1)


async def test_subscribe_and_unsubscribe() -> None:
    async with AsyncZmqProcessor(echo) as processor:
        ep = processor.connect_endpoints
        async with AsyncZmqSender(ep.requests) as sender, \
                AsyncZmqReceiver(ep.responses, topics=()) as receiver:
            receiver.subscribe(b"a")
            await wait_subscribed(sender, receiver, topic="a")
            receiver.unsubscribe("a")
            receiver.subscribe("b")
            await wait_subscribed(sender, receiver, topic="b")
            await sender.send(1, reply_to="a")
            await sender.send(2, reply_to="b")
            response = await receiver.receive(timeout=10)
            assert response.value == 2 and receiver.topics == [b"b"]
