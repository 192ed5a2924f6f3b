"""zjobs.transport.sockets: ProcessorSockets binds, cleans up after a failed bind, releases
security; SocketPeer's connect bookkeeping and closing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from zjobs.errors import BindError, ClosedError, ConnectError
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE
from zjobs.transport.sockets import ProcessorSockets, SocketPeer


def open_sockets(responses: str = "tcp://127.0.0.1:*", security: Any = None,
                 **classes: Any) -> ProcessorSockets:
    return ProcessorSockets(zmq.Context.instance(), "tcp://127.0.0.1:*", responses,
                            max_message_size=1024, linger_ms=7, rcvhwm=11, sndhwm=13,
                            keepalive=DEFAULT_KEEPALIVE, security=security, **classes)


class RecordingSecurity:
    """Server security that records which sockets it configured and released."""

    def __init__(self) -> None:
        self.configured: list[object] = []
        self.released: list[tuple[object, bool]] = []

    def configure_server(self, socket: zmq.Socket[bytes]) -> None:
        self.configured.append(socket.type)

    def release_server(self, socket: zmq.Socket[bytes]) -> None:
        self.released.append((socket.type, socket.closed))


def test_binds_both_with_the_options_and_resolves_wildcards() -> None:
    sockets = open_sockets()
    try:
        assert sockets.requests.startswith("tcp://127.0.0.1:")
        assert not sockets.requests.endswith(":*")
        assert sockets.responses != sockets.requests
        assert sockets.pull is not None and sockets.pub is not None
        assert (sockets.pull.type, sockets.pub.type) == (zmq.PULL, zmq.XPUB)
        assert (sockets.pull.linger, sockets.pull.rcvhwm, sockets.pull.maxmsgsize) == (0, 11, 1024)
        assert (sockets.pub.linger, sockets.pub.sndhwm) == (7, 13)
        for sock in (sockets.pull, sockets.pub):  # TCP keepalive, no ZMTP heartbeats
            assert sock.getsockopt(zmq.TCP_KEEPALIVE) == 1
            assert sock.getsockopt(zmq.TCP_KEEPALIVE_IDLE) == DEFAULT_KEEPALIVE.idle_s
            assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 0
    finally:
        sockets.close()
    assert sockets.pull is None and sockets.pub is None
    sockets.close()  # idempotent


def test_socket_classes() -> None:
    sockets = open_sockets(pull_class=zmq.asyncio.Socket, pub_class=zmq.Socket)
    try:
        assert isinstance(sockets.pull, zmq.asyncio.Socket)
        assert not isinstance(sockets.pub, zmq.asyncio.Socket)
    finally:
        sockets.close()


def test_a_failed_bind_closes_both_and_names_the_endpoint() -> None:
    security = RecordingSecurity()
    with pytest.raises(BindError) as info:
        open_sockets("bogus://nowhere", security)
    assert info.value.endpoint == "bogus://nowhere"
    # The no_leaks fixture fails the test if either socket stayed open.
    assert security.configured == [zmq.PULL, zmq.XPUB]
    assert security.released == [(zmq.PULL, True), (zmq.XPUB, True)]


def test_close_releases_each_socket_after_closing_it() -> None:
    security = RecordingSecurity()
    sockets = open_sockets(security=security)
    assert security.released == []
    sockets.close()
    sockets.close()
    assert security.released == [(zmq.PULL, True), (zmq.XPUB, True)]


# -- SocketPeer: what senders and receivers share ---------------------------------------------


class Peer(SocketPeer["zmq.Socket[bytes]"]):
    _role = "peer"


def test_socket_peer_lists_connected_endpoints_and_closes_on_exit() -> None:
    with Peer(zmq.Context.instance().socket(zmq.PUSH)) as peer:
        peer.connect("inproc://test-socket-peer")
        with pytest.raises(ConnectError) as info:
            peer.connect("bogus://nowhere")
        assert info.value.endpoint == "bogus://nowhere"
        assert peer.endpoints == ["inproc://test-socket-peer"]
        assert not peer.closed
    assert peer.closed  # the no_leaks fixture checks the socket itself is closed
    peer.close()  # idempotent
    with pytest.raises(ClosedError, match="peer is closed"):
        peer.connect("inproc://test-socket-peer-2")


def test_an_ipc_path_another_process_listens_on_is_in_use(ipc_dir: Path) -> None:
    # libzmq alone would unlink the live socket file and bind anew, silently cutting the
    # other process off from new peers.
    path = ipc_dir / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys, time; s = socket.socket(socket.AF_UNIX);"
         f" s.bind({str(path)!r}); s.listen(); print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "up\n"
        with pytest.raises(BindError) as info:
            open_sockets(responses=f"ipc://{path}")
        assert info.value.endpoint == f"ipc://{path}"
        assert "address already in use" in str(info.value)
    finally:
        holder.communicate("")
    # The file is left behind, nobody listens: a restarted processor binds it.
    assert path.exists()
    open_sockets(responses=f"ipc://{path}").close()


def test_an_ipc_path_is_bound_again_right_after_its_socket_closed(ipc_dir: Path) -> None:
    endpoint = f"ipc://{ipc_dir}/again"
    for _ in range(20):
        open_sockets(responses=endpoint).close()


def test_a_request_larger_than_max_message_size_is_logged_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import msgpack

    from zjobs import ZmqProcessor
    from zjobs.testing import wait_until

    caplog.set_level(logging.INFO, logger="zjobs.transport.watch")
    with ZmqProcessor(lambda r, res: r, max_message_size=1000) as proc:
        ctx = zmq.Context.instance()
        push = ctx.socket(zmq.PUSH)
        try:
            push.linger = 0
            push.connect(proc.connect_endpoints.requests)
            header = msgpack.packb({"v": 1, "id": "big"})
            push.send_multipart([header, msgpack.packb(b"x" * 2000)])
            wait_until(lambda: proc.sender_disconnects == 1)
        finally:
            push.close()
        assert proc.counters.received == 0  # libzmq refused it: zjobs never saw it
    assert "larger than max_message_size=1000 bytes" in caplog.text
    assert "1 sender connection(s) closed" in caplog.text
