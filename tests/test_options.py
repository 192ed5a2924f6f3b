"""ProcessorOptions: every processor option once, validated, taken by every way to start a
processor (constructors, ProcessorProcess, Daemon/ServeSettings), and plain-value round trips
for system files and child processes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from zjobs import (
    Keepalive,
    OptionsError,
    ProcessorOptions,
    ProcessorProcess,
    ServeSettings,
    ZmqProcessor,
)
from zjobs.aio import AsyncZmqProcessor
from zjobs.core.options import DEFAULT_KEEPALIVE, option_names


def square(request: Any, resources: Any) -> Any:
    return request * request


async def asquare(request: Any, resources: Any) -> Any:
    return request * request


def test_defaults() -> None:
    options = ProcessorOptions()
    assert (options.requests, options.responses) == ("tcp://127.0.0.1:*",) * 2
    assert (options.name, options.concurrency, options.threads, options.cache_size) == (
        None, None, False, 0)
    assert (options.dedup_size, options.dedup_ttl_s, options.heartbeat_interval_s) == (
        10_000, 60.0, 1.0)
    assert (options.max_message_size, options.rcvhwm, options.sndhwm, options.linger_ms) == (
        16 * 1024 * 1024, 1000, 100_000, 1000)
    assert options.keepalive == DEFAULT_KEEPALIVE
    assert option_names() == tuple(f.name for f in dataclasses.fields(ProcessorOptions))


def test_options_are_frozen_and_keyword_only() -> None:
    options = ProcessorOptions(name="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.name = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ProcessorOptions("x")  # type: ignore[misc]


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(OptionsError) as info:
        ProcessorOptions(concurrency=0, dedup_size=-1, heartbeat_interval_s=0, name="",
                         max_message_size=0, linger_ms=-2, rcvhwm="10")  # type: ignore[arg-type]
    assert [name for name, _ in info.value.problems] == [
        "name", "concurrency", "dedup_size", "heartbeat_interval_s", "max_message_size",
        "rcvhwm", "linger_ms"]
    assert isinstance(info.value, ValueError)
    assert "rcvhwm: must be a whole number, not '10'" in str(info.value)
    assert ProcessorOptions(max_message_size=-1, linger_ms=-1, heartbeat_interval_s=None,
                            keepalive=None, rcvhwm=0).max_message_size == -1


def test_replace_names_an_unknown_option() -> None:
    assert ProcessorOptions().replace(cache_size=5).cache_size == 5
    with pytest.raises(TypeError, match="not a processor option: cache"):
        ProcessorOptions().replace(cache=5)


def test_plain_values_round_trip_and_false_stands_for_none() -> None:
    options = ProcessorOptions(name="n", concurrency=4, keepalive=Keepalive(2, 1, 3, 500),
                               heartbeat_interval_s=None)
    plain = json.loads(json.dumps(options.to_dict()))
    assert plain["keepalive"] == {"idle_s": 2, "interval_s": 1, "count": 3,
                                 "zmtp_interval_ms": 500, "zmtp_timeout_ms": 5000}
    assert ProcessorOptions.from_dict(plain) == options
    toml_like = {"heartbeat_interval_s": False, "keepalive": False, "concurrency": False}
    assert ProcessorOptions.from_dict(toml_like) == ProcessorOptions(
        heartbeat_interval_s=None, keepalive=None)


def test_from_dict_reports_every_mistake() -> None:
    with pytest.raises(OptionsError) as info:
        ProcessorOptions.from_dict({"cache": 3, "threads": "yes",
                                    "keepalive": {"interval": 5}})
    problems = dict(info.value.problems)
    assert set(problems) == {"cache", "threads", "keepalive"}
    assert "unknown option" in problems["cache"]
    assert "unknown keepalive field(s) interval" in problems["keepalive"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_processors_take_options_and_keywords_override_them(kind: str) -> None:
    cls: Any = ZmqProcessor if kind == "sync" else AsyncZmqProcessor
    job = square if kind == "sync" else asquare
    options = ProcessorOptions(name="base", dedup_size=3, rcvhwm=5)
    processor = cls(job, options, dedup_size=7, keepalive=None)
    try:
        assert processor.options == options.replace(dedup_size=7, keepalive=None)
        assert processor.name == "base"
        assert processor._sockets.pull.rcvhwm == 5  # the option reached libzmq
    finally:
        processor.stop()
    with pytest.raises(TypeError, match="not a processor option: colour"):
        cls(job, colour="red")


def test_cache_size_gives_any_processor_a_cache() -> None:
    with ZmqProcessor(square, cache_size=10) as processor, processor.client() as client:
        first, second = client.call_response(3), client.call_response(3)
    assert (first.value, first.cached, second.cached) == (9, False, True)


def test_zmq_processor_serves_one_at_a_time() -> None:
    assert ZmqProcessor(square, concurrency=1).stop() is None
    with pytest.raises(ValueError, match="one request at a time"):
        ZmqProcessor(square, concurrency=4)
    with pytest.raises(ValueError, match="one request at a time"):
        ZmqProcessor(square, threads=True)


def test_processor_process_and_serve_settings_take_every_option() -> None:
    options = ProcessorOptions(concurrency=3, dedup_ttl_s=2.5, heartbeat_interval_s=None,
                               sndhwm=10, keepalive=None)
    child = ProcessorProcess("zjobs.demo:square", options, name="sq")
    assert child.settings.options == options.replace(name="sq")
    assert child.settings == ServeSettings("zjobs.demo:square", concurrency=3,
                                           dedup_ttl_s=2.5, heartbeat_interval_s=None,
                                           sndhwm=10, keepalive=None, name="sq")
    with pytest.raises(TypeError, match="ProcessorProcess"):
        ProcessorProcess("zjobs.demo:square", cache=4)
