"""Prometheus metrics of one app: a registry of its own (not the process-global one), so
several apps in one process (tests) never share counters.

Engines report in either of two ways:

- pass the ``Metrics`` object to the engine, which registers its own collectors on
  ``metrics.registry`` (histograms of batch size, time to first character, ...), or
- implement ``engine.stats() -> dict[str, float]``; ``EngineStatsCollector`` exports each numeric
  entry as the gauge ``charlm_engine_<key>{model="..."}`` at scrape time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.engine_metrics import EngineMetricsCollector

logger = logging.getLogger(__name__)

# request latencies span a health check (~1 ms) to a long generation (minutes)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_]")


class EngineStatsCollector(Collector):
    """Exports ``engine.stats()`` of every loaded engine as gauges, read when scraped."""

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        # source: model id -> engine (anything; engines without ``stats`` are skipped)
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for model_id, engine in sorted(self._source().items()):
            stats_fn = getattr(engine, "stats", None)
            if stats_fn is None:
                continue
            try:
                stats = stats_fn()
            except Exception:  # a broken stats() must not break the scrape
                logger.exception("engine %s: stats() failed", model_id)
                continue
            for key, value in stats.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                name = "charlm_engine_" + _METRIC_NAME.sub("_", str(key))
                family = families.get(name)
                if family is None:
                    family = GaugeMetricFamily(name, f"engine stat {key}", labels=["model"])
                    families[name] = family
                family.add_metric([model_id], float(value))
        return list(families.values())


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

    def watch_engines(self, source: Callable[[], Mapping[str, Any]]) -> None:
        """Export ``stats()`` of the engines that ``source()`` returns (model id -> engine), and
        their latency histograms and rejections (``app.engine_metrics``)."""
        self.registry.register(EngineStatsCollector(source))
        self.registry.register(EngineMetricsCollector(source))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything registered."""
        return generate_latest(self.registry)
