"""AsyncZmqReceiver and AsyncZmqSender: async for, timeouts, closing, skipped messages."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from zjobs import ClosedError, ConnectError, ReceiveTimeout, Response, SendTimeout
from zjobs.aio import (
    AsyncMcReceive,
    AsyncMpSend,
    AsyncZmqProcessor,
    AsyncZmqReceiver,
    AsyncZmqSender,
)
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


async def test_a_deadline_that_just_passed_returns_at_once() -> None:
    async with AsyncZmqReceiver("tcp://127.0.0.1:1") as receiver:
        loop = asyncio.get_running_loop()
        assert await receiver.receive_frames(loop.time() - 0.0015) is None


async def test_a_terminated_context_closes_receiver_and_sender() -> None:
    # pyzmq does not wake an asyncio receive already waiting when the context terminates
    # (its own callback gets the error), so these look without waiting, until ETERM shows.
    ctx: zmq.Context[Any] = zmq.asyncio.Context()
    receiver = AsyncZmqReceiver("tcp://127.0.0.1:1", context=ctx)
    sender = AsyncZmqSender("tcp://127.0.0.1:1", context=ctx, immediate=True)
    term = threading.Thread(target=ctx.term)  # blocks until every socket is closed
    term.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        with pytest.raises(ClosedError, match="context was terminated"):
            while loop.time() < deadline:
                with contextlib.suppress(ReceiveTimeout):
                    await receiver.receive(timeout=0)
                await asyncio.sleep(0.01)
        with pytest.raises(ClosedError):
            await sender.send("x", timeout_s=0)
        assert receiver.closed and sender.closed
        term.join(10)
        assert not term.is_alive()
    finally:
        receiver.close()
        sender.close()
        term.join(10)


async def test_sender_timeout_per_send_and_the_declared_protocols() -> None:
    async with AsyncZmqSender("tcp://127.0.0.1:1", immediate=True,
                              send_timeout_s=30) as sender, AsyncZmqReceiver() as receiver:
        assert isinstance(sender, AsyncMpSend) and isinstance(receiver, AsyncMcReceive)
        for timeout_s in (0, 0.1):  # nothing is connected: it cannot be queued
            with pytest.raises(SendTimeout) as info:
                await sender.send("x", timeout_s=timeout_s)
            assert info.value.timeout_s == timeout_s
        sender.disconnect("tcp://127.0.0.1:1")
        assert sender.endpoints == []


async def test_receiver_counts_gaps_like_the_sync_one() -> None:
    # inproc with tiny high-water marks (no kernel buffers): the publisher drops what the
    # receiver, not reading while the requests go out, cannot hold.
    ctx = zmq.asyncio.Context.instance()
    async with AsyncZmqProcessor(echo, requests="inproc://agaps-req",
                                 responses="inproc://agaps-rep", context=ctx, sndhwm=5,
                                 heartbeat_interval_s=None):
        async with AsyncZmqSender("inproc://agaps-req", context=ctx) as sender, \
                AsyncZmqReceiver("inproc://agaps-rep", rcvhwm=5, context=ctx) as receiver:
            await wait_subscribed(sender, receiver)
            while True:  # drain the handshake's pongs
                try:
                    await receiver.receive(timeout=0.2)
                except ReceiveTimeout:
                    break
            for i in range(300):
                await sender.send(i, reply_to="x")
            got = 0
            while got < 300:
                try:
                    got += (await receiver.receive(timeout=1.0)).status == "ok"
                except ReceiveTimeout:
                    break
            await sender.send("last", reply_to="x")  # a gap shows once a later one arrives
            while (await receiver.receive(timeout=10)).value != "last":
                pass
            assert 0 < got < 300
            assert receiver.gaps == 300 - got
