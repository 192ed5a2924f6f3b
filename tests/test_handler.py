"""zjobs.core.handler: the transport-free processor core, frames in and frames out, and the
job-call flow both processors drive, step by step in every order that matters."""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zjobs.core.dedup import ReplayWindow
from zjobs.core.handler import Counters, JobCall, RequestHandler, new_instance_id
from zjobs.core.job import MISS
from zjobs.processor.async_job import JobCalls
from zjobs.wire.protocol import STATUSES, Request, Response

T = b"topic"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def request(value: Any = None, **fields: Any) -> list[bytes]:
    return [pack({"v": 1, "id": "r1", "reply_to": "topic", **fields}), pack(value)]


def answer(handler: RequestHandler, frames: list[bytes]) -> tuple[bytes, dict[str, Any], Any]:
    out = handler.handle(frames)
    assert out is not None
    assert len(out) == 3
    return out[0], unpack(out[1]), unpack(out[2])


def balanced(counters: Counters) -> bool:
    c = counters
    return c.received == c.ok + c.failed + c.expired + c.bad_requests + c.pongs


def echo(request: Any, resources: Any) -> Any:
    return request


def boom(request: Any, resources: Any) -> Any:
    raise ValueError("boom")


class Square:
    def __init__(self) -> None:
        self.calls = 0

    def run(self, request: Any, resources: Any) -> Any:
        self.calls += 1
        return request * request


class DictCache:
    """A job with get_cache/put_cache over a dict, recording what the handler does."""

    def __init__(self, fail_on: Any = None) -> None:
        self.store: dict[Any, Any] = {}
        self.runs: list[Any] = []
        self.puts: list[tuple[Any, Any, Any]] = []
        self.fail_on = fail_on

    def run(self, request: Any, resources: Any) -> Any:
        self.runs.append(request)
        if request == self.fail_on:
            raise RuntimeError("no")
        return None if request == "none" else f"value of {request}"

    def get_cache(self, request: Any, resources: Any) -> Any:
        return self.store.get(request, MISS)

    def put_cache(self, request: Any, response: Any, resources: Any) -> None:
        self.puts.append((request, response, resources))
        self.store[request] = response


def test_ok_response() -> None:
    handler = RequestHandler(Square(), name="sq", instance="0123456789abcdef")
    topic, head, body = answer(handler, request(7))
    assert topic == T
    assert head == {"v": 1, "id": "r1", "status": "ok", "cached": False, "processor": "sq",
                    "instance": "0123456789abcdef"}
    assert body == 49
    assert handler.counters == Counters(received=1, ok=1)


def test_function_job_gets_the_resources() -> None:
    seen = []
    handler = RequestHandler(lambda r, res: seen.append(res) or r, name="f", resources="RES")
    assert answer(handler, request([1]))[2] == [1]
    assert seen == ["RES"]


def test_instance_is_random_when_not_given() -> None:
    a, b = RequestHandler(echo, name="e"), RequestHandler(echo, name="e")
    assert a.instance != b.instance
    assert len(a.instance) == 16 and int(a.instance, 16) >= 0
    assert len(new_instance_id()) == 16


def test_bin_id_and_meta_echoed() -> None:
    handler = RequestHandler(echo, name="e")
    frames = [pack({"v": 1, "id": b"\x00\x01", "meta": {"k": [1, 2], 3: None}}), pack("x")]
    topic, head, _ = answer(handler, frames)
    assert topic == b""
    assert head["id"] == b"\x00\x01"
    assert head["meta"] == {"k": [1, 2], 3: None}


def test_job_exception_is_job_failed() -> None:
    handler = RequestHandler(boom, name="b")
    _, head, body = answer(handler, request(1, meta={"m": 1}))
    assert head["status"] == "error"
    assert head["error"] == {"type": "JobFailed", "message": "ValueError: boom",
                             "exception": "ValueError"}
    assert head["meta"] == {"m": 1}
    assert head["cached"] is False
    assert body is None
    assert handler.counters == Counters(received=1, failed=1)


def test_system_exit_is_job_failed_and_handler_goes_on() -> None:
    def leave(request: Any, resources: Any) -> Any:
        if request == "exit":
            raise SystemExit(3)
        return request

    handler = RequestHandler(leave, name="x")
    head = answer(handler, request("exit"))[1]
    assert head["error"]["type"] == "JobFailed"
    assert head["error"]["message"] == "SystemExit: 3"
    assert answer(handler, request("next"))[2] == "next"


def test_keyboard_interrupt_is_not_swallowed() -> None:
    def interrupt(request: Any, resources: Any) -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        RequestHandler(interrupt, name="k").handle(request(1))


@pytest.mark.parametrize("value", [{1, 2}, object(), 2**70, {"a": [{"b": {1}}]}])
def test_unencodable_return_is_job_failed(value: Any) -> None:
    handler = RequestHandler(lambda r, res: value, name="u")
    head = answer(handler, request(1))[1]
    assert head["error"]["type"] == "JobFailed"
    # PROTOCOL.md: an unencodable value is named EncodeError, whatever msgpack raised.
    assert head["error"]["exception"] == "EncodeError"
    assert head["error"]["message"].startswith("EncodeError: cannot encode ")
    assert answer(RequestHandler(echo, name="e"), request(1))[2] == 1
    assert handler.counters.failed == 1


def test_exception_whose_str_fails_is_still_job_failed() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    def job(request: Any, resources: Any) -> Any:
        raise Weird

    handler = RequestHandler(job, name="w")
    head = answer(handler, request(1))[1]
    assert head["error"]["type"] == "JobFailed"
    assert head["error"]["exception"] == "Weird"
    assert head["error"]["message"].startswith("Weird: ")
    assert handler.counters == Counters(received=1, failed=1)


def test_deadline_passed_is_deadline_exceeded_and_job_not_run() -> None:
    job = Square()
    handler = RequestHandler(job, name="sq", clock_ms=lambda: 1000)
    _, head, body = answer(handler, request(3, deadline_ms=999, meta={"m": 2}))
    assert head["error"]["type"] == "DeadlineExceeded"
    assert head["id"] == "r1"
    assert head["meta"] == {"m": 2}
    assert body is None
    assert job.calls == 0
    assert handler.counters == Counters(received=1, expired=1)


def test_deadline_now_or_later_runs() -> None:
    handler = RequestHandler(Square(), name="sq", clock_ms=lambda: 1000)
    assert answer(handler, request(3, deadline_ms=1000))[2] == 9
    assert answer(handler, request(4, deadline_ms=5000))[2] == 16


def test_default_clock_is_unix_milliseconds() -> None:
    import time

    handler = RequestHandler(echo, name="e")
    now = int(time.time() * 1000)
    assert answer(handler, request(1, deadline_ms=now + 60_000))[1]["status"] == "ok"
    assert answer(handler, request(1, deadline_ms=now - 60_000))[1]["status"] == "error"


def test_ping_is_a_pong_without_running_or_checking_the_deadline() -> None:
    job = Square()
    handler = RequestHandler(job, name="sq", instance="i", clock_ms=lambda: 10**15)
    frames = [pack({"v": 1, "id": "p", "reply_to": b"t", "ping": True, "deadline_ms": 1,
                    "meta": {"a": 1}}), b"\xc1"]
    topic, head, body = answer(handler, frames)
    assert topic == b"t"
    assert head == {"v": 1, "id": "p", "status": "pong", "cached": False, "processor": "sq",
                    "instance": "i", "meta": {"a": 1}, "ext": ["batch"], "batch_max": 4096}
    assert body is None
    assert job.calls == 0
    assert handler.counters == Counters(received=1, pongs=1)


def test_cache_miss_runs_and_fills_the_cache_then_hit_answers_cached() -> None:
    job = DictCache()
    handler = RequestHandler(job, name="c", resources="R")
    head = answer(handler, request("a"))[1]
    assert head["cached"] is False
    assert job.puts == [("a", "value of a", "R")]
    _, head, body = answer(handler, request("a", meta={"m": 1}))
    assert head["cached"] is True
    assert head["status"] == "ok"
    assert head["meta"] == {"m": 1}
    assert body == "value of a"
    assert job.runs == ["a"]
    assert handler.counters == Counters(received=2, ok=2, cache_hits=1)


def test_cached_none_is_a_hit() -> None:
    job = DictCache()
    handler = RequestHandler(job, name="c")
    first = handler.handle(request("none"))
    assert first is not None and unpack(first[1])["cached"] is False
    out = handler.handle(request("none"))
    assert out is not None
    assert unpack(out[1])["cached"] is True
    assert out[2] == b"\xc0"
    assert job.runs == ["none"]


def test_failed_run_does_not_fill_the_cache() -> None:
    job = DictCache(fail_on="bad")
    handler = RequestHandler(job, name="c")
    assert answer(handler, request("bad"))[1]["error"]["type"] == "JobFailed"
    assert answer(handler, request("bad"))[1]["cached"] is False
    assert job.puts == []
    assert job.runs == ["bad", "bad"]


def test_unencodable_result_does_not_fill_the_cache() -> None:
    job = DictCache()
    job.run = lambda request, resources: {1, 2}  # type: ignore[method-assign]
    handler = RequestHandler(job, name="c")
    assert answer(handler, request("s"))[1]["error"]["type"] == "JobFailed"
    assert job.puts == []


def test_deadline_exceeded_is_not_answered_from_the_cache() -> None:
    job = DictCache()
    job.store["a"] = "cached"
    handler = RequestHandler(job, name="c", clock_ms=lambda: 100)
    assert answer(handler, request("a", deadline_ms=50))[1]["error"]["type"] == "DeadlineExceeded"
    assert handler.counters.cache_hits == 0


def test_put_cache_failure_still_answers_ok(caplog: pytest.LogCaptureFixture) -> None:
    job = DictCache()

    def broken(request: Any, response: Any, resources: Any) -> None:
        raise OSError("disk full")

    job.put_cache = broken  # type: ignore[method-assign]
    handler = RequestHandler(job, name="c")
    with caplog.at_level(logging.WARNING, logger="zjobs.core.handler"):
        assert answer(handler, request("a"))[2] == "value of a"
    assert "put_cache failed" in caplog.text
    assert handler.counters.ok == 1


def test_get_cache_failure_is_job_failed() -> None:
    job = DictCache()

    def broken(request: Any, resources: Any) -> Any:
        raise KeyError("gone")

    job.get_cache = broken  # type: ignore[method-assign]
    handler = RequestHandler(job, name="c")
    assert answer(handler, request("a"))[1]["error"]["message"] == "KeyError: 'gone'"
    assert handler.counters.failed == 1


def test_bad_request_with_usable_reply_to_is_answered() -> None:
    handler = RequestHandler(echo, name="e")
    topic, head, body = answer(handler, [pack({"v": 1, "id": "r1", "reply_to": "topic",
                                               "meta": {"m": 1}}), b"\xc1"])
    assert topic == T
    assert head["status"] == "error"
    assert head["error"]["type"] == "BadRequest"
    assert head["id"] == "r1"
    assert head["meta"] == {"m": 1}
    assert body is None
    assert handler.counters == Counters(received=1, bad_requests=1)


def test_unsupported_version_is_answered() -> None:
    handler = RequestHandler(echo, name="e")
    head = answer(handler, [pack({"v": 2, "id": b"x"}), pack(1)])[1]
    assert head["error"]["type"] == "UnsupportedVersion"
    assert head["id"] == b"x"
    assert handler.counters.bad_requests == 1


def test_bad_id_is_answered_with_nil_id() -> None:
    handler = RequestHandler(echo, name="e")
    head = answer(handler, [pack({"v": 1, "id": "", "reply_to": "topic"}), pack(1)])[1]
    assert "id" in head and head["id"] is None
    assert head["error"]["type"] == "BadRequest"


@pytest.mark.parametrize("frames", [
    [b"\xc1", pack(1)],
    [pack([1]), pack(1)],
    [pack({"v": 1, "id": "r", "reply_to": "\x00x"}), pack(1)],
    [pack({"v": 1, "id": "r", "reply_to": 5})],
    [],
])
def test_dropped_messages_are_counted_and_logged(
    frames: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    handler = RequestHandler(echo, name="e")
    with caplog.at_level(logging.WARNING, logger="zjobs.core.handler"):
        assert handler.handle(frames) is None
    assert handler.counters == Counters(received=1, bad_requests=1, dropped=1)
    assert "dropped" in caplog.text


def test_drop_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    handler = RequestHandler(echo, name="e")
    with caplog.at_level(logging.WARNING, logger="zjobs.core.handler"):
        for _ in range(50):
            assert handler.handle([b"\xc1", b""]) is None
    assert len(caplog.records) == 1
    assert handler.counters.dropped == 50


def test_counters_invariant_over_a_mixed_stream() -> None:
    job = DictCache(fail_on="bad")
    handler = RequestHandler(job, name="mix", clock_ms=lambda: 500)
    stream = [
        request("a"), request("a"), request("bad"), request("x", deadline_ms=1),
        request(None, ping=True), [b"\xc1", b""], [pack({"v": 1, "id": "r"}), b"\xc1"],
        [pack({"v": 7, "id": "r"}), pack(1)], request("none"), request("none"),
        [pack({"v": 1, "id": "r", "reply_to": "topic"})],
    ]
    for frames in stream:
        handler.handle(frames)
        assert balanced(handler.counters)
    assert handler.counters == Counters(received=11, ok=4, failed=1, expired=1, bad_requests=4,
                                        dropped=1, cache_hits=2, pongs=1)
    assert handler.counters.as_dict() == {
        "received": 11, "ok": 4, "failed": 1, "expired": 1, "bad_requests": 4, "dropped": 1,
        "cache_hits": 2, "pongs": 1, "replays": 0, "batches": 0}


def test_counters_are_a_frozen_snapshot() -> None:
    handler = RequestHandler(echo, name="e")
    before = handler.counters
    handler.handle(request(1))
    assert before.received == 0
    assert handler.counters.received == 1
    with pytest.raises(AttributeError):
        before.received = 5  # type: ignore[misc]


# -- no input stops the handler ------------------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
            | st.text(max_size=20) | st.binary(max_size=20))
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.integers(-(2**63), 2**64 - 1), inner, max_size=4),
    max_leaves=12,
)
_field_values = {
    "v": st.sampled_from([1, 1, 1, 2, True, 1.0, None]) | _values,
    "id": st.text(min_size=1, max_size=8) | st.binary(min_size=1, max_size=8) | _values,
    "reply_to": st.text(max_size=6) | st.binary(max_size=6) | _values,
    "ping": st.booleans() | _values,
    "deadline_ms": st.integers(0, 2**62) | _values,
    "meta": st.dictionaries(st.text(max_size=4), _values, max_size=3) | _values,
    "other": _values,
}
_headers = st.fixed_dictionaries({}, optional=_field_values)


def _check(handler: RequestHandler, frames: list[bytes]) -> None:
    out = handler.handle(frames)
    if out is not None:
        response = Response.from_frames(out)
        assert response.status in STATUSES
        assert not out[0].startswith(b"\x00")
    assert balanced(handler.counters)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=_headers, body=_values | st.binary(max_size=10), extra=st.integers(0, 2))
def test_structured_garbage_never_breaks_the_handler(header: dict[str, Any], body: Any,
                                                     extra: int) -> None:
    handler = RequestHandler(echo, name="fuzz", clock_ms=lambda: 10**12)
    frames = [pack(header), body if isinstance(body, bytes) else pack(body)] + [b"x"] * extra
    _check(handler, frames)
    _check(handler, request("after"))


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.binary(max_size=40), max_size=4))
def test_random_bytes_never_break_the_handler(frames: list[bytes]) -> None:
    handler = RequestHandler(echo, name="fuzz")
    _check(handler, frames)
    assert answer(handler, request("after"))[2] == "after"


# -- the job-call flow, driven step by step (no sockets, no threads, no event loop) ---------

def admitted(handler: RequestHandler, frames: list[bytes]) -> Request:
    out = handler.admit(frames)
    assert isinstance(out, Request), out
    return out


def step(flow: Any, value: Any = None, *, throw: BaseException | None = None) -> Any:
    """Send the previous call's result (or throw its exception); the next JobCall, or the
    flow's frames when it ended."""
    try:
        return flow.throw(throw) if throw is not None else flow.send(value)
    except StopIteration as done:
        return done.value


def test_flow_cache_hit_answers_cached_without_running() -> None:
    handler = RequestHandler(DictCache(), name="c", resources="R")
    flow = handler.flow(admitted(handler, request("a")))
    assert step(flow) == JobCall("get_cache", ("a", "R"))
    frames = step(flow, "stored")
    assert unpack(frames[1])["cached"] is True and unpack(frames[2]) == "stored"
    assert handler.counters == Counters(received=1, ok=1, cache_hits=1)


def test_flow_cache_miss_runs_answers_then_puts() -> None:
    handler = RequestHandler(DictCache(), name="c", resources="R")
    flow = handler.flow(admitted(handler, request("a")))
    assert step(flow) == JobCall("get_cache", ("a", "R"))
    assert step(flow, MISS) == JobCall("run", ("a", "R"))
    assert step(flow, "ran") == JobCall("put_cache", ("a", "ran", "R"))
    assert handler.counters.ok == 1  # answered (and counted) before the put
    frames = step(flow, None)
    assert unpack(frames[2]) == "ran" and unpack(frames[1])["cached"] is False


def test_flow_put_failure_still_answers_ok(caplog: pytest.LogCaptureFixture) -> None:
    handler = RequestHandler(DictCache(), name="c")
    flow = handler.flow(admitted(handler, request("a")))
    step(flow)
    step(flow, MISS)
    step(flow, "ran")
    with caplog.at_level(logging.WARNING, logger="zjobs.core.handler"):
        frames = step(flow, throw=OSError("disk full"))
    assert unpack(frames[1])["status"] == "ok" and "put_cache failed" in caplog.text
    assert handler.counters == Counters(received=1, ok=1)


def test_flow_job_raising_is_job_failed_and_skips_the_put() -> None:
    handler = RequestHandler(DictCache(), name="c")
    flow = handler.flow(admitted(handler, request("a")))
    step(flow)
    assert step(flow, MISS).step == "run"
    frames = step(flow, throw=ValueError("boom"))
    assert unpack(frames[1])["error"]["message"] == "ValueError: boom"
    assert handler.counters == Counters(received=1, failed=1)


def test_flow_get_cache_raising_is_job_failed_and_does_not_run() -> None:
    handler = RequestHandler(DictCache(), name="c")
    flow = handler.flow(admitted(handler, request("a")))
    step(flow)
    frames = step(flow, throw=KeyError("gone"))
    assert unpack(frames[1])["error"]["type"] == "JobFailed"


def test_flow_unencodable_result_is_job_failed_and_not_put() -> None:
    handler = RequestHandler(DictCache(), name="c")
    flow = handler.flow(admitted(handler, request("a")))
    step(flow)
    step(flow, MISS)
    frames = step(flow, {1, 2})  # a set: msgpack cannot encode it
    assert unpack(frames[1])["error"]["type"] == "JobFailed"
    assert handler.counters == Counters(received=1, failed=1)


def test_flow_of_a_job_without_cache_is_one_run() -> None:
    handler = RequestHandler(echo, name="e", resources="R")
    flow = handler.flow(admitted(handler, request(5)))
    assert step(flow) == JobCall("run", (5, "R"))
    assert unpack(step(flow, 5)[2]) == 5


def test_deadline_expired_is_answered_by_admit_with_no_flow() -> None:
    handler = RequestHandler(DictCache(), name="c", clock_ms=lambda: 100)
    out = handler.admit(request("a", deadline_ms=99))
    assert isinstance(out, list) and unpack(out[1])["error"]["type"] == "DeadlineExceeded"
    assert handler.counters == Counters(received=1, expired=1)


def test_dedup_repeat_while_running_is_answered_when_the_original_completes() -> None:
    handler = RequestHandler(echo, name="e", replay_window=ReplayWindow())
    dedup = request("x", dedup=True)
    flow = handler.flow(admitted(handler, dedup))
    assert step(flow).step == "run"  # the job is running now
    assert handler.admit(dedup) is None  # the repeat joins it: nothing to publish yet
    frames = step(flow, "x")
    assert unpack(frames[2]) == "x"
    # Both received messages are answered by that one response: one ran, one replayed.
    assert handler.counters == Counters(received=2, ok=2, replays=1)
    again = handler.admit(dedup)  # later repeats come from the window, marked
    assert isinstance(again, list) and unpack(again[1])["replay"] is True
    assert handler.counters == Counters(received=3, ok=3, replays=2)


def test_dedup_repeat_of_a_failed_request_replays_the_failure() -> None:
    handler = RequestHandler(boom, name="b", replay_window=ReplayWindow())
    dedup = request("x", dedup=True)
    flow = handler.flow(admitted(handler, dedup))
    step(flow)
    assert handler.admit(dedup) is None
    step(flow, throw=ValueError("boom"))
    assert handler.counters == Counters(received=2, failed=2, replays=1)


def test_an_interrupted_flow_closes_without_answering() -> None:
    handler = RequestHandler(echo, name="e")
    flow = handler.flow(admitted(handler, request(1)))
    step(flow)
    flow.close()  # what a driver does on KeyboardInterrupt or cancellation
    assert handler.counters == Counters(received=1)


class Scenario:
    """A job with a cache whose every call is scripted, the same for both drivers."""

    def __init__(self, hit: Any = MISS, run: Any = "ran", put_raises: bool = False) -> None:
        self.hit, self.result, self.put_raises = hit, run, put_raises
        self.calls: list[str] = []

    def get_cache(self, request: Any, resources: Any) -> Any:
        self.calls.append("get")
        return self.hit

    def run(self, request: Any, resources: Any) -> Any:
        self.calls.append("run")
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def put_cache(self, request: Any, response: Any, resources: Any) -> None:
        self.calls.append("put")
        if self.put_raises:
            raise OSError("disk full")


SCENARIOS = {
    "hit": dict(hit="cached"),
    "miss": dict(),
    "put fails": dict(put_raises=True),
    "job raises": dict(run=ValueError("no")),
    "job exits": dict(run=SystemExit(3)),
    "unencodable": dict(run={1, 2}),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_sync_and_async_drivers_answer_alike(scenario: str) -> None:
    outcomes = []
    for drive in ("sync", "async"):
        job = Scenario(**SCENARIOS[scenario])  # type: ignore[arg-type]
        handler = RequestHandler(job, name="s", instance="0" * 16)
        flow = handler.flow(admitted(handler, request("a")))
        frames = (handler.drive(flow) if drive == "sync"
                  else await JobCalls(job).drive(flow))
        outcomes.append((frames[0], unpack(frames[1]), frames[2], job.calls, handler.counters))
    assert outcomes[0] == outcomes[1]


async def test_both_drivers_let_keyboard_interrupt_through() -> None:
    def interrupt(request: Any, resources: Any) -> Any:
        raise KeyboardInterrupt

    handler = RequestHandler(interrupt, name="i")
    with pytest.raises(KeyboardInterrupt):
        handler.drive(handler.flow(admitted(handler, request(1))))
    with pytest.raises(KeyboardInterrupt):
        await JobCalls(interrupt).drive(handler.flow(admitted(handler, request(1))))
    assert handler.counters == Counters(received=2)



def interrupt(request: Any, resources: Any) -> Any:
    raise KeyboardInterrupt


def unencodable(request: Any, resources: Any) -> Any:
    return {1, 2}


def exits(request: Any, resources: Any) -> Any:
    raise SystemExit(3)


@pytest.mark.parametrize("job", [echo, boom, exits, unencodable, interrupt])
@pytest.mark.parametrize("fields", [{}, {"dedup": True}, {"reply_to": b"bin"}, {"id": b"\x01"}])
def test_a_plain_request_to_a_job_without_cache_answers_as_its_flow_does(
        job: Any, fields: dict[str, Any]) -> None:
    # handle() runs such a request at once, without the flow; the answer, the counters and
    # the load must be what admit(), flow() and drive() make of it.
    outcomes = []
    for direct in (True, False):
        handler = RequestHandler(job, name="s", instance="0" * 16,
                                 replay_window=ReplayWindow(8))
        frames = request("a", **fields)
        try:
            if direct:
                out: Any = handler.handle(frames)
            else:
                admitted_ = handler.admit(frames)
                assert isinstance(admitted_, Request)
                started = handler.load.start()
                try:
                    out = handler.drive(handler.flow(admitted_))
                finally:
                    handler.load.finish(started)
        except KeyboardInterrupt:
            out = "KeyboardInterrupt"
        load = handler.load.snapshot()
        outcomes.append((out, handler.counters, load.jobs, load.in_flight))
    assert outcomes[0] == outcomes[1]


# -- the batch extension ------------------------------------------------------------------------

def batch(items: list[Any], **fields: Any) -> list[bytes]:
    return [pack({"v": 1, "id": "b1", "reply_to": "topic", **fields}), pack(items), b"batch"]


def test_batch_answers_every_item_in_order_and_counts_each() -> None:
    job = Square()
    handler = RequestHandler(job, name="sq")
    topic, head, body = answer(handler, batch([1, 2, 3, "x"]))
    assert topic == T
    assert (head["status"], head["id"], head["cached"]) == ("batch", "b1", False)
    assert body == [1, 4, 9, None]
    [[index, error]] = head["errors"]
    assert index == 3
    assert (error["type"], error["exception"]) == ("JobFailed", "TypeError")
    assert job.calls == 4
    assert handler.counters == Counters(received=4, ok=3, failed=1, batches=1)
    assert "error" not in head


def test_batch_items_use_the_cache_one_by_one() -> None:
    job = DictCache(fail_on="bad")
    job.store["a"] = "cached a"
    handler = RequestHandler(job, name="c")
    _, head, body = answer(handler, batch(["a", "b", "bad", "b"]))
    assert body == ["cached a", "value of b", None, "value of b"]
    # Items run in order, as requests would: the first "b" filled the cache for the second.
    assert job.runs == ["b", "bad"]
    assert [p[:2] for p in job.puts] == [("b", "value of b")]
    assert handler.counters == Counters(received=4, ok=3, failed=1, cache_hits=2, batches=1)
    job.store["b"] = "cached b"
    _, head, body = answer(handler, batch(["a", "b"]))
    assert head["cached"] is True and body == ["cached a", "cached b"]


def test_batch_item_with_an_unencodable_value_fails_alone() -> None:
    handler = RequestHandler(lambda request, _: {1} if request == 2 else request, name="e")
    _, head, body = answer(handler, batch([1, 2, 3]))
    assert body == [1, None, 3]
    assert [index for index, _ in head["errors"]] == [1]


def test_batch_deadline_is_checked_at_take_up_and_before_each_item() -> None:
    now = [100]
    job = Square()

    def clock() -> int:
        now[0] += 10
        return now[0]

    handler = RequestHandler(job, name="sq", clock_ms=clock)
    _, head, body = answer(handler, batch([1, 2], deadline_ms=50))  # passed at take-up
    assert head["status"] == "error" and head["error"]["type"] == "DeadlineExceeded"
    assert body is None and job.calls == 0
    now[0] = 100
    _, head, body = answer(handler, batch([1, 2, 3, 4], deadline_ms=135))
    assert body == [1, 4, None, None]  # the clock passed 135 after two items
    assert [(i, e["type"]) for i, e in head["errors"]] == [(2, "DeadlineExceeded"),
                                                           (3, "DeadlineExceeded")]
    assert handler.counters == Counters(received=6, ok=2, expired=4, batches=2)


def test_refused_batches_are_bad_requests_counted_once() -> None:
    handler = RequestHandler(Square(), name="sq", batch_max=3)
    for frames in (batch([1, 2, 3, 4]), batch([]), batch(5), batch([1], ping=True),
                   [*batch([1]), b"extra"]):
        _, head, body = answer(handler, frames)
        assert (head["status"], head["id"], head["error"]["type"]) == ("error", "b1",
                                                                       "BadRequest")
        assert body is None
    assert handler.counters == Counters(received=5, bad_requests=5)
    assert answer(handler, batch([1, 2, 3]))[2] == [1, 4, 9]


def test_batches_off_refuses_them_as_a_base_processor_does() -> None:
    job = Square()
    handler = RequestHandler(job, name="sq", batch_max=0)
    _, head, _ = answer(handler, batch([1, 2], meta={"m": 1}))
    assert (head["error"]["type"], head["id"], head["meta"]) == ("BadRequest", "b1", {"m": 1})
    assert "3" in head["error"]["message"]  # the frame count
    assert job.calls == 0
    _, pong, _ = answer(handler, request(None, ping=True))
    assert "ext" not in pong and "batch_max" not in pong


def test_batch_repeat_is_replayed_from_the_window_by_batch_id() -> None:
    from zjobs.core.dedup import ReplayWindow

    job = Square()
    handler = RequestHandler(job, name="sq", replay_window=ReplayWindow())
    first = answer(handler, batch([1, 2, "x"], dedup=True))
    again = answer(handler, batch([1, 2, "x"], dedup=True))
    assert job.calls == 3
    assert again[1].pop("replay") is True
    assert again == first
    assert handler.counters == Counters(received=6, ok=4, failed=2, replays=3, batches=2)
    assert balanced(handler.counters)
    answer(handler, batch([1, 2, "x"]))  # not marked: runs again
    assert job.calls == 6
