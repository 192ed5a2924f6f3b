"""zjobs.transport.sender: ZmqSender and IdGenerator, checked against a raw PULL socket."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from zjobs import (
    ClosedError,
    ConnectError,
    EncodeError,
    Keepalive,
    MemoryProcessor,
    MemorySender,
    MpSend,
    Reconnect,
    SendTimeout,
    ZmqSender,
)
from zjobs.transport.keepalive import DEFAULT_KEEPALIVE
from zjobs.transport.reconnect import DEFAULT_RECONNECT
from zjobs.transport.sender import USE_SENDER_DEFAULT, IdGenerator

WAIT_MS = 10_000


@pytest.fixture
def pull() -> Iterator[tuple[zmq.Socket[bytes], str]]:
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.linger = 0
    sock.bind("tcp://127.0.0.1:*")
    try:
        yield sock, sock.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
    finally:
        sock.close()


def recv(sock: zmq.Socket[bytes]) -> tuple[dict[str, Any], Any]:
    assert sock.poll(WAIT_MS), "nothing arrived"
    frames = sock.recv_multipart()
    assert len(frames) == 2
    return (msgpack.unpackb(frames[0], raw=False),
            msgpack.unpackb(frames[1], raw=False, strict_map_key=False))


def test_send_encodes_a_zjp1_request(pull: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pull
    with ZmqSender(endpoint) as sender:
        rid = sender.send({"x": [1, 2]}, reply_to="topic", meta={"m": 1}, deadline_ms=123)
        header, body = recv(sock)
    assert header == {"v": 1, "id": rid, "reply_to": "topic", "meta": {"m": 1},
                      "deadline_ms": 123}
    assert body == {"x": [1, 2]}


def test_minimal_and_ping_requests(pull: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pull
    with ZmqSender(endpoint) as sender:
        sender.send(None, id="a")
        assert recv(sock) == ({"v": 1, "id": "a"}, None)
        sender.send(None, id=b"b", reply_to=b"t", ping=True)
        assert recv(sock) == ({"v": 1, "id": b"b", "reply_to": b"t", "ping": True}, None)


def test_generated_ids_are_unique_and_given_ids_kept(pull: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pull
    with ZmqSender(endpoint) as sender, ZmqSender(endpoint) as other:
        ids = [sender.send(i) for i in range(100)] + [other.send(i) for i in range(100)]
        assert len(set(ids)) == 200
        assert all(isinstance(i, str) and 0 < len(i.encode()) <= 255 for i in ids)
        assert sender.send(1, id=b"\x00mine") == b"\x00mine"
        received = [recv(sock)[0]["id"] for _ in range(201)]
    assert sorted(map(str, received)) == sorted(map(str, [*ids, b"\x00mine"]))


def test_send_frames_sends_raw_bytes(pull: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pull
    with ZmqSender(endpoint) as sender:
        sender.send_frames([b"\xc1", b"raw", b"3"])
        assert sock.poll(WAIT_MS)
        assert sock.recv_multipart() == [b"\xc1", b"raw", b"3"]


def test_unencodable_request_is_an_encode_error_and_nothing_is_sent(
    pull: tuple[zmq.Socket[bytes], str],
) -> None:
    sock, endpoint = pull
    with ZmqSender(endpoint) as sender:
        with pytest.raises(EncodeError):
            sender.send({1, 2})
        with pytest.raises(EncodeError):
            sender.send(1, meta={"m": object()})
        sender.send("after", id="next")
        assert recv(sock) == ({"v": 1, "id": "next"}, "after")


def test_send_timeout_when_no_processor_takes_it() -> None:
    with ZmqSender(send_timeout_s=0.05, immediate=True) as sender:
        sender.connect("tcp://127.0.0.1:1")  # nothing listens: no connection is ever up
        with pytest.raises(SendTimeout) as info:
            sender.send("lost")
        assert info.value.endpoints == ["tcp://127.0.0.1:1"]
        assert info.value.timeout_s == 0.05
        assert isinstance(info.value, TimeoutError)


def test_connect_to_several_processors_round_robins() -> None:
    ctx = zmq.Context.instance()
    pulls = [ctx.socket(zmq.PULL) for _ in range(2)]
    try:
        endpoints = []
        for sock in pulls:
            sock.linger = 0
            sock.bind("tcp://127.0.0.1:*")
            endpoints.append(sock.getsockopt(zmq.LAST_ENDPOINT).decode())  # type: ignore[union-attr]
        with ZmqSender(endpoints, immediate=True, send_timeout_s=10) as sender:
            assert sender.endpoints == endpoints
            # Wait until both connections are up: with ZMQ_IMMEDIATE, PUSH only uses live ones.
            got = [0, 0]
            deadline = time.monotonic() + WAIT_MS / 1000
            while not all(got) and time.monotonic() < deadline:
                sender.send("probe")
                for n, sock in enumerate(pulls):
                    while sock.poll(5):
                        sock.recv_multipart()
                        got[n] += 1
            assert all(got), got
            for sock in pulls:  # drain
                while sock.poll(100):
                    sock.recv_multipart()
            for i in range(100):
                sender.send(i)
            counts = []
            for sock in pulls:
                n = 0
                while n < 50 and sock.poll(WAIT_MS):
                    sock.recv_multipart()
                    n += 1
                counts.append(n)
        assert counts == [50, 50]
    finally:
        for sock in pulls:
            sock.close()


def test_closed_sender() -> None:
    sender = ZmqSender()
    assert not sender.closed
    sender.close()
    sender.close()
    assert sender.closed
    assert "closed" in repr(sender)
    with pytest.raises(ClosedError):
        sender.send(1)
    with pytest.raises(ClosedError):
        sender.connect("tcp://127.0.0.1:1")


def test_connect_error_names_the_endpoint() -> None:
    with ZmqSender() as sender:
        with pytest.raises(ConnectError) as info:
            sender.connect("nonsense://x")
        assert info.value.endpoint == "nonsense://x"
        assert "nonsense://x" in str(info.value)
        assert sender.endpoints == []
    with pytest.raises(ConnectError):
        ZmqSender("tcp://")  # the constructor closes its socket (checked by the leak fixture)


def test_repr_shows_endpoints(pull: tuple[zmq.Socket[bytes], str]) -> None:
    _, endpoint = pull
    with ZmqSender(endpoint) as sender:
        assert endpoint in repr(sender) and "open" in repr(sender)


def test_is_an_mp_send() -> None:
    with ZmqSender() as sender:
        assert isinstance(sender, MpSend)


def test_threads_can_share_a_sender(pull: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = pull
    with ZmqSender(endpoint) as sender:
        def work(n: int) -> None:
            for i in range(200):
                sender.send([n, i])

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        bodies = {tuple(recv(sock)[1]) for _ in range(800)}
        for t in threads:
            t.join()
    assert bodies == {(n, i) for n in range(4) for i in range(200)}


def test_id_generator() -> None:
    ids = IdGenerator("abc")
    assert [ids(), ids(), ids()] == ["abc-1", "abc-2", "abc-3"]
    for _ in range(20):
        ids()
    assert ids() == "abc-18"  # hex counter
    a, b = IdGenerator(), IdGenerator()
    assert a.prefix != b.prefix
    assert a() != b()


def test_close_from_another_thread_ends_a_send_blocked_for_ever(ipc_dir: Path) -> None:
    # No processor and no send timeout: the send waits for room; close() must still get
    # the sender's lock, and the waiting send ends with ClosedError instead of hanging.
    sender = ZmqSender(f"ipc://{ipc_dir}/nobody", immediate=True)
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            sender.send("x")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=send, name="test-blocked-send")
    thread.start()
    thread.join(0.2)
    assert thread.is_alive()  # blocked, as it should be with nowhere to send
    sender.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ClosedError)


def test_the_mp_send_protocol_declares_what_clients_pass() -> None:
    # Clients pass these to any MpSend; every sender of zjobs takes them.
    def defaults(method: Any) -> dict[str, Any]:
        params = inspect.signature(method).parameters
        return {name: p.default for name, p in params.items() if name != "self"}

    declared = defaults(MpSend.send)
    assert (declared["timeout_s"], declared["dedup"]) == (USE_SENDER_DEFAULT, False)
    for sender_class in (ZmqSender, MemorySender):
        assert defaults(sender_class.send) == declared


def test_memory_sender_takes_a_timeout_and_dedup() -> None:
    with MemoryProcessor(lambda r, res: r) as proc, proc.sender() as sender, \
            proc.receiver() as receiver:
        sender.send(1, id="d1", reply_to="x", dedup=True, timeout_s=1.0)
        assert receiver.receive(timeout=WAIT_MS / 1000).id == "d1"


def test_disconnect_sends_only_to_the_processors_left() -> None:
    ctx = zmq.Context.instance()
    pulls = [ctx.socket(zmq.PULL) for _ in range(2)]

    def bodies(sock: zmq.Socket[bytes], wait_ms: int) -> list[Any]:
        got = []
        while sock.poll(wait_ms):
            got.append(msgpack.unpackb(sock.recv_multipart()[1]))
        return [body for body in got if body != "probe"]

    try:
        endpoints = []
        for sock in pulls:
            sock.linger = 0
            sock.bind("tcp://127.0.0.1:*")
            endpoints.append(sock.getsockopt(zmq.LAST_ENDPOINT).decode())  # type: ignore[union-attr]
        with ZmqSender(endpoints, immediate=True, send_timeout_s=10) as sender:
            # Both connections up and busy: libzmq then still hands the next requests to
            # the one being closed (and drops them), unless disconnect waits for it.
            seen = [False, False]
            while not all(seen):
                sender.send("probe")
                seen = [seen[n] or bool(sock.poll(5)) for n, sock in enumerate(pulls)]
            sender.disconnect(endpoints[0])
            assert sender.endpoints == [endpoints[1]]
            for i in range(20):
                sender.send(i)
            assert sorted(bodies(pulls[1], 500)) == list(range(20))
            assert bodies(pulls[0], 10) == []
            sender.disconnect(endpoints[0])  # not connected any more: nothing to do
            assert sender.endpoints == [endpoints[1]]
    finally:
        for sock in pulls:
            sock.close()


def test_a_terminated_context_closes_the_sender_instead_of_failing_forever() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sender = ZmqSender("tcp://127.0.0.1:1", context=ctx, immediate=True)
    term = threading.Thread(target=ctx.term)  # blocks until every socket is closed
    term.start()
    try:
        for timeout_s in (USE_SENDER_DEFAULT, 5.0):  # both send paths
            with pytest.raises(ClosedError):
                sender.send("x", timeout_s=timeout_s)
        assert sender.closed
        term.join(WAIT_MS / 1000)
        assert not term.is_alive()
    finally:
        sender.close()
        term.join(WAIT_MS / 1000)


def test_sender_sockets_get_keepalive_and_reconnect_settings() -> None:
    with ZmqSender(reconnect=Reconnect(connect_timeout_ms=300, interval_ms=50,
                                       max_interval_ms=200),
                   keepalive=Keepalive(idle_s=7, interval_s=2, count=3)) as sender:
        sock = sender._live()
        assert [sock.getsockopt(o) for o in (zmq.CONNECT_TIMEOUT, zmq.RECONNECT_IVL,
                                             zmq.RECONNECT_IVL_MAX)] == [300, 50, 200]
        assert [sock.getsockopt(o) for o in (zmq.TCP_KEEPALIVE, zmq.TCP_KEEPALIVE_IDLE,
                                             zmq.TCP_KEEPALIVE_INTVL,
                                             zmq.TCP_KEEPALIVE_CNT)] == [1, 7, 2, 3]
        assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 0
    with ZmqSender() as sender:
        sock = sender._live()
        assert sock.getsockopt(zmq.CONNECT_TIMEOUT) == DEFAULT_RECONNECT.connect_timeout_ms
        assert sock.getsockopt(zmq.TCP_KEEPALIVE_IDLE) == DEFAULT_KEEPALIVE.idle_s
