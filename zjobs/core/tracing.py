"""Tracing: W3C Trace Context carried in ``meta``, and OpenTelemetry spans when the optional
``opentelemetry-api`` is installed (``pip install 'zjobs[otel]'``).

A client call that runs inside a trace puts ``"traceparent"`` (and ``"tracestate"``) in the
request's meta; processors echo meta in every response and links carry it forward, so the
whole chain of work keeps the caller's trace context unchanged. With the API installed and
a tracer provider configured (the OpenTelemetry SDK), zjobs starts:

* ``zjobs call``, a client span per call (:func:`traced_call`), ended when its future
  settles; its context is what the meta carries;
* ``zjobs run NAME``, a server span around each job run whose request carries a
  ``traceparent`` (:func:`run_span`), current while the job runs, so calls the job makes
  are its children;
* ``zjobs forward NAME``, a producer span around each result a link forwards
  (:func:`forward_span`).

Job runs and forwards are children of the context in the meta, i.e. of the call: one trace
shows a pipeline call with its stages and links in order. The caller decides what is
traced: work that arrives without a ``traceparent`` starts no span. Without the API (or
without a provider: the API's default tracer records nothing and injects nothing), meta
is left as it is and nothing else changes; a provider set after calls began is used
within a second (zjobs looks for one once a second, not on every call). The API is
imported on first use, so that ``import zjobs`` does not pay for it.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future as ThreadFuture
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from zjobs.wire.protocol import Meta

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["TRACEPARENT", "TRACESTATE", "forward_span", "record_failure", "run_span",
           "traced_call"]

TRACEPARENT: Final = "traceparent"
"""The meta key of the W3C ``traceparent`` (version-traceid-parentid-flags)."""
TRACESTATE: Final = "tracestate"
"""The meta key of the W3C ``tracestate`` (vendor data), sent along when present."""


class _Settles(Protocol):
    # What a call's future offers (concurrent.futures and asyncio alike).
    def add_done_callback(self, fn: Any, /) -> Any: ...
    def cancelled(self) -> bool: ...
    def exception(self) -> BaseException | None: ...


@dataclass(slots=True)
class _Otel:
    tracer: Tracer
    propagator: TraceContextTextMapPropagator
    trace: Any  # the opentelemetry.trace module
    proxy: type  # the API's stand-in provider, until an SDK sets a real one
    configured: bool = False
    checked_at: float = -1.0

    def recording(self) -> bool:
        """True once a tracer provider is set; looked at once a second, since a call
        costs less than asking the API every time."""
        now = time.monotonic()
        if not self.configured and now - self.checked_at >= 1.0:
            self.checked_at = now
            self.configured = not isinstance(self.trace.get_tracer_provider(), self.proxy)
        return self.configured


_NO_SPAN: Final = contextlib.nullcontext()
_loaded: list[_Otel | None] = []  # [] before the first look; then [api] or [None]


def _otel() -> _Otel | None:
    if not _loaded:
        try:
            from opentelemetry import trace
            from opentelemetry.trace import ProxyTracerProvider
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            _loaded.append(None)
        else:
            _loaded.append(_Otel(trace.get_tracer("zjobs"), TraceContextTextMapPropagator(),
                                 trace, ProxyTracerProvider))
    return _loaded[0]


def traced_call(meta: Meta | None, future: _Settles | ThreadFuture[Any]) -> Meta | None:
    """Start a client span for a call, ended when ``future`` settles, and return ``meta``
    with its trace context added (``meta`` itself when nothing is traced)."""
    otel = _otel()
    if otel is None or not otel.recording():
        return meta
    span = otel.tracer.start_span("zjobs call", kind=otel.trace.SpanKind.CLIENT)
    if not span.get_span_context().is_valid:  # no tracer provider: nothing to carry
        span.end()
        return meta
    carried = dict(meta) if meta else {}
    otel.propagator.inject(carried, context=otel.trace.set_span_in_context(span))
    future.add_done_callback(lambda done: _end_call(span, done))
    return carried


def _end_call(span: Span, future: _Settles) -> None:
    if not future.cancelled():
        error = future.exception()
        if error is not None:
            _failed(span, error)
    span.end()


def _failed(span: Span, error: BaseException) -> None:
    trace = _loaded[0].trace if _loaded and _loaded[0] is not None else None
    span.record_exception(error)
    if trace is not None:
        span.set_status(trace.Status(trace.StatusCode.ERROR,
                                     f"{type(error).__name__}: {error}"))


def _child_span(name: str, kind: str, meta: Meta | None,
                attributes: dict[str, str]) -> AbstractContextManager[Any]:
    if not meta or TRACEPARENT not in meta:
        return _NO_SPAN
    otel = _otel()
    if otel is None:
        return _NO_SPAN
    carrier = {key: meta[key] for key in (TRACEPARENT, TRACESTATE)
               if isinstance(meta.get(key), str)}
    return otel.tracer.start_as_current_span(
        name, context=otel.propagator.extract(carrier),
        kind=getattr(otel.trace.SpanKind, kind), attributes=attributes)


def run_span(processor: str, meta: Meta | None) -> AbstractContextManager[Any]:
    """A span around one job run of ``processor``, child of the trace in the request's
    ``meta``; a no-op when the request carries none (or the API is missing)."""
    return _child_span(f"zjobs run {processor}", "SERVER", meta,
                       {"zjobs.processor": processor})


def forward_span(link: str, meta: Meta | None) -> AbstractContextManager[Any]:
    """A span around a link forwarding one response, child of the trace in its ``meta``."""
    return _child_span(f"zjobs forward {link}", "PRODUCER", meta, {"zjobs.link": link})


def record_failure(error: BaseException) -> None:
    """Mark the current span (a job run's) as failed with ``error``; a no-op untraced."""
    if _loaded and _loaded[0] is not None:
        span = _loaded[0].trace.get_current_span()
        if span.is_recording():
            _failed(span, error)
