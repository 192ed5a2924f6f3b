"""Links between real processors (sync and asyncio) over tcp: chains, fan-out, fan-in,
errors, readiness, a crashed link."""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from click.testing import CliRunner

from zjobs import CrashedError, Endpoints, ZmqProcessor, ZmqReceiver, ZmqSender
from zjobs.aio import AsyncZmqProcessor
from zjobs.cli import main
from zjobs.compose.link import Link
from zjobs.errors import ClosedError, NotReady, ReceiveTimeout
from zjobs.testing import wait_subscribed, wait_until
from zjobs.wire.chain import DEAD_LETTER_TOPIC, ERROR_KEY, LINK_FAILED, PATH_KEY, full_path
from zjobs.wire.protocol import PONG, Request, Response, topic_bytes


def inc(x: int, resources: Any) -> int:
    return x + 1


def double(x: int, resources: Any) -> int:
    if x == -1:
        raise ValueError("minus one")
    return x * 2


def negate(x: int, resources: Any) -> int:
    return -x


def slow_identity(x: int, resources: Any) -> int:
    time.sleep(0.0005)
    return x


@pytest.fixture
def processors() -> Iterator[dict[str, ZmqProcessor]]:
    procs = {
        "A": ZmqProcessor(inc, name="A"),
        "B": ZmqProcessor(double, name="B"),
        "C": ZmqProcessor(negate, name="C"),
    }
    try:
        for proc in procs.values():
            proc.start()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def topic() -> str:
    return secrets.token_hex(16)


def collect(receiver: ZmqReceiver, count: int, timeout_s: float = 30.0) -> list[Response]:
    """Receive ``count`` non-pong responses (or fail after ``timeout_s``)."""
    out: list[Response] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"got {len(out)} of {count} responses")
        try:
            response = receiver.receive(timeout=left)
        except ReceiveTimeout:
            continue
        if response.status != PONG or ERROR_KEY in (response.meta or {}):
            out.append(response)
    return out


def barrier(entry: ZmqSender, receiver: ZmqReceiver, reply_to: str,
            timeout_s: float = 30.0) -> list[Response]:
    """Send a chain ping into the entry and wait for its pong at the end of the chain.

    Every stage and link is FIFO, so whatever the chain still had to deliver for earlier
    work arrives before the pong: the responses returned are those (duplicates, strays).
    """
    rid = entry.send(None, reply_to=reply_to, ping=True, meta={PATH_KEY: []})
    strays: list[Response] = []
    deadline = time.monotonic() + timeout_s
    while True:
        response = receiver.receive(timeout=max(0.001, deadline - time.monotonic()))
        if response.status == PONG and response.id == rid:
            return strays
        strays.append(response)


def test_three_stage_chain_carries_1000_requests_exactly_once(
        processors: dict[str, ZmqProcessor]) -> None:
    a, b, c = processors["A"], processors["B"], processors["C"]
    t = topic()
    with (Link(a, b, name="a-b"), Link(b, c, name="b-c") as second,
          c.receiver(topics=[t]) as out, a.sender() as entry, c.sender() as probe):
        wait_subscribed(probe, out, topic=t)
        ids = [f"req-{i}" for i in range(1000)]
        for i, rid in enumerate(ids):
            entry.send(i, id=rid, reply_to=t)
        responses = collect(out, 1000)
        assert barrier(entry, out, t) == []  # nothing more came: no duplicates
        by_id = {r.id: r for r in responses}
        assert len(by_id) == 1000 and set(by_id) == set(ids)
        for i, rid in enumerate(ids):
            response = by_id[rid]
            assert response.ok and response.value == -((i + 1) * 2)
            assert response.processor == "C"
            assert response.topic == t.encode()
            assert response.meta == {PATH_KEY: ["A", "B"]}
            assert full_path(response) == ["A", "B", "C"]
        counters = second.counters
        assert counters.forwarded == 1000 and counters.errors == 0


def test_user_meta_travels_with_the_work(processors: dict[str, ZmqProcessor]) -> None:
    a, b = processors["A"], processors["B"]
    t = topic()
    with Link(a, b), b.receiver(topics=[t]) as out, a.sender() as entry, b.sender() as probe:
        wait_subscribed(probe, out, topic=t)
        entry.send(1, id="x", reply_to=t, meta={"trace": "abc", PATH_KEY: ["client"]})
        (response,) = collect(out, 1)
        assert response.value == 4
        assert response.meta == {"trace": "abc", PATH_KEY: ["client", "A"]}


def test_fan_out_delivers_every_item_once_to_each_consumer(
        processors: dict[str, ZmqProcessor]) -> None:
    a, b, c = processors["A"], processors["B"], processors["C"]
    t = topic()
    with (Link(a, b, name="a-b"), Link(a, c, name="a-c"),
          ZmqReceiver([b.connect_endpoints.responses, c.connect_endpoints.responses],
                      topics=[t]) as out,
          a.sender() as entry, b.sender() as probe_b, c.sender() as probe_c):
        wait_subscribed(probe_b, out, topic=t)
        wait_subscribed(probe_c, out, topic=t)
        for i in range(300):
            entry.send(i, id=f"item-{i}", reply_to=t)
        responses = collect(out, 600)
        # one chain ping reaches both branches: two pongs, after all their earlier work
        rid = entry.send(None, reply_to=t, ping=True, meta={PATH_KEY: []})
        pongs = 0
        while pongs < 2:
            response = out.receive(timeout=30)
            assert response.status == PONG and response.id == rid, "a duplicate arrived"
            pongs += 1
    seen = collections.Counter((r.processor, r.id) for r in responses)
    assert set(seen.values()) == {1}
    for name, expected in (("B", lambda i: (i + 1) * 2), ("C", lambda i: -(i + 1))):
        values = {r.id: r.value for r in responses if r.processor == name}
        assert values == {f"item-{i}": expected(i) for i in range(300)}


@pytest.mark.parametrize("shape", ["one link, two sources", "two links"])
def test_fan_in_delivers_every_item_once(processors: dict[str, ZmqProcessor],
                                         shape: str) -> None:
    a, b, c = processors["A"], processors["B"], processors["C"]
    t = topic()
    links = ([Link([a, b], c, name="ab-c")] if shape == "one link, two sources"
             else [Link(a, c, name="a-c"), Link(b, c, name="b-c")])
    try:
        for link in links:
            link.start()
        with (c.receiver(topics=[t]) as out, a.sender() as to_a, b.sender() as to_b,
              c.sender() as probe):
            wait_subscribed(probe, out, topic=t)
            for i in range(200):
                to_a.send(i, id=f"a-{i}", reply_to=t)
                to_b.send(i, id=f"b-{i}", reply_to=t)
            responses = collect(out, 400)
            assert barrier(to_a, out, t) == []
            assert barrier(to_b, out, t) == []
    finally:
        for link in links:
            link.stop()
    values = {r.id: r.value for r in responses}
    assert len(responses) == len(values) == 400
    assert values == {**{f"a-{i}": -(i + 1) for i in range(200)},
                      **{f"b-{i}": -(i * 2) for i in range(200)}}
    paths = {r.id: r.meta[PATH_KEY] for r in responses if r.meta}
    assert paths["a-0"] == ["A"] and paths["b-0"] == ["B"]


def test_an_upstream_error_reaches_the_end_of_the_chain_with_its_stage(
        processors: dict[str, ZmqProcessor]) -> None:
    a, b, c = processors["A"], processors["B"], processors["C"]
    t = topic()
    with (Link(a, b), Link(b, c) as second, c.receiver(topics=[t]) as out,
          a.sender() as entry, c.sender() as probe):
        wait_subscribed(probe, out, topic=t)
        entry.send(-2, id="bad", reply_to=t)   # A: -1, B raises
        entry.send(3, id="good", reply_to=t)   # the chain keeps serving
        bad, good = collect(out, 2)
        assert bad.id == "bad" and bad.status == PONG and bad.processor == "C"
        assert bad.meta is not None
        error = bad.meta[ERROR_KEY]
        assert error["stage"] == "B" and error["type"] == "JobFailed"
        assert error["exception"] == "ValueError" and "minus one" in error["message"]
        assert bad.meta[PATH_KEY] == ["A", "B"]
        assert full_path(bad) == ["A", "B"]
        assert good.id == "good" and good.value == -8
        assert second.counters.errors == 1


def test_errors_of_work_nobody_waits_for_go_to_the_dead_letter_topic(
        processors: dict[str, ZmqProcessor], caplog: pytest.LogCaptureFixture) -> None:
    b, c = processors["B"], processors["C"]
    with (Link(b, c) as link, c.receiver(topics=[DEAD_LETTER_TOPIC]) as dead,
          b.sender() as entry, c.sender() as probe):
        wait_subscribed(probe, dead, topic=DEAD_LETTER_TOPIC)
        entry.send(-1, id="orphan")  # no reply_to: nobody waits
        (letter,) = collect(dead, 1)
    assert letter.id == "orphan" and letter.topic == DEAD_LETTER_TOPIC.encode()
    assert letter.meta is not None and letter.meta[ERROR_KEY]["stage"] == "B"
    assert link.counters.dead_letters == 1
    assert "dead letter 'orphan' from B" in caplog.text


def test_filter_and_transform(processors: dict[str, ZmqProcessor]) -> None:
    a, c = processors["A"], processors["C"]
    t = topic()
    with (Link(a, c, keep=lambda v: v % 2 == 0, transform=lambda v: v * 100) as link,
          c.receiver(topics=[t]) as out, a.sender() as entry, c.sender() as probe):
        wait_subscribed(probe, out, topic=t)
        for i in range(10):
            entry.send(i, id=f"n{i}", reply_to=t)
        responses = collect(out, 5)
        assert barrier(entry, out, t) == []
    assert sorted(r.value for r in responses) == [-1000, -800, -600, -400, -200]
    assert link.counters.filtered == 5 and link.counters.forwarded == 5


def test_a_failing_transform_is_an_error_named_after_the_link(
        processors: dict[str, ZmqProcessor]) -> None:
    a, c = processors["A"], processors["C"]
    t = topic()

    def picky(value: int) -> Any:
        if value == 2:
            raise KeyError("two")
        return {1, 2} if value == 3 else value  # a set cannot be encoded

    with (Link(a, c, name="a-to-c", transform=picky) as link, c.receiver(topics=[t]) as out,
          a.sender() as entry, c.sender() as probe):
        wait_subscribed(probe, out, topic=t)
        for i in range(4):
            entry.send(i, id=f"n{i}", reply_to=t)
        responses = {r.id: r for r in collect(out, 4)}
    assert responses["n0"].value == -1 and responses["n3"].value == -4
    for rid, kind in (("n1", "KeyError"), ("n2", "EncodeError")):
        meta = responses[rid].meta
        assert meta is not None
        assert meta[ERROR_KEY]["stage"] == "a-to-c"
        assert meta[ERROR_KEY]["type"] == LINK_FAILED
        assert meta[ERROR_KEY]["exception"] == kind
    assert link.counters.failed == 2


def test_a_link_started_is_subscribed_no_first_item_is_lost() -> None:
    # The slow-joiner problem: without the readiness handshake the first responses
    # published right after connecting are dropped. Repeat to give it chances to show.
    with ZmqProcessor(inc, name="A") as a, ZmqProcessor(negate, name="C") as c:
        t = topic()
        with c.receiver(topics=[t]) as out, c.sender() as probe, a.sender() as entry:
            wait_subscribed(probe, out, topic=t)
            for round_ in range(20):
                with Link(a, c):
                    entry.send(round_, id=f"first-{round_}", reply_to=t)
                    (response,) = collect(out, 1, timeout_s=10)
                    assert response.id == f"first-{round_}"


def test_a_link_behind_a_slow_downstream_buffers_instead_of_losing_work() -> None:
    # The downstream queues at most 10 requests, so the link's PUSH soon blocks and the
    # link stops reading while the fast upstream keeps publishing: the work must wait in
    # the buffers (the upstream PUB's, the link's unbounded SUB), and none may be lost.
    with (ZmqProcessor(inc, name="fast") as fast,
          ZmqProcessor(slow_identity, name="slow", rcvhwm=10) as slow):
        t = topic()
        with (Link(fast, slow), slow.receiver(topics=[t]) as out, fast.sender() as entry,
              slow.sender() as probe):
            wait_subscribed(probe, out, topic=t)
            for i in range(3000):
                entry.send(i, id=f"w{i}", reply_to=t)
            responses = collect(out, 3000, timeout_s=60)
    assert {r.value for r in responses} == set(range(1, 3001))


def test_start_fails_with_not_ready_when_an_upstream_is_down(tmp_path: Any) -> None:
    missing = Endpoints(f"ipc://{tmp_path}/nobody.req", f"ipc://{tmp_path}/nobody.pub")
    with ZmqProcessor(negate) as c:
        link = Link(missing, c, ready_timeout_s=0.3)
        with pytest.raises(NotReady):
            link.start()
        assert link.state == "stopped"
        link.stop()  # idempotent after a failed start


def test_lifecycle_repr_and_restart_refused(processors: dict[str, ZmqProcessor]) -> None:
    link = Link(processors["A"], processors["B"], name="ab")
    assert "created" in repr(link) and "'ab'" in repr(link)
    with link:
        assert "running" in repr(link)
        with pytest.raises(ClosedError):
            link.start()
    assert link.state == "stopped"
    link.stop()
    with pytest.raises(ClosedError):
        link.start()
    with pytest.raises(ValueError):
        Link([], processors["B"])


class Swallower:
    """A downstream that answers pings and loses every request, as a processor that dies
    with work in its queue does; it keeps the requests it lost."""

    def __init__(self, endpoints: Endpoints) -> None:
        context = zmq.Context.instance()
        self.pull = context.socket(zmq.PULL)
        self.pub = context.socket(zmq.PUB)
        self.pull.bind(endpoints.requests)
        self.pub.bind(endpoints.responses)
        self.lost: list[Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-swallower")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.pull.poll(20):
                continue
            request = Request.from_frames(self.pull.recv_multipart())
            if request.ping:
                self.pub.send_multipart(Response(request.id, PONG, processor="swallower",
                                                 instance="swallower",
                                                 topic=topic_bytes(request.reply_to))
                                        .to_frames())
            else:
                self.lost.append(request)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.pull.close(linger=0)
        self.pub.close(linger=0)


def test_a_link_with_retries_sends_again_what_a_dead_downstream_lost(ipc_dir: Path) -> None:
    work = topic()
    ran: list[int] = []

    def record(x: int, resources: Any) -> int:
        ran.append(x)
        return x * 2

    b = Endpoints(f"ipc://{ipc_dir}/b.req", f"ipc://{ipc_dir}/b.pub")
    swallower = Swallower(b)
    with (ZmqProcessor(inc, name="A") as a, a.sender() as entry,
          Link(a, b, name="A->B", topic=work, retries=50, retry_timeout_s=0.1) as link):
        try:
            entry.send(9, id="nine", reply_to=work)
            wait_until(lambda: len(swallower.lost) >= 1, timeout_s=30)
        finally:
            swallower.close()
        # A restarted downstream on the same endpoints gets the work again.
        with ZmqProcessor(record, requests=b.requests, responses=b.responses,
                          name="B") as restarted:
            wait_until(lambda: ran != [] and link.unanswered == 0, timeout_s=30)
        counters = restarted.counters  # final: it stopped
    assert ran == [10]  # once: the repeats the link sent meanwhile were replays
    assert counters.received == counters.ok
    assert counters.replays == counters.received - 1
    assert swallower.lost[0].id == "nine" and swallower.lost[0].dedup
    assert link.counters.resent >= 1 and link.counters.gave_up == 0
    assert link.counters.forwarded == 1


def test_link_retries_need_the_targets_response_endpoints(
        processors: dict[str, ZmqProcessor]) -> None:
    requests_only = processors["B"].connect_endpoints.requests
    with pytest.raises(ValueError, match="retries need every target's response endpoint"):
        Link(processors["A"], requests_only, retries=1)
    link = Link(processors["A"], processors["B"], retries=2)
    assert "retries=2" in repr(link) and link.unanswered == 0


# -- cycles ------------------------------------------------------------------------------------

def test_a_link_refuses_to_feed_its_own_source(processors: dict[str, ZmqProcessor]) -> None:
    a = processors["A"]
    with pytest.raises(ValueError, match=r"link 'loop' would feed its own source .*: a cycle"):
        Link(a, a, name="loop")
    with pytest.raises(ValueError, match="a cycle"):
        Link([processors["B"], a.connect_endpoints], a.connect_endpoints.requests, name="loop")


def test_work_caught_in_a_cycle_of_links_stops_after_max_hops(
        processors: dict[str, ZmqProcessor]) -> None:
    # Two links built separately, a -> b and b -> a: each cannot see the cycle, so the
    # length of the path bounds it. Work: 1 + 6 ok answers, then a ChainTooLong error that
    # travels 6 more links as pings and is dropped.
    a, b = processors["A"], processors["C"]
    before = a.counters.ok + b.counters.ok
    t = topic()
    with Link(a, b, name="a->b", topic=t, max_hops=6) as ab, \
            Link(b, a, name="b->a", topic=t, max_hops=6) as ba, \
            ZmqReceiver(b.connect_endpoints.responses, topics=[t]) as out, \
            ZmqSender(a.connect_endpoints.requests) as entry, \
            ZmqSender(b.connect_endpoints.requests) as probe:
        wait_subscribed(probe, out, topic=t)
        entry.send(1, id="w", reply_to=t, meta={PATH_KEY: []})
        links = (ab, ba)
        wait_until_quiet = time.monotonic() + 30
        while sum(link.counters.dropped for link in links) < 1:
            assert time.monotonic() < wait_until_quiet, [link.counters for link in links]
            time.sleep(0.01)
        seen = []
        while True:
            try:
                seen.append(out.receive(timeout=0.5))
            except ReceiveTimeout:
                break
    counters = [link.counters for link in links]
    assert sum(c.forwarded for c in counters) == 6
    assert sum(c.failed for c in counters) == 1
    assert sum(c.errors for c in counters) == 6
    assert sum(c.dropped for c in counters) == 1
    assert a.counters.ok + b.counters.ok - before == 7
    errors = [r.meta[ERROR_KEY] for r in seen if r.status == PONG and r.meta
              and ERROR_KEY in r.meta]
    assert errors and errors[0]["type"] == LINK_FAILED
    assert errors[0]["exception"] == "ChainTooLong"
    assert "a link cycle?" in errors[0]["message"]


# -- any processor kind, and a crashed link -------------------------------------------------


async def ainc(x: int, resources: Any) -> int:
    return x + 1


def test_a_link_between_asyncio_processors_and_a_sync_one() -> None:
    upstream = AsyncZmqProcessor(ainc, name="A", concurrency=4).start()
    middle = AsyncZmqProcessor(double, name="B", threads=True, concurrency=2).start()
    last = ZmqProcessor(negate, name="C").start()
    work = topic()
    try:
        with Link(upstream, middle, topic=work), Link([middle], [last], topic=work), \
                upstream.sender() as entry, last.receiver(topics=[work]) as out, \
                last.sender() as probe:
            wait_subscribed(probe, out, topic=work)
            for i in range(100):
                entry.send(i, reply_to=work)
            got = collect(out, 100)
            assert sorted(r.value for r in got) == sorted(-(i + 1) * 2 for i in range(100))
            assert {tuple(full_path(r)) for r in got} == {("A", "B", "C")}
    finally:
        for proc in (upstream, middle, last):
            proc.stop()


class Fatal(BaseException):
    """Not an Exception: the link's per-response handling does not swallow it."""


def fatal_filter(value: Any) -> bool:
    raise Fatal("filter broke")


def test_a_crashed_link_thread_is_raised_from_stop(processors: dict[str, ZmqProcessor]) -> None:
    link = Link(processors["A"], processors["B"], name="ab", keep=fatal_filter).start()
    with processors["A"].sender() as sender:
        sender.send(1)
    wait_until(lambda: not link.forwarding)
    assert link.state == "running"  # it died; only stop() says so, once
    with pytest.raises(CrashedError) as info:
        link.stop()
    assert isinstance(info.value.cause, Fatal) and info.value.owner == "link 'ab'"
    assert link.counters.received == 1 and link.counters.forwarded == 0
    link.stop()


def test_zjobs_link_exits_1_with_the_cause_when_the_link_crashes(
        processors: dict[str, ZmqProcessor], tmp_path: Any) -> None:
    (tmp_path / "lkjobs_crash.py").write_text(
        "def keep(value):\n    raise KeyboardInterrupt('keep broke')\n")
    upstream, downstream = processors["A"].endpoints, processors["B"].endpoints
    done = threading.Event()

    def feed() -> None:  # until the link is subscribed, a response may pass it by: repeat
        with processors["A"].sender() as sender:
            while not done.wait(0.05):
                sender.send(1)

    feeder = threading.Thread(target=feed, name="test-link-feeder")
    feeder.start()
    try:  # in the main thread: the command installs signal handlers
        result = CliRunner().invoke(main, [
            "link", "--from", upstream.responses, "--from-requests", upstream.requests,
            "--to-requests", downstream.requests, "--keep", "lkjobs_crash:keep",
            "--app-dir", str(tmp_path), "--name", "crashy"])
    finally:
        done.set()
        feeder.join()
    assert result.exit_code == 1, result.output
    assert "Error: link 'crashy' crashed: KeyboardInterrupt: keep broke" in result.output
def test_a_batch_response_is_not_forwarded(processors: dict[str, ZmqProcessor]) -> None:
    # Batches are not chained: a link forwards "ok" responses only, so a batch's array of
    # results never reaches the next stage as one value.
    from zjobs.wire.batch import Batch

    a, b = processors["A"], processors["B"]
    t = topic()
    with (Link(a, b) as link, b.receiver(topics=[t]) as out, a.sender() as entry,
          b.sender() as probe):
        wait_subscribed(probe, out, topic=t)
        entry.send(Batch.of([1, 2, 3]), id="batch", reply_to=t)
        entry.send(5, id="after", reply_to=t)
        (response,) = collect(out, 1)
        assert (response.id, response.value) == ("after", 12)
        assert barrier(entry, out, t) == []
        assert link.counters.forwarded == 1
    assert a.counters.batches == 1 and b.counters.batches == 0
