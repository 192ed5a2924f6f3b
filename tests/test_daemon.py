"""Daemon and ServeSettings: one processor served in this process until stopped."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from zjobs import (
    BindError,
    Client,
    Counters,
    CrashedError,
    Daemon,
    LoadError,
    OptionsError,
    ProcessorOptions,
    ServeSettings,
    ZmqProcessor,
)
from zjobs.demo import square
from zjobs.run.daemon import build_processor

WAIT_S = 30.0


def test_serves_until_request_stop_and_returns_counters() -> None:
    daemon = Daemon(ServeSettings("zjobs.demo:square", name="sq"))
    ready = threading.Event()
    seen: dict[str, Any] = {}

    def on_ready(processor: ZmqProcessor) -> None:
        seen["processor"] = processor
        ready.set()

    def serve() -> None:
        seen["counters"] = daemon.run(on_ready=on_ready)

    thread = threading.Thread(target=serve, name="zjobs-test-daemon")
    thread.start()
    try:
        assert ready.wait(WAIT_S)
        processor = seen["processor"]
        ep = processor.connect_endpoints
        with Client.connect(ep.requests, ep.responses, timeout_s=WAIT_S) as client:
            assert [client.call(n) for n in range(5)] == [0, 1, 4, 9, 16]
    finally:
        daemon.request_stop()
        thread.join(WAIT_S)
    assert not thread.is_alive()
    counters: Counters = seen["counters"]
    assert counters.ok == 5 and processor.state == "stopped"
    assert daemon.stop_reason == "stop requested"


def test_stop_requested_before_serving_returns_at_once() -> None:
    daemon = Daemon(ServeSettings(square))
    daemon.request_stop("early")
    calls: list[ZmqProcessor] = []
    assert daemon.run(on_ready=calls.append) == Counters()
    assert calls == [] and daemon.stop_reason == "early"


def test_load_and_bind_errors_come_before_serving() -> None:
    with pytest.raises(LoadError):
        Daemon(ServeSettings("no_such_module_d:job")).run()
    with build_processor(ServeSettings(square)) as taken:
        settings = ServeSettings(square, requests=taken.endpoints.requests)
        with pytest.raises(BindError):
            Daemon(settings).run()


def test_build_processor_applies_cache_name_and_message_size() -> None:
    settings = ServeSettings("zjobs.demo:square", name="cached-square", cache_size=4,
                             max_message_size=1024)
    with build_processor(settings) as processor, processor.client() as client:
        assert processor.name == "cached-square"
        first, second = client.call_response(3), client.call_response(3)
        assert (first.value, first.cached, second.value, second.cached) == (9, False, 9, True)


def test_settings_describe() -> None:
    assert ServeSettings("m:f").describe() == "m:f"
    assert "square" in ServeSettings(square).describe()


@pytest.mark.parametrize("concurrency", [None, 2], ids=["sync", "async"])
def test_build_processor_hands_every_option_to_the_processor(concurrency: int | None) -> None:
    settings = ServeSettings(square, concurrency=concurrency, dedup_size=5, dedup_ttl_s=2.5,
                             heartbeat_interval_s=None, rcvhwm=7, sndhwm=9, linger_ms=3,
                             keepalive=None, max_message_size=2048)
    processor = build_processor(settings)
    try:
        # A sync job served with a concurrency runs in threads; nothing else changes.
        assert processor.options == settings.options.replace(threads=concurrency is not None)
        assert type(processor).__name__ == ("ZmqProcessor" if concurrency is None
                                            else "AsyncZmqProcessor")
    finally:
        processor.stop()


def test_serve_settings_are_processor_options_and_round_trip_as_plain_values() -> None:
    settings = ServeSettings("zjobs.demo:square", resources="m:open", name="sq", cache_size=3,
                             heartbeat_interval_s=None, keepalive=None)
    assert isinstance(settings, ProcessorOptions)
    assert settings.options == ProcessorOptions(name="sq", cache_size=3,
                                                heartbeat_interval_s=None, keepalive=None)
    plain = json.loads(json.dumps(settings.to_dict()))
    assert ServeSettings.from_dict(plain) == settings
    with pytest.raises(TypeError, match="MODULE:OBJECT"):
        ServeSettings(square).to_dict()
    with pytest.raises(OptionsError) as info:
        ServeSettings.from_dict({"resources": 3, "cache_size": -1, "colour": "red"})
    assert {name for name, _ in info.value.problems} == {"job", "resources", "cache_size",
                                                          "colour"}


def interrupting(request: Any, resources: Any) -> Any:
    raise KeyboardInterrupt  # not a job failure: it ends the serving thread


@pytest.mark.parametrize("concurrency", [None, 2], ids=["sync", "async"])
def test_a_crashed_processor_ends_run_with_the_cause(concurrency: int | None) -> None:
    daemon = Daemon(ServeSettings(interrupting, concurrency=concurrency))
    sent: list[str] = []

    def ready(processor: Any) -> None:
        with processor.sender() as sender:
            sent.append(sender.send(1))

    with pytest.raises(CrashedError) as info:
        daemon.run(on_ready=ready)
    assert isinstance(info.value.cause, KeyboardInterrupt) and sent
    assert daemon.processor is not None and daemon.processor.state == "stopped"
