"""A processor's Prometheus endpoint: ``/metrics`` over HTTP, through ``prometheus_client``.

An optional part of zjobs (``pip install 'zjobs[metrics]'``). A :class:`MetricsServer`
serves one processor's metrics, read at scrape time from its counters and load
(:class:`ProcessorCollector`): nothing is recorded per request beyond what the processor
counts anyway. The names follow Prometheus' conventions:

* ``zjobs_requests_total{processor, status}``: messages taken in, by outcome (``ok``,
  ``failed``, ``expired``, ``bad_request``, ``pong``); their sum is every message received.
* ``zjobs_cache_hits_total``, ``zjobs_replays_total``, ``zjobs_dropped_total``
  ``{processor}``: parts of those outcomes (see :class:`~zjobs.Counters`).
* ``zjobs_job_duration_seconds{processor}``: a histogram of job runs, 10 µs to 10 s.
* ``zjobs_in_flight{processor}``: requests taken up and not answered yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from zjobs.core.load import PROMETHEUS_BOUNDS_S, LoadSnapshot
from zjobs.transport.http import HttpServer

try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import MetricsHandler
    from prometheus_client.registry import Collector
except ImportError as exc:  # the extra is not installed
    raise ImportError("serving metrics needs prometheus_client: "
                      "pip install 'zjobs[metrics]'") from exc

__all__ = ["MetricsServer", "ProcessorCollector"]

_OUTCOMES = (("ok", "ok"), ("failed", "failed"), ("expired", "expired"),
             ("bad_requests", "bad_request"), ("pongs", "pong"))
_PARTS = (("cache_hits", "zjobs_cache_hits", "Requests answered from the job's cache."),
          ("replays", "zjobs_replays",
           "Repeated request ids answered from the replay window instead of running again."),
          ("dropped", "zjobs_dropped", "Bad requests dropped unanswered (no usable reply_to)."))
_LE = tuple(f"{bound:g}" for bound in PROMETHEUS_BOUNDS_S)


class ProcessorCollector(Collector):
    """The metrics of one processor, read from its counters and load at each scrape.

    Args:
        name: the processor name (the ``processor`` label).
        counters: returns the processor's counters (:meth:`~zjobs.Counters.as_dict`).
        load: returns its load (:meth:`~zjobs.core.load.LoadMeter.snapshot`).
    """

    def __init__(self, name: str, counters: Callable[[], Mapping[str, int]],
                 load: Callable[[], LoadSnapshot]) -> None:
        self.name = name
        self._counters = counters
        self._load = load

    def collect(self) -> Iterator[Metric]:
        counters, load, labels = self._counters(), self._load(), [self.name]
        requests = CounterMetricFamily(
            "zjobs_requests", "Messages the processor took in, by outcome.",
            labels=["processor", "status"])
        for key, status in _OUTCOMES:
            requests.add_metric([self.name, status], counters.get(key, 0))
        yield requests
        for key, metric, doc in _PARTS:
            family = CounterMetricFamily(metric, doc, labels=["processor"])
            family.add_metric(labels, counters.get(key, 0))
            yield family
        duration = HistogramMetricFamily(
            "zjobs_job_duration_seconds",
            "How long job runs took, from taking the request up to its response.",
            labels=["processor"])
        cumulative = load.cumulative()
        duration.add_metric(labels, [*zip(_LE, cumulative, strict=False),
                                     ("+Inf", cumulative[-1])], load.busy_s)
        yield duration
        in_flight = GaugeMetricFamily("zjobs_in_flight",
                                      "Requests taken up and not answered yet.",
                                      labels=["processor"])
        in_flight.add_metric(labels, load.in_flight)
        yield in_flight


class MetricsServer:
    """Serves ``/metrics`` (any path, in fact) for a collector over HTTP, in a thread.

    Args:
        address: ``HOST:PORT`` to listen on (port 0 picks a free one: see :attr:`address`).
        collector: what to serve.

    Raises:
        ValueError: a malformed address.
        BindError: the address cannot be bound (it names it).
    """

    def __init__(self, address: str, collector: Collector) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        self._http = HttpServer(address, MetricsHandler.factory(registry), name="metrics")
        self.address = self._http.address
        """Where it listens, the port resolved."""

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}>"

    @property
    def url(self) -> str:
        """The address of the metrics page."""
        return self._http.url("/metrics")

    def close(self) -> None:
        """Stop serving and release the port; idempotent."""
        self._http.close()
