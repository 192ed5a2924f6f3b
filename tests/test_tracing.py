"""Tracing: one trace per pipeline call (OpenTelemetry SDK, in-memory exporter, in a process
of its own: the tracer provider is global), and nothing changes without a provider or API."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from jobs_interop import TESTS, skip_or_fail, subprocess_env

from zjobs.testing import running_processor


def traced(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(TESTS / "jobs_tracing.py"), *args],
                          capture_output=True, text=True, timeout=90, env=subprocess_env(),
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_a_pipeline_call_is_one_trace_with_the_stages_in_order() -> None:
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        skip_or_fail("opentelemetry-sdk not installed (pip install -e '.[test,otel]')")
    out = traced()
    assert out["value"] == "= 42" and out["error_stage"] == "double"
    calls = [s for s in out["spans"] if s["name"] == "zjobs call"]
    assert len(calls) == 2 and all(s["parent"] is None and s["kind"] == "CLIENT" for s in calls)
    ok_call, failed_call = sorted(calls, key=lambda s: s["start"])

    trace = sorted((s for s in out["spans"] if s["trace_id"] == ok_call["trace_id"]
                    and s is not ok_call), key=lambda s: s["start"])
    assert [s["name"] for s in trace] == [
        "zjobs run parse", "zjobs forward parse->double", "zjobs run double",
        "zjobs forward double->show", "zjobs run show"]
    assert all(s["parent"] == ok_call["span_id"] for s in trace)
    assert all(ok_call["start"] <= s["start"] <= ok_call["end"] for s in trace)
    # A job run ends before its response is published; a link's forward may end after the
    # call did (its thread resumes after the next stages already answered).
    assert all(s["end"] <= ok_call["end"] for s in trace if s["kind"] == "SERVER")
    assert [s["kind"] for s in trace] == ["SERVER", "PRODUCER"] * 2 + ["SERVER"]
    assert all(s["status"] == "UNSET" for s in trace)
    # The caller's context rides in meta from end to end, unchanged.
    assert out["meta"]["traceparent"].split("-")[1:3] == [ok_call["trace_id"],
                                                          ok_call["span_id"]]

    failed = [s for s in out["spans"] if s["trace_id"] == failed_call["trace_id"]]
    assert failed_call["status"] == "ERROR"
    assert [(s["name"], s["status"]) for s in failed if s["name"].startswith("zjobs run")] == [
        ("zjobs run parse", "UNSET"), ("zjobs run double", "ERROR")]  # show never ran


def test_without_the_api_the_meta_carries_no_trace() -> None:
    out = traced("absent")
    assert out["value"] == "= 42" and "spans" not in out
    assert out["meta"] == {"zjobs.path": ["parse", "double"]}


def echo(request: Any, resources: Any) -> Any:
    return request


def test_without_a_tracer_provider_nothing_is_added() -> None:
    pytest.importorskip("opentelemetry")
    # This process never sets a provider: the API's default records and injects nothing.
    with running_processor(echo) as proc, proc.client() as client:
        response = client.call_response(1, meta={"k": "v"})
    assert response.meta == {"k": "v"}
