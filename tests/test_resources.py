"""zjobs.core.resources: factory and generator styles, and the lifecycle through a processor."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from zjobs import RemoteError, StartError, ZmqProcessor
from zjobs.core.resources import Resources


class Conn:
    """A resource that records how often it was closed."""

    instances: ClassVar[list[Conn]] = []

    def __init__(self) -> None:
        self.closed = 0
        self.used = 0
        Conn.instances.append(self)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture(autouse=True)
def _fresh_conns() -> Iterator[None]:
    Conn.instances = []
    yield
    Conn.instances = []


def test_no_factory_means_none() -> None:
    res = Resources(None)
    assert res.open() is None
    res.close()
    res.close()


def test_factory_value_is_closed_once() -> None:
    res = Resources(Conn)
    conn = res.open()
    assert isinstance(conn, Conn)
    assert res.value is conn
    res.close()
    res.close()
    assert conn.closed == 1
    assert res.value is None


def test_factory_value_without_close_is_fine() -> None:
    res = Resources(lambda: {"k": 1})
    assert res.open() == {"k": 1}
    res.close()


def test_close_before_open_does_nothing() -> None:
    created: list[int] = []
    res = Resources(lambda: created.append(1))
    res.close()
    assert created == []


def test_generator_factory_cleans_up_after_the_yield() -> None:
    events: list[str] = []

    def factory() -> Iterator[str]:
        events.append("open")
        try:
            yield "R"
        finally:
            events.append("close")

    res = Resources(factory)
    assert res.open() == "R"
    assert events == ["open"]
    res.close()
    res.close()
    assert events == ["open", "close"]


def test_generator_value_close_is_not_called() -> None:
    # With a generator factory, cleanup is the generator's business, not value.close().
    def factory() -> Iterator[Conn]:
        yield Conn()

    res = Resources(factory)
    conn = res.open()
    res.close()
    assert conn.closed == 0


def test_generator_yielding_twice_is_stopped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    after: list[str] = []

    def factory() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            after.append("finally")

    res = Resources(factory)
    res.open()
    with caplog.at_level(logging.WARNING, logger="zjobs.core.resources"):
        res.close()
    assert "more than once" in caplog.text
    assert after == ["finally"]


def test_cleanup_error_propagates_from_close() -> None:
    def factory() -> Iterator[int]:
        yield 1
        raise OSError("cleanup failed")

    res = Resources(factory)
    res.open()
    with pytest.raises(OSError, match="cleanup failed"):
        res.close()


# -- through a real processor --------------------------------------------------------------

def use_conn(request: Any, conn: Conn) -> Any:
    conn.used += 1
    if request == "raise":
        raise RuntimeError("job failed")
    return [id(conn), conn.used]


def test_created_once_passed_to_every_run_and_closed_on_stop() -> None:
    with ZmqProcessor(use_conn, resources=Conn) as proc, proc.client() as client:
        answers = [client.call(i) for i in range(5)]
    assert len(Conn.instances) == 1
    conn = Conn.instances[0]
    assert {a[0] for a in answers} == {id(conn)}
    assert [a[1] for a in answers] == [1, 2, 3, 4, 5]
    assert conn.closed == 1
    assert proc.state == "stopped"


def test_closed_on_stop_also_after_jobs_raised() -> None:
    with ZmqProcessor(use_conn, resources=Conn) as proc, proc.client() as client:
        for _ in range(3):
            with pytest.raises(RemoteError) as info:
                client.call("raise")
            assert info.value.message == "RuntimeError: job failed"
        assert client.call("ok")[1] == 4
    assert [c.closed for c in Conn.instances] == [1]


def test_generator_resources_through_a_processor() -> None:
    events: list[str] = []

    def factory() -> Iterator[dict[str, int]]:
        events.append("open")
        yield {"calls": 0}
        events.append("close")

    def job(request: Any, res: dict[str, int]) -> Any:
        res["calls"] += 1
        return res["calls"]

    with ZmqProcessor(job, resources=factory) as proc, proc.client() as client:
        assert [client.call(None) for _ in range(3)] == [1, 2, 3]
        assert events == ["open"]
    assert events == ["open", "close"]


def test_resources_open_in_the_serving_thread_at_start_not_at_construction() -> None:
    import threading

    opened_in: list[str] = []

    def factory() -> Conn:
        opened_in.append(threading.current_thread().name)
        return Conn()

    proc = ZmqProcessor(use_conn, resources=factory, name="lazy")
    try:
        assert opened_in == []
        proc.start()
        assert opened_in == ["zjobs-processor-lazy"]
    finally:
        proc.stop()
    assert Conn.instances[0].closed == 1


def test_factory_failure_is_a_start_error_and_the_processor_is_closed() -> None:
    def factory() -> Any:
        raise ConnectionRefusedError("db down")

    proc = ZmqProcessor(use_conn, resources=factory)
    with pytest.raises(StartError, match="ConnectionRefusedError: db down") as info:
        proc.start()
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert proc.state == "stopped"
    proc.stop()  # idempotent after a failed start


def test_factory_failure_in_run_is_a_start_error() -> None:
    proc = ZmqProcessor(use_conn, resources=lambda: 1 / 0)
    with pytest.raises(StartError):
        proc.run()
    assert proc.state == "stopped"


def test_cleanup_failure_is_logged_and_stop_still_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def factory() -> Iterator[int]:
        yield 1
        raise OSError("flush failed")

    proc = ZmqProcessor(lambda r, res: r, resources=factory).start()
    with caplog.at_level(logging.ERROR, logger="zjobs.processor.sync"):
        proc.stop()
    assert proc.state == "stopped"
    assert "closing resources failed" in caplog.text


def test_callable_object_and_partial_generator_factories() -> None:
    import functools

    events: list[str] = []

    def connect(dsn: str) -> Iterator[str]:
        events.append(f"open {dsn}")
        yield f"conn to {dsn}"
        events.append(f"close {dsn}")

    class Factory:
        def __init__(self, dsn: str) -> None:
            self.dsn = dsn

        def __call__(self) -> Iterator[str]:
            return connect(self.dsn)

    for factory in (functools.partial(connect, "a"), Factory("b"), lambda: connect("c")):
        res = Resources(factory)
        value = res.open()
        assert isinstance(value, str) and value.startswith("conn to ")
        res.close()
    assert events == ["open a", "close a", "open b", "close b", "open c", "close c"]


def test_generator_that_yields_nothing_is_a_start_error() -> None:
    def factory() -> Iterator[int]:
        return
        yield 1

    proc = ZmqProcessor(use_conn, resources=factory)
    with pytest.raises(StartError, match="StopIteration"):
        proc.start()
    assert proc.state == "stopped"
