"""Run by test_tracing in a process of its own (the tracer provider is global): a 3-stage
pipeline traced with the OpenTelemetry SDK's in-memory exporter; prints what it saw as JSON.

Usage: python jobs_tracing.py (with the SDK) | python jobs_tracing.py absent (as if the API
were not installed).
"""

from __future__ import annotations

import json
import sys
from typing import Any

if sys.argv[1:] == ["absent"]:
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # its import now fails

from zjobs import Pipeline, StageError, ZmqProcessor


def parse(request: Any, resources: Any) -> Any:
    return int(request)


def double(request: Any, resources: Any) -> Any:
    if request < 0:
        raise ValueError("negative")
    return request * 2


def show(request: Any, resources: Any) -> Any:
    return f"= {request}"


def main() -> None:
    exporter = None
    if sys.argv[1:] != ["absent"]:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    stages = [ZmqProcessor(parse, name="parse"), ZmqProcessor(double, name="double"),
              ZmqProcessor(show, name="show")]
    out: dict[str, Any] = {}
    try:
        for stage in stages:
            stage.start()
        with Pipeline(stages) as pipeline:
            response = pipeline.call_response("21")
            out["value"], out["meta"] = response.value, response.meta
            try:
                pipeline.call("-1")
            except StageError as exc:
                out["error_stage"] = exc.stage
    finally:
        for stage in stages:
            stage.stop()
    if exporter is not None:
        out["spans"] = [{
            "name": span.name, "kind": span.kind.name,
            "trace_id": f"{span.context.trace_id:032x}", "span_id": f"{span.context.span_id:016x}",
            "parent": None if span.parent is None else f"{span.parent.span_id:016x}",
            "start": span.start_time, "end": span.end_time, "status": span.status.status_code.name,
        } for span in exporter.get_finished_spans()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
