"""Prometheus metrics of one app: a registry of its own (not the process-global one), so
several apps in one process (tests) never share counters.

The app's own counters (requests, characters, models) are updated as requests run; what the
engines measure about themselves is read at scrape time (``EngineCollector``): the plain figures
of ``engine.stats()`` as gauges, the latency histograms of ``engine.histograms()`` (time to first
character, time per output character, rows per decode step) and the rejections by reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.engine.engine import ModelEngine
from app.engine.stats import REJECT_REASONS, HistogramSnapshot

logger = logging.getLogger(__name__)

# request latencies span a health check (~1 ms) to a long generation (minutes)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_]")
_HISTOGRAM_HELP = {
    "time_to_first_char_seconds": "seconds from a completion's admission to its first character",
    "time_per_output_char_seconds": "seconds per generated character after the first, per request",
    "decode_batch_rows": "rows in one decode step of the engine",
}


class EngineCollector(Collector):
    """What every engine that ``source()`` returns (model id -> engine) says about itself."""

    def __init__(self, source: Callable[[], Mapping[str, ModelEngine]]) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        gauges: dict[str, GaugeMetricFamily] = {}
        histograms: dict[str, HistogramMetricFamily] = {}
        rejected = CounterMetricFamily(
            "charlm_engine_rejected_requests",
            "requests an engine refused, by reason (queue_full, closed, timeout)",
            labels=["model", "reason"],
        )
        for model_id, engine in sorted(self._source().items()):
            try:
                stats = engine.stats()
                snapshots = engine.histograms()
                rejections = engine.rejections()
            except Exception:  # a broken engine must not break the scrape
                logger.exception("engine %s: reading its metrics failed", model_id)
                continue
            for key, value in stats.items():
                name = "charlm_engine_" + _METRIC_NAME.sub("_", key)
                if name not in gauges:
                    gauges[name] = GaugeMetricFamily(name, f"engine stat {key}", labels=["model"])
                gauges[name].add_metric([model_id], float(value))
            for key, snapshot in snapshots.items():
                if key not in histograms:
                    histograms[key] = HistogramMetricFamily(
                        "charlm_engine_" + key, _HISTOGRAM_HELP.get(key, key), labels=["model"]
                    )
                histograms[key].add_metric([model_id], _buckets(snapshot), sum_value=snapshot.total)
            for reason in REJECT_REASONS:
                rejected.add_metric([model_id, reason], rejections.get(reason, 0))
        return [*gauges.values(), *histograms.values(), rejected]


def _buckets(snapshot: HistogramSnapshot) -> list[tuple[str, float]]:
    """Cumulative counts per upper bound (``le``), ending with ``+Inf``."""
    buckets: list[tuple[str, float]] = [
        (repr(float(bound)), count)
        for bound, count in zip(snapshot.bounds, snapshot.cumulative, strict=True)
    ]
    buckets.append(("+Inf", snapshot.count))
    return buckets


class Metrics:
    """The app's metrics; ``create_app`` makes one and keeps it in the app state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "charlm_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "charlm_request_duration_seconds",
            "time from request start to the last byte of the response",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.chars_scored = Counter(
            "charlm_chars_scored", "characters scored (context excluded)", ["model"], registry=r
        )
        self.chars_generated = Counter(
            "charlm_chars_generated", "characters generated", ["model"], registry=r
        )
        self.generations_active = Gauge(
            "charlm_generations_active", "completions being generated now", ["model"], registry=r
        )
        self.models_loaded = Gauge("charlm_models_loaded", "models ready to serve", registry=r)
        self.models_unavailable = Gauge(
            "charlm_models_unavailable", "checkpoints that failed to load", registry=r
        )

    def watch_engines(self, source: Callable[[], Mapping[str, ModelEngine]]) -> None:
        """Export what the engines that ``source()`` returns (model id -> engine) measure."""
        self.registry.register(EngineCollector(source))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything registered."""
        return generate_latest(self.registry)
