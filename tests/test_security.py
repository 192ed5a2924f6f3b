"""CURVE encryption and ZAP authentication through the Python API (zjobs.transport.security).

Real sockets throughout. "Gets nothing" checks wait a short, fixed window (NOTHING_S)
while an allowed client is served at the same time, so the window is known to be long
enough for traffic that does get through.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import socket
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from zmq.auth.thread import AuthenticationThread, ThreadAuthenticator

from zjobs import (
    BindError,
    Client,
    CurveClient,
    CurveServer,
    KeyFileError,
    KeyPair,
    Link,
    NotReady,
    ReceiveTimeout,
    SendTimeout,
    ZmqProcessor,
    ZmqReceiver,
    ZmqSender,
)
from zjobs.testing import wait_subscribed
from zjobs.transport.security import load_allowed_keys, load_public_key, write_key_pair
from zjobs.transport.security.zap import ZAP_ENDPOINT, running_domains

pytestmark = pytest.mark.timeout(60)

NOTHING_S = 0.7  # how long a refused peer is watched for anything getting through
WAIT_S = 20.0  # generous: other suites load the machine


@dataclass
class Keys:
    """Key files: a server, two allowed clients (alice, bob) and eve, who is not allowed."""

    dir: Path
    clients: Path  # the allow-list directory: alice.key only

    def secret(self, name: str) -> Path:
        return self.dir / f"{name}.key_secret"

    def public(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def client(self, name: str, server: str = "server") -> CurveClient:
        return CurveClient(self.public(server), self.secret(name))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("keys")
    for name in ("server", "server2", "alice", "bob", "eve"):
        write_key_pair(name, base)
    clients = base / "clients"
    clients.mkdir()
    (clients / "alice.key").write_bytes((base / "alice.key").read_bytes())
    return Keys(base, clients)


def zap_threads() -> list[threading.Thread]:
    """The ZAP authenticator threads running (pyzmq's, unnamed by zjobs)."""
    return [t for t in threading.enumerate() if isinstance(t, AuthenticationThread)]


def double(request: Any, resources: Any) -> Any:
    return request * 2


class Recorder:
    """A job that remembers every request it ran."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def run(self, request: Any, resources: Any) -> Any:
        self.seen.append(request)
        return request


# -- key files ------------------------------------------------------------------------------


def test_keygen_writes_pyzmq_certificates_with_a_private_secret(tmp_path: Path) -> None:
    public_path, secret_path = write_key_pair("node", tmp_path / "new")
    assert (public_path.name, secret_path.name) == ("node.key", "node.key_secret")
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert b"secret-key" not in public_path.read_bytes()
    # pyzmq reads them, and they agree with each other and with zjobs' loaders
    public, none = zmq.auth.load_certificate(public_path)
    public2, secret = zmq.auth.load_certificate(secret_path)
    assert none is None and secret is not None and public == public2
    assert zmq.curve_public(secret) == public
    assert KeyPair.load(secret_path) == KeyPair(public, secret)
    assert load_public_key(public_path) == load_public_key(secret_path) == public
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["node.key", "node.key_secret"]


def test_keygen_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    _, secret_path = write_key_pair("node", tmp_path)
    before = secret_path.read_bytes()
    with pytest.raises(KeyFileError) as info:
        write_key_pair("node", tmp_path)
    assert info.value.path == str(tmp_path / "node.key")
    assert secret_path.read_bytes() == before
    write_key_pair("node", tmp_path, overwrite=True)
    assert secret_path.read_bytes() != before
    for name in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            write_key_pair(name, tmp_path)


def _bad_files(tmp_path: Path, keys: Keys) -> dict[str, tuple[Path, str]]:
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text("hello, I am not a certificate\n")
    short = tmp_path / "short.key_secret"
    short.write_text('curve\n    public-key = "abc"\n    secret-key = "def"\n')
    mismatched = tmp_path / "mismatched.key_secret"
    other = KeyPair.generate()
    mismatched.write_text(keys.secret("alice").read_text().replace(
        KeyPair.load(keys.secret("alice")).public.decode(), other.public.decode()))
    return {
        "missing": (tmp_path / "nope.key_secret", "no such file"),
        "directory": (tmp_path, "directory"),
        "garbage": (garbage, "not a CURVE certificate"),
        "short key": (short, "bad public key"),
        "public where secret needed": (keys.public("alice"), "no secret key"),
        "keys do not match": (mismatched, "does not belong"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "garbage", "short key",
                                  "public where secret needed", "keys do not match"])
def test_bad_secret_key_files_raise_key_file_error_naming_the_file(
        case: str, tmp_path: Path, keys: Keys) -> None:
    path, reason = _bad_files(tmp_path, keys)[case]
    for load in (KeyPair.load, lambda p: CurveServer(p), lambda p: keys_client(keys, p)):
        with pytest.raises(KeyFileError) as info:
            load(path)
        assert info.value.path == str(path)
        assert str(path) in str(info.value) and reason in str(info.value)


def keys_client(keys: Keys, secret: Path) -> CurveClient:
    return CurveClient(keys.public("server"), secret)


def test_bad_public_key_files_and_allow_lists(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(KeyFileError, match="no such file") as info:
        CurveClient(tmp_path / "server.key")
    assert info.value.path == str(tmp_path / "server.key")
    with pytest.raises(KeyFileError, match="no such directory") as info:
        CurveServer(keys.secret("server"), allow_clients=tmp_path / "none")
    assert info.value.path == str(tmp_path / "none")
    bad_dir = tmp_path / "clients"
    bad_dir.mkdir()
    (bad_dir / "good.key").write_bytes(keys.public("bob").read_bytes())
    (bad_dir / "broken.key").write_text("garbage\n")
    with pytest.raises(KeyFileError) as info:
        load_allowed_keys(bad_dir)
    assert info.value.path == str(bad_dir / "broken.key")
    with pytest.raises(ValueError):
        CurveClient(b"too short")
    with pytest.raises(ValueError):
        CurveServer(KeyPair.generate(), allow_clients=[b"x" * 39])


def test_secret_file_readable_by_others_is_loaded_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, secret_path = write_key_pair("loose", tmp_path)
    os.chmod(secret_path, 0o644)
    with caplog.at_level(logging.WARNING, logger="zjobs.transport.security"):
        KeyPair.load(secret_path)
    assert any(str(secret_path) in r.getMessage() and "chmod 600" in r.getMessage()
               for r in caplog.records)


def test_allow_list_counts_keys_and_ignores_other_files(keys: Keys) -> None:
    server = CurveServer(keys.secret("server"), allow_clients=keys.clients)
    assert server.allowed == {load_public_key(keys.public("alice"))}
    assert server.describe() == f"CURVE on: encrypted, 1 allowed client key from {keys.clients}"
    assert CurveServer(keys.secret("server"), allow_clients=keys.dir).allowed is not None
    assert len(load_allowed_keys(keys.dir)) == 5  # *.key only, not *.key_secret


# -- end to end -----------------------------------------------------------------------------


def test_allowed_client_is_served_on_both_sockets(keys: Keys) -> None:
    server = CurveServer(keys.secret("server"), allow_clients=keys.clients)
    with ZmqProcessor(double, security=server) as processor:
        with processor.client(security=keys.client("alice"), timeout_s=WAIT_S) as client:
            assert [client.call(n) for n in range(5)] == [0, 2, 4, 6, 8]
        ep = processor.connect_endpoints
        alice = keys.client("alice")
        with ZmqSender(ep.requests, security=alice) as sender, \
                ZmqReceiver(ep.responses, security=alice) as receiver:
            wait_subscribed(sender, receiver, timeout_s=WAIT_S)
            rid = sender.send("ab")
            response = receiver.receive(timeout=WAIT_S)
            while response.status == "pong":  # late answers to the readiness pings
                response = receiver.receive(timeout=WAIT_S)
            assert (response.id, response.value) == (rid, "abab")
        assert processor.counters.ok == 6
    assert running_domains(zmq.Context.instance()) == frozenset()


def test_refused_client_gets_nothing_while_an_allowed_one_is_served(keys: Keys) -> None:
    job = Recorder()
    server = CurveServer(keys.secret("server"), allow_clients=keys.clients)
    eve = keys.client("eve")
    with ZmqProcessor(job, security=server) as processor:
        ep = processor.connect_endpoints
        with ZmqSender(ep.requests, security=eve, send_timeout_s=0.05) as eve_sender, \
                ZmqReceiver(ep.responses, security=eve) as eve_receiver:

            def eve_sends(tag: str) -> None:
                for n in range(5):
                    try:
                        eve_sender.send(f"eve-{tag}-{n}", reply_to="")
                    except SendTimeout:
                        pass  # a refused connection soon has no pipe to queue into

            # Alone: nothing of eve's reaches the job, and she receives nothing.
            eve_sends("alone")
            with pytest.raises(ReceiveTimeout):
                eve_receiver.receive(timeout=NOTHING_S)
            assert processor.counters.received == 0

            # With alice served meanwhile: eve (subscribed to every topic) still sees none
            # of the responses published to alice, and none of her own requests run.
            with processor.client(security=keys.client("alice"), timeout_s=WAIT_S) as alice:
                for n in range(3):
                    eve_sends(f"during-{n}")
                    assert alice.call(f"alice-{n}") == f"alice-{n}"
                with pytest.raises(ReceiveTimeout):
                    eve_receiver.receive(timeout=NOTHING_S)
                assert alice.call("alice-after") == "alice-after"
        counters = processor.counters
    assert job.seen == ["alice-0", "alice-1", "alice-2", "alice-after"]
    assert counters.ok == 4 and counters.bad_requests == 0
    assert counters.received == counters.ok + counters.pongs  # only alice's traffic arrived


def test_plaintext_client_against_curve_processor_gets_nothing(keys: Keys) -> None:
    server = CurveServer(keys.secret("server"))  # even without an allow list
    with ZmqProcessor(double, security=server) as processor:
        ep = processor.connect_endpoints
        with processor.client(ready_timeout_s=NOTHING_S) as plain:
            with pytest.raises(NotReady):
                plain.wait_ready()
        with ZmqReceiver(ep.responses) as plain_receiver, \
                processor.client(security=CurveClient(server.public_key),
                                 timeout_s=WAIT_S) as curve:
            assert curve.call(21) == 42
            with pytest.raises(ReceiveTimeout):
                plain_receiver.receive(timeout=NOTHING_S)
            assert curve.call(1) == 2
        counters = processor.counters
    assert counters.ok == 2 and counters.received == 2 + counters.pongs


def test_without_allow_list_any_client_with_the_server_key_connects_and_it_is_logged(
        keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="zjobs.transport.security"):
        server = CurveServer(keys.secret("server"))
        with ZmqProcessor(double, security=server) as processor:
            for who in (CurveClient(keys.public("server")), keys.client("eve")):
                with processor.client(security=who, timeout_s=WAIT_S) as client:
                    assert client.call(5) == 10
            # the wrong server key: the handshake fails, nothing is served
            wrong = CurveClient(keys.public("server2"), keys.secret("alice"))
            with processor.client(security=wrong, ready_timeout_s=NOTHING_S) as client:
                with pytest.raises(NotReady):
                    client.wait_ready()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings.count(server.describe()) == 1
    assert "unauthenticated" in server.describe()


def test_two_processors_with_different_allow_lists_share_a_context(keys: Keys) -> None:
    context = zmq.Context.instance()
    only_alice = CurveServer(keys.secret("server"), allow_clients=keys.clients)
    only_bob = CurveServer(keys.secret("server"), allow_clients=[
        load_public_key(keys.public("bob"))])
    anyone = CurveServer(keys.secret("server2"))
    with ZmqProcessor(double, security=only_alice, name="a") as a, \
            ZmqProcessor(double, security=only_bob, name="b") as b, \
            ZmqProcessor(double, security=anyone, name="any") as any_:
        assert running_domains(context) == {only_alice.domain, only_bob.domain, anyone.domain}
        assert len(zap_threads()) == 1
        for processor, name in ((a, "alice"), (b, "bob"), (any_, "eve")):
            server = "server2" if processor is any_ else "server"
            with processor.client(security=keys.client(name, server), timeout_s=WAIT_S) as c:
                assert c.call(1) == 2
        for processor, name in ((a, "bob"), (b, "alice")):
            with processor.client(security=keys.client(name),
                                  ready_timeout_s=NOTHING_S) as c, pytest.raises(NotReady):
                c.wait_ready()
        assert (a.counters.ok, b.counters.ok, any_.counters.ok) == (1, 1, 1)
    assert running_domains(context) == frozenset()
    assert not zap_threads()


def test_one_server_shared_by_two_processors_outlives_the_first(keys: Keys) -> None:
    server = CurveServer(keys.secret("server"), allow_clients=keys.clients)
    with ZmqProcessor(double, security=server) as keeps:
        with ZmqProcessor(double, security=server) as stops:
            with stops.client(security=keys.client("alice"), timeout_s=WAIT_S) as c:
                assert c.call(2) == 4
        # the first processor's stop released only its own sockets
        assert running_domains(zmq.Context.instance()) == {server.domain}
        with keeps.client(security=keys.client("alice"), timeout_s=WAIT_S) as c:
            assert c.call(3) == 6
        with keeps.client(security=keys.client("eve"), ready_timeout_s=NOTHING_S) as c:
            with pytest.raises(NotReady):
                c.wait_ready()


def test_authenticator_is_released_when_binding_fails_or_never_started(keys: Keys) -> None:
    server = CurveServer(keys.secret("server"), allow_clients=keys.clients)
    with ZmqProcessor(double) as taken:
        with pytest.raises(BindError):
            ZmqProcessor(double, security=server, requests=taken.endpoints.requests)
    assert running_domains(zmq.Context.instance()) == frozenset()
    idle = ZmqProcessor(double, security=server)
    assert running_domains(zmq.Context.instance()) == {server.domain}
    idle.stop()
    assert running_domains(zmq.Context.instance()) == frozenset()
    assert not zap_threads()


def test_a_foreign_zap_handler_in_the_context_is_a_clear_error(keys: Keys) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    foreign = ThreadAuthenticator(context)
    foreign.start()
    try:
        server = CurveServer(keys.secret("server"), allow_clients=keys.clients)
        with pytest.raises(BindError) as info:
            ZmqProcessor(double, security=server, context=context)
        assert info.value.endpoint == ZAP_ENDPOINT
        assert "another ZAP authenticator" in str(info.value)
        assert running_domains(context) == frozenset()
    finally:
        foreign.stop()
        context.term()


def test_curve_server_pickles_without_its_sockets(keys: Keys) -> None:
    server = CurveServer(keys.secret("server"), allow_clients=keys.clients)
    with ZmqProcessor(double, security=server):
        copy = pickle.loads(pickle.dumps(server))
    assert (copy.keys, copy.allowed, copy.allow_source) == (
        server.keys, server.allowed, server.allow_source)
    copy.close()  # holds nothing: a no-op
    assert "secret" not in repr(server.keys) and server.keys.secret.decode() not in repr(server)


# -- what is visible on the wire ------------------------------------------------------------


class RecordingProxy:
    """A loopback TCP relay to ``target`` that records every byte passing either way.

    Threads and the socket module only; at most ``limit`` bytes are recorded, and every
    thread is joined by :meth:`close`.
    """

    def __init__(self, target: str, limit: int = 1 << 20) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.limit = limit
        self.recorded = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.endpoint = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, name="proxy-accept")]
        self._threads[0].start()

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def data(self) -> bytes:
        with self._lock:
            return bytes(self.recorded)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            thread = threading.Thread(target=self._pump, args=(downstream, upstream),
                                      name="proxy-pump")
            self._threads.append(thread)
            thread.start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for sock in readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    with self._lock:
                        self.recorded += chunk[: max(0, self.limit - len(self.recorded))]
                    peers[sock].sendall(chunk)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def close(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()


@pytest.mark.parametrize("secured", [False, True], ids=["plaintext", "curve"])
def test_marker_is_visible_on_the_wire_only_without_curve(keys: Keys, secured: bool) -> None:
    marker = "MARKER-7f3a-secret-payload"
    server = CurveServer(keys.secret("server"), allow_clients=keys.clients) if secured else None
    client_security = keys.client("alice") if secured else None
    with ZmqProcessor(Recorder(), security=server) as processor:
        ep = processor.connect_endpoints
        with RecordingProxy(ep.requests) as requests, RecordingProxy(ep.responses) as responses:
            with Client.connect(requests.endpoint, responses.endpoint, security=client_security,
                                timeout_s=WAIT_S, ready_timeout_s=WAIT_S) as client:
                assert client.call({"text": marker}) == {"text": marker}
            seen = requests.data() + responses.data()
    assert len(requests.data()) > 0 and len(responses.data()) > 0  # traffic went through us
    assert (marker.encode() in requests.data()) is not secured
    assert (marker.encode() in responses.data()) is not secured
    if secured:
        assert b"CURVE" in seen  # the ZMTP greeting names the mechanism


# -- chaining -------------------------------------------------------------------------------


def test_link_between_curve_processors_needs_an_allowed_key(keys: Keys) -> None:
    server = CurveServer(keys.secret("server"), allow_clients=keys.clients)
    alice = keys.client("alice")
    with ZmqProcessor(double, security=server, name="A") as a, \
            ZmqProcessor(double, security=server, name="B") as b:
        with pytest.raises(NotReady):
            Link(a, b, security=keys.client("eve"), ready_timeout_s=NOTHING_S).start()
        with Link(a, b, security=alice, topic="work"), \
                ZmqSender(a.connect_endpoints.requests, security=alice) as entry, \
                ZmqSender(b.connect_endpoints.requests, security=alice) as probe, \
                ZmqReceiver(b.connect_endpoints.responses, topics=["work"],
                            security=alice) as out:
            wait_subscribed(probe, out, topic="work", timeout_s=WAIT_S)
            entry.send(5, id="chained", reply_to="work")
            response = out.receive(timeout=WAIT_S)
            while response.status == "pong":
                response = out.receive(timeout=WAIT_S)
            assert (response.id, response.value, response.processor) == ("chained", 20, "B")
