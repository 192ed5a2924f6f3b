"""Helpers for testing asyncio code that uses zjobs: the async twin of :mod:`zjobs.testing`.

Never ``await asyncio.sleep()`` and hope a subscription is up: probe it with pings using
:func:`wait_subscribed`, or let :class:`~zjobs.aio.AsyncClient` do it for you.
"""

from __future__ import annotations

import asyncio
from typing import Any

from zjobs.errors import NotReady, ReceiveTimeout
from zjobs.transport.async_receiver import AsyncZmqReceiver
from zjobs.transport.async_routed import AsyncRoutedSender
from zjobs.transport.async_sender import AsyncZmqSender
from zjobs.wire.protocol import PONG

__all__ = ["wait_subscribed"]


async def wait_subscribed(sender: AsyncZmqSender | AsyncRoutedSender,
                          receiver: AsyncZmqReceiver, *, topic: str | bytes = "",
                          timeout_s: float = 10.0) -> None:
    """Ping through ``sender`` until ``receiver`` gets a pong on ``topic``.

    After it returns, responses published on ``topic`` reach ``receiver``. Other responses
    the receiver gets meanwhile are discarded, so call it before real traffic.

    Raises:
        NotReady: no pong within ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    interval = 0.002
    sent: set[Any] = set()
    while loop.time() < deadline:
        rid = sender.ids()
        sent.add(rid)
        try:  # a PUSH socket with no processor connected waits: bound it by the deadline
            await asyncio.wait_for(sender.send(None, id=rid, reply_to=topic, ping=True),
                                   max(0.001, deadline - loop.time()))
        except TimeoutError:
            break
        until = min(deadline, loop.time() + interval)
        while (left := until - loop.time()) > 0:
            try:
                response = await receiver.receive(timeout=left)
            except ReceiveTimeout:
                break
            if response.status == PONG and response.id in sent:
                sent.discard(response.id)
                # Processors hold a pong until its subscriber is there, so the earlier
                # probes are answered too, right after the first: take them off here.
                while sent:
                    try:
                        late = await receiver.receive(timeout=0.01)
                    except ReceiveTimeout:
                        break
                    if late.status == PONG:
                        sent.discard(late.id)
                return
        interval = min(interval * 1.5, 0.1)
    raise NotReady(sender.endpoints, timeout_s, 0, 1)
