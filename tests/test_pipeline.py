"""Pipelines over real processors (sync and asyncio): results, stage errors, sharing,
connect mode, a crashed link."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from zjobs import (
    CrashedError,
    Endpoints,
    Pipeline,
    RemoteError,
    Stage,
    StageError,
    ZmqProcessor,
    ZmqReceiver,
)
from zjobs.aio import AsyncZmqProcessor
from zjobs.compose.link import Link
from zjobs.errors import CallTimeout, ClosedError, NotReady, ReceiveTimeout
from zjobs.testing import wait_subscribed, wait_until
from zjobs.wire.chain import PATH_KEY, full_path


def inc(x: int, resources: Any) -> int:
    return x + 1


def double(x: int, resources: Any) -> int:
    if x == 1001:
        raise ValueError("unlucky")
    return x * 2


def negate(x: int, resources: Any) -> int:
    if x == 0:
        raise ZeroDivisionError("nothing to negate")
    return -x


def expected(x: int) -> int:
    return -((x + 1) * 2)


@pytest.fixture
def stages() -> Iterator[list[ZmqProcessor]]:
    procs = [ZmqProcessor(inc, name="A"), ZmqProcessor(double, name="B"),
             ZmqProcessor(negate, name="C")]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def test_call_returns_c_of_b_of_a(stages: list[ZmqProcessor]) -> None:
    with Pipeline(stages) as pipeline:
        assert pipeline.call(1) == expected(1)
        response = pipeline.call_response(2)
        assert response.value == expected(2) and response.processor == "C"
        assert response.meta == {PATH_KEY: ["A", "B"]}
        assert full_path(response) == ["A", "B", "C"]
        assert pipeline.ping() > 0


def test_1000_submits_in_flight_all_answered(stages: list[ZmqProcessor]) -> None:
    with Pipeline(stages) as pipeline:
        futures = [pipeline.submit(i) for i in range(1000)]
        assert [f.result(timeout=60) for f in futures] == [expected(i) for i in range(1000)]
        assert pipeline.unmatched == 0


def test_an_error_in_the_middle_stage_names_it_and_the_chain_keeps_serving(
        stages: list[ZmqProcessor]) -> None:
    with Pipeline(stages) as pipeline:
        with pytest.raises(StageError) as info:
            pipeline.call(1000)  # A: 1001, B raises
        error = info.value
        assert isinstance(error, RemoteError)
        assert error.stage == "B" and error.processor == "B"
        assert error.type == "JobFailed" and error.exception == "ValueError"
        assert error.path == ["A", "B"]
        assert "stage 'B' failed" in str(error) and "unlucky" in str(error)
        assert pipeline.call(3) == expected(3)
        futures = [pipeline.submit(i) for i in range(995, 1005)]
        outcomes = [f.exception() or f.result() for f in futures]
        assert isinstance(outcomes[5], StageError) and outcomes[5].stage == "B"
        assert [o for i, o in enumerate(outcomes) if i != 5] == [
            expected(i) for i in range(995, 1005) if i != 1000]


def test_an_error_in_the_last_stage_names_it(stages: list[ZmqProcessor]) -> None:
    with Pipeline(stages) as pipeline:
        with pytest.raises(StageError) as info:
            pipeline.call(-1)  # A: 0, B: 0, C raises
        assert info.value.stage == "C" and info.value.path == ["A", "B", "C"]
        assert info.value.exception == "ZeroDivisionError"
        response = pipeline.call_response(-1)
        assert response.error is not None and response.processor == "C"


def test_a_failing_transform_names_the_link(stages: list[ZmqProcessor]) -> None:
    a, b, c = stages

    def strict(value: int) -> int:
        if value > 100:
            raise OverflowError("too big")
        return value

    with Pipeline([a, Stage.of(b, transform=strict), c]) as pipeline:
        with pytest.raises(StageError) as info:
            pipeline.call(500)
        assert info.value.stage == "A->B" and info.value.type == "LinkFailed"
        assert info.value.exception == "OverflowError"
        assert pipeline.call(5) == expected(5)


def test_a_filtered_call_times_out(stages: list[ZmqProcessor]) -> None:
    a, b, c = stages
    with Pipeline([a, Stage.of(b, keep=lambda v: v % 2 == 0), c]) as pipeline:
        assert pipeline.call(1) == expected(1)
        with pytest.raises(CallTimeout):
            pipeline.call(2, timeout_s=0.3)


def test_many_callers_share_one_pipeline_and_pipelines_share_processors(
        stages: list[ZmqProcessor]) -> None:
    with Pipeline(stages) as first, Pipeline(stages) as second:
        assert first.topic != second.topic

        def work(n: int) -> list[int]:
            pipeline = first if n % 2 else second
            return [pipeline.call(i) for i in range(n * 50, n * 50 + 50)]

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(work, range(6)))
        assert results == [[expected(i) for i in range(n * 50, n * 50 + 50)]
                           for n in range(6)]
        # each caller got its own answers only: no intermediate or foreign responses
        assert first.unmatched == 0 and second.unmatched == 0


def test_intermediate_results_stay_visible_to_listeners(stages: list[ZmqProcessor]) -> None:
    a = stages[0]
    with Pipeline(stages) as pipeline, a.receiver(topics=[""]) as listener, \
            a.sender() as probe:
        wait_subscribed(probe, listener, topic="")
        assert pipeline.call(7) == expected(7)
        while True:
            response = listener.receive(timeout=10)
            if response.ok:
                break
        assert response.value == 8 and response.topic == pipeline.topic.encode()


def test_connect_calls_a_chain_whose_links_run_elsewhere(stages: list[ZmqProcessor]) -> None:
    a, b, c = stages
    with Link(a, b, topic="orders."), Link(b, c, topic="orders."):
        with Pipeline.connect(a.connect_endpoints.requests, c.connect_endpoints.responses,
                              topic_prefix="orders.") as pipeline:
            assert pipeline.topic.startswith("orders.")
            assert [pipeline.call(i) for i in range(5)] == [expected(i) for i in range(5)]
            with pytest.raises(StageError) as info:
                pipeline.call(1000)
            assert info.value.stage == "B"
        # a caller outside the links' prefix is not carried: its ping never comes back
        outsider = Pipeline.connect(a.connect_endpoints.requests,
                                    c.connect_endpoints.responses, ready_timeout_s=0.3)
        with pytest.raises(NotReady):
            outsider.start()


def test_connect_to_a_chain_ending_in_a_group_of_replicas(
        stages: list[ZmqProcessor]) -> None:
    a = stages[0]
    with ZmqProcessor(negate, name="C") as c1, ZmqProcessor(negate, name="C") as c2:
        with Link(a, [c1, c2], name="a->c"):
            with Pipeline.connect(a.connect_endpoints.requests,
                                  [c1.connect_endpoints.responses,
                                   c2.connect_endpoints.responses]) as pipeline:
                futures = [pipeline.submit(i) for i in range(1, 201)]
                assert [f.result(timeout=30) for f in futures] == [-(i + 1)
                                                                    for i in range(1, 201)]
        # the work was shared, and answers from both replicas reached the caller
        assert c1.counters.ok > 0 and c2.counters.ok > 0
        assert c1.counters.ok + c2.counters.ok == 200


def test_single_stage_pipeline(stages: list[ZmqProcessor]) -> None:
    with Pipeline([stages[1]]) as pipeline:
        assert pipeline.call(4) == 8 and pipeline.links == []
        with pytest.raises(StageError) as info:
            pipeline.call(1001)
        assert info.value.stage == "B"


def test_start_fails_when_a_stage_is_down(stages: list[ZmqProcessor], tmp_path: Any) -> None:
    down = Endpoints(f"ipc://{tmp_path}/down.req", f"ipc://{tmp_path}/down.pub")
    pipeline = Pipeline([stages[0], down, stages[2]], ready_timeout_s=0.3)
    with pytest.raises(NotReady):
        pipeline.start()
    with pytest.raises(ClosedError):
        pipeline.call(1)
    pipeline.close()


def test_closing_fails_pending_calls_and_repr(stages: list[ZmqProcessor]) -> None:
    pipeline = Pipeline(stages).start()
    assert "A -> B -> C" in repr(pipeline)
    pipeline.close()
    pipeline.close()
    with pytest.raises(ClosedError):
        pipeline.submit(1)
    with pytest.raises(ValueError):
        Pipeline([])


def test_a_raw_listener_on_the_last_stage_sees_only_final_results(
        stages: list[ZmqProcessor]) -> None:
    # What a caller in another language does: subscribe its topic on the last stage only.
    a, _, c = stages
    with Pipeline(stages) as pipeline:
        topic = pipeline.topic + "-raw"  # under the pipeline's topic: its links carry it
        with (ZmqReceiver(c.connect_endpoints.responses, topics=[topic]) as out,
              c.sender() as probe, a.sender() as entry):
            wait_subscribed(probe, out, topic=topic)
            entry.send(1, id="raw-1", reply_to=topic, meta={PATH_KEY: []})
            response = out.receive(timeout=10)
            assert response.id == "raw-1" and response.value == expected(1)
            with pytest.raises(ReceiveTimeout):
                out.receive(timeout=0.2)


def test_retried_calls_run_every_stage_once_through_the_links() -> None:
    ran: collections.Counter[str] = collections.Counter()

    def stage(name: str, step: Any, pause_s: float = 0.0) -> Any:
        def job(x: int, resources: Any) -> int:
            ran[name] += 1
            time.sleep(pause_s)
            return step(x)
        return job

    # C takes longer than an attempt may: the caller sends the call again (same id) while
    # C still runs it; A and B must answer those repeats from their replay windows, so the
    # links have to forward them marked "dedup".
    procs = [ZmqProcessor(stage("A", lambda x: x + 1), name="A"),
             ZmqProcessor(stage("B", lambda x: x * 2), name="B"),
             ZmqProcessor(stage("C", lambda x: -x, pause_s=0.5), name="C")]
    try:
        for proc in procs:
            proc.start()
        with Pipeline(procs, timeout_s=0.15, retries=20) as pipeline:
            assert pipeline.call(5) == expected(5)
            resent = pipeline.resent
            # Every repeat sent reaches every stage and is answered there from memory.
            wait_until(lambda: all(p.counters.replays == resent for p in procs),
                       timeout_s=30)
    finally:
        for proc in procs:
            proc.stop()
    assert resent >= 1
    assert ran == {"A": 1, "B": 1, "C": 1}


def test_a_stage_given_twice_is_refused_as_a_cycle(stages: list[ZmqProcessor]) -> None:
    with pytest.raises(ValueError, match=r"stage .* appears twice .*: a cycle"):
        Pipeline([stages[0], stages[1], stages[0]])
    with pytest.raises(ValueError, match="a cycle"):
        Pipeline([stages[0], stages[0].connect_endpoints])


# -- any processor kind: asyncio stages, and failures of the links --------------------------


async def ainc(x: int, resources: Any) -> int:
    return x + 1


async def adouble(x: int, resources: Any) -> int:
    if x == 1001:
        raise ValueError("unlucky")
    return x * 2


@pytest.fixture
def async_stages() -> Iterator[list[AsyncZmqProcessor]]:
    procs = [AsyncZmqProcessor(ainc, name="A", concurrency=8),
             AsyncZmqProcessor(adouble, name="B", concurrency=8),
             AsyncZmqProcessor(negate, name="C", threads=True, concurrency=2)]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def test_a_pipeline_over_asyncio_processors(async_stages: list[AsyncZmqProcessor]) -> None:
    with Pipeline(async_stages) as pipeline:
        futures = [pipeline.submit(i) for i in range(200)]
        assert [f.result(timeout=30) for f in futures] == [expected(i) for i in range(200)]
        with pytest.raises(StageError) as info:
            pipeline.call(1000)
        assert info.value.stage == "B"
        assert [s.name for s in pipeline.stages] == ["A", "B", "C"]
    assert [p.counters.ok for p in async_stages] == [201, 200, 200]


def test_a_pipeline_mixing_sync_and_asyncio_stages(stages: list[ZmqProcessor],
                                                   async_stages: list[AsyncZmqProcessor]) -> None:
    mixed: list[Any] = [stages[0], async_stages[1], Stage.of(stages[2], name="last")]
    with Pipeline(mixed) as pipeline:
        assert pipeline.call(4) == expected(4)
        assert [s.name for s in pipeline.stages] == ["A", "B", "last"]


class Fatal(BaseException):
    """Not an Exception: nothing on the way may swallow it."""


def broken_filter(value: Any) -> bool:
    raise Fatal("the filter broke")


def test_a_crashed_link_fails_the_pending_calls_and_close_raises(
        stages: list[ZmqProcessor]) -> None:
    pipeline = Pipeline([stages[0], Stage.of(stages[1], keep=broken_filter)], timeout_s=60)
    pipeline.start()
    future = pipeline.submit(1)
    wait_until(lambda: not pipeline.links[0].forwarding)
    with pytest.raises(CrashedError) as info:
        pipeline.close()
    assert isinstance(info.value.cause, Fatal) and "A->B" in str(info.value)
    assert isinstance(future.exception(timeout=10), ClosedError)
    pipeline.close()  # the crash was raised once; closing again is a no-op
