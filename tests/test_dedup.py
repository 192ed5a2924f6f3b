"""ReplayWindow (bounded by entries, age and bytes) and the handler answering repeats from it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zjobs.aio import AsyncZmqProcessor, AsyncZmqReceiver, AsyncZmqSender
from zjobs.aio.testing import wait_subscribed
from zjobs.core.dedup import JOINED, ReplayWindow, Stored, mark_replay
from zjobs.core.handler import Counters, RequestHandler
from zjobs.errors import ReceiveTimeout
from zjobs.wire.codec import decode, encode
from zjobs.wire.protocol import Request, Response


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frames(rid: str, value: int = 1) -> list[bytes]:
    return [b"topic", encode({"v": 1, "id": rid, "status": "ok"}), encode(value)]


def test_new_then_repeat_is_answered_from_the_window() -> None:
    window = ReplayWindow()
    assert window.claim((b"t", "a")) is None
    assert window.running == 1
    assert window.complete((b"t", "a"), frames("a")) == 0
    assert window.running == 0
    assert window.claim((b"t", "a")) == Stored(frames("a"), False)
    assert len(window) == 1


def test_key_is_topic_and_typed_id() -> None:
    window = ReplayWindow()
    window.claim((b"t", "a"))
    window.complete((b"t", "a"), frames("a"))
    assert window.claim((b"u", "a")) is None  # another client's topic
    assert window.claim((b"t", b"a")) is None  # a bin id is not the str id


def test_failures_are_remembered_as_failures() -> None:
    window = ReplayWindow()
    window.claim((b"t", "a"))
    window.complete((b"t", "a"), frames("a"), failed=True)
    stored = window.claim((b"t", "a"))
    assert isinstance(stored, Stored) and stored.failed


def test_repeat_of_running_request_joins_it() -> None:
    window = ReplayWindow()
    assert window.claim((b"t", "a")) is None
    assert window.claim((b"t", "a")) is JOINED
    assert window.claim((b"t", "a")) is JOINED
    assert window.complete((b"t", "a"), frames("a")) == 2
    assert isinstance(window.claim((b"t", "a")), Stored)


def test_release_forgets_a_running_request() -> None:
    window = ReplayWindow()
    window.claim((b"t", "a"))
    window.claim((b"t", "a"))
    assert window.release((b"t", "a")) == 1
    assert window.release((b"t", "a")) == 0
    assert window.claim((b"t", "a")) is None


def test_size_bound_evicts_oldest() -> None:
    window = ReplayWindow(size=3)
    for i in range(5):
        window.claim((b"t", str(i)))
        window.complete((b"t", str(i)), frames(str(i)))
    assert len(window) == 3
    assert window.claim((b"t", "0")) is None
    assert window.claim((b"t", "1")) is None
    assert isinstance(window.claim((b"t", "4")), Stored)


def test_ttl_counts_from_take_up() -> None:
    clock = Clock()
    window = ReplayWindow(ttl_s=10, clock=clock)
    window.claim((b"t", "old"))
    clock.now += 6
    window.complete((b"t", "old"), frames("old"))
    window.claim((b"t", "new"))
    window.complete((b"t", "new"), frames("new"))
    clock.now += 5  # "old" taken up 11 s ago, "new" 5 s ago
    assert window.claim((b"t", "old")) is None
    assert isinstance(window.claim((b"t", "new")), Stored)
    clock.now += 100
    window.claim((b"t", "x"))
    window.complete((b"t", "x"), frames("x"))
    assert len(window) == 1  # expired entries swept on insert
    assert window.nbytes == sum(map(len, frames("x")))


def test_byte_bound() -> None:
    one = sum(map(len, frames("0")))
    window = ReplayWindow(max_bytes=one * 2)
    for i in range(4):
        window.claim((b"t", str(i)))
        window.complete((b"t", str(i)), frames(str(i)))
    assert len(window) == 2
    assert window.nbytes <= one * 2


def test_size_zero_remembers_nothing_but_still_joins() -> None:
    window = ReplayWindow(size=0)
    window.claim((b"t", "a"))
    assert window.claim((b"t", "a")) is JOINED
    assert window.complete((b"t", "a"), frames("a")) == 1
    assert window.claim((b"t", "a")) is None
    assert len(window) == 0


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(size=-1)


def test_mark_replay_adds_the_header_key_and_keeps_the_rest() -> None:
    original = frames("a", 7)
    marked = mark_replay(original)
    assert marked[0] == original[0] and marked[2] == original[2]
    assert decode(marked[1]) == {**decode(original[1]), "replay": True}


# -- the handler with a replay window ------------------------------------------------------


class Counting:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def run(self, request: Any, resources: Any) -> Any:
        self.calls += 1
        if self.fail:
            raise ValueError("side effect done, then failed")
        return request * 2


def req(value: Any = 1, rid: Any = "r1", topic: Any = "t", **fields: Any) -> list[bytes]:
    return [encode({"v": 1, "id": rid, "reply_to": topic, "dedup": True, **fields}),
            encode(value)]


def handled(handler: RequestHandler, frames: list[bytes]) -> Response:
    out = handler.handle(frames)
    assert out is not None
    return Response.from_frames(out)


def balanced(c: Counters) -> bool:
    return c.received == c.ok + c.failed + c.expired + c.bad_requests + c.pongs


def test_handler_answers_a_repeated_id_from_the_window() -> None:
    job = Counting()
    handler = RequestHandler(job, name="p", replay_window=ReplayWindow())
    first = handled(handler, req(21))
    again = handled(handler, req(21))
    assert job.calls == 1
    assert (first.value, first.replay) == (42, False)
    assert (again.value, again.replay, again.id, again.topic) == (42, True, "r1", b"t")
    assert handled(handler, req(21, topic="other")).replay is False  # another client
    assert handled(handler, req(21, rid=b"r1")).replay is False  # a bin id is another id
    assert job.calls == 3
    assert handler.counters == Counters(received=4, ok=4, replays=1)


def test_failures_are_replayed_not_rerun() -> None:
    job = Counting(fail=True)
    handler = RequestHandler(job, name="p", replay_window=ReplayWindow())
    assert handled(handler, req()).error is not None
    again = handled(handler, req())
    assert again.replay and again.error is not None and again.error.type == "JobFailed"
    assert job.calls == 1
    assert handler.counters == Counters(received=2, failed=2, replays=1)


def test_a_repeat_after_its_deadline_still_gets_the_answer() -> None:
    clock = [1000]
    job = Counting()
    handler = RequestHandler(job, name="p", replay_window=ReplayWindow(),
                             clock_ms=lambda: clock[0])
    assert handled(handler, req(deadline_ms=1500)).value == 2
    clock[0] = 2000
    assert handled(handler, req(deadline_ms=1500)).replay
    expired = handled(handler, req(rid="r2", deadline_ms=1500))
    assert expired.error is not None and expired.error.type == "DeadlineExceeded"
    assert handled(handler, req(rid="r2", deadline_ms=1500)).error is not None
    assert job.calls == 1
    assert handler.counters == Counters(received=4, ok=2, expired=2, replays=1)


def test_pings_and_bad_requests_are_not_remembered() -> None:
    window = ReplayWindow()
    handler = RequestHandler(Counting(), name="p", replay_window=window)
    for _ in range(2):
        assert handled(handler, req(None, ping=True)).status == "pong"
        assert handled(handler, [encode({"v": 1, "id": "x", "reply_to": "t"})]).error
    assert len(window) == 0 and window.running == 0
    assert handler.counters == Counters(received=4, bad_requests=2, pongs=2)


def test_a_repeat_of_a_running_request_is_answered_by_its_response() -> None:
    # The steps an asyncio processor takes: admit both, the job runs once, one response.
    handler = RequestHandler(Counting(), name="p", replay_window=ReplayWindow())
    original = handler.admit(req(5))
    assert handler.admit(req(5)) is None
    assert not balanced(handler.counters)
    assert isinstance(original, Request)
    frames = handler.answer(original, 10)
    assert Response.from_frames(frames).value == 10
    assert handler.counters == Counters(received=2, ok=2, replays=1)
    assert handled(handler, req(5)).replay


@pytest.mark.parametrize("mark", [None, False, 1, "yes"])
def test_only_requests_marked_dedup_true_are_remembered(mark: Any) -> None:
    # A ZJP/1 client may reuse an id once it has its answer: unmarked requests always run.
    job = Counting()
    window = ReplayWindow()
    handler = RequestHandler(job, name="p", replay_window=window)
    for _ in range(2):
        assert handled(handler, req(dedup=mark)).replay is False
    assert job.calls == 2
    assert len(window) == 0 and window.running == 0


def test_without_a_window_repeats_run_again() -> None:
    job = Counting()
    handler = RequestHandler(job, name="p")
    handled(handler, req())
    assert handled(handler, req()).replay is False
    assert job.calls == 2


async def test_a_repeat_arriving_while_the_original_runs_is_joined_by_the_async_processor(
) -> None:
    # A concurrent processor takes the repeat up while the original still runs: the job
    # runs once and one response answers both (the client needs only one).
    runs: list[Any] = []
    release = asyncio.Event()

    async def slow(request: Any, resources: Any) -> Any:
        runs.append(request)
        await release.wait()
        return request

    async with AsyncZmqProcessor(slow, concurrency=4) as processor:
        ep = processor.connect_endpoints
        async with AsyncZmqSender(ep.requests) as sender, \
                AsyncZmqReceiver(ep.responses, topics=("t",)) as receiver:
            await wait_subscribed(sender, receiver, topic="t")
            for _ in range(3):
                await sender.send("job", id="r-1", reply_to="t", dedup=True)
            while processor.counters.received - processor.counters.pongs < 3:
                await asyncio.sleep(0.01)
            release.set()
            answer = await receiver.receive(timeout=10)
            with pytest.raises(ReceiveTimeout):
                await receiver.receive(timeout=0.3)
    assert (answer.id, answer.value, answer.replay) == ("r-1", "job", False)
    assert runs == ["job"]
    counters = processor.counters
    assert counters.replays == 2
    assert counters.ok == 3 and counters.received == counters.pongs + 3
