"""zjobs.transport.routed and async_routed: one PUSH socket per request endpoint, checked
against raw PULL sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from zjobs import SendTimeout
from zjobs.errors import ClosedError
from zjobs.transport.async_routed import AsyncRoutedSender
from zjobs.transport.routed import RoutedSender

WAIT_MS = 10_000


@pytest.fixture
def pulls() -> Iterator[list[tuple[zmq.Socket[bytes], str]]]:
    socks = []
    for _ in range(2):
        sock = zmq.Context.instance().socket(zmq.PULL)
        sock.linger = 0
        sock.bind("tcp://127.0.0.1:*")
        socks.append((sock, sock.getsockopt(zmq.LAST_ENDPOINT).decode()))  # type: ignore[union-attr]
    try:
        yield socks
    finally:
        for sock, _ in socks:
            sock.close()


def nobody(tmp_path: Path) -> str:
    # An ipc path nothing binds: no connection is ever up there (a freed tcp port could be
    # taken by another process meanwhile).
    return f"ipc://{tmp_path}/nobody"


def received(sock: zmq.Socket[bytes], at_most_ms: int = 200) -> int:
    count = 0
    while sock.poll(at_most_ms if count == 0 else 50):
        sock.recv_multipart()
        count += 1
    return count


def test_send_via_goes_where_it_is_told(pulls: list[tuple[zmq.Socket[bytes], str]]) -> None:
    (a, ea), (b, eb) = pulls
    with RoutedSender([ea, eb], immediate=True) as sender:
        for n in range(10):
            assert sender.send_via((eb,), n, id=f"r{n}", timeout_s=5) == eb
        assert received(b, WAIT_MS) == 10
        assert received(a) == 0


def test_an_endpoint_without_a_connection_is_passed_over(
        pulls: list[tuple[zmq.Socket[bytes], str]], tmp_path: Path) -> None:
    (a, ea), _ = pulls
    dead = nobody(tmp_path)
    with RoutedSender([dead, ea], immediate=True) as sender:
        used = {sender.send_via((dead, ea), n, id=f"r{n}", timeout_s=5) for n in range(20)}
        assert used == {ea}
        assert received(a, WAIT_MS) == 20
        with pytest.raises(SendTimeout):
            sender.send_via((dead,), 0, id="x", timeout_s=0.1)  # only the dead one: no room
        with pytest.raises(SendTimeout):
            sender.send_via((), 0, id="y", timeout_s=1)  # nowhere to go: at once


def test_reset_connects_afresh(pulls: list[tuple[zmq.Socket[bytes], str]]) -> None:
    (a, ea), _ = pulls
    with RoutedSender([ea], immediate=True) as sender:
        sender.send_via((ea,), 1, id="before", timeout_s=5)
        assert received(a, WAIT_MS) == 1
        sender.reset(ea)
        sender.send_via((ea,), 2, id="after", timeout_s=5)
        assert received(a, WAIT_MS) == 1
        assert sender.endpoints == [ea]
    with pytest.raises(ClosedError):
        sender.send_via((ea,), 3, id="closed", timeout_s=1)


def test_disconnect_and_the_mpsend_interface(
        pulls: list[tuple[zmq.Socket[bytes], str]]) -> None:
    (a, ea), (b, eb) = pulls
    with RoutedSender([ea, eb], immediate=True) as sender:
        for endpoint in (ea, eb):  # both connections up (a send waits for its own)
            sender.send_via((endpoint,), 0, id="up", timeout_s=5)
        assert received(a, WAIT_MS) == 1 and received(b, WAIT_MS) == 1
        for n in range(10):
            sender.send(n, timeout_s=5)  # in turn, as a plain PUSH would
        assert received(a, WAIT_MS) == 5 and received(b, WAIT_MS) == 5
        sender.disconnect(ea)
        for n in range(4):
            sender.send(n, timeout_s=5)
        assert received(b, WAIT_MS) == 4 and received(a) == 0


def test_the_asyncio_twin(pulls: list[tuple[zmq.Socket[bytes], str]],
                          tmp_path: Path) -> None:
    (a, ea), _ = pulls
    dead = nobody(tmp_path)

    async def main() -> set[str]:
        async_context = zmq.asyncio.Context()
        try:
            with AsyncRoutedSender([dead, ea], immediate=True, context=async_context,
                                   linger_ms=0) as sender:
                used = {await sender.send_via((dead, ea), n, id=f"r{n}", timeout_s=5)
                        for n in range(20)}
                with pytest.raises(SendTimeout):
                    await sender.send_via((dead,), 0, id="x", timeout_s=0.1)
                return used
        finally:
            async_context.term()

    assert asyncio.run(main()) == {ea}
    assert received(a, WAIT_MS) == 20
