"""Prometheus families for what engines measure about themselves: latency histograms (time to first
character, time per output character), rows per decode step, and rejected requests by reason.

Read at scrape time from ``engine.histograms()`` and ``engine.rejections()``; the engines' plain
gauges (queue depth, running rows, ...) come from ``engine.stats()`` through
``app.metrics.EngineStatsCollector``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

_HELP = {
    "time_to_first_char_seconds": "seconds from a completion's admission to its first character",
    "time_per_output_char_seconds": "seconds per generated character after the first, per request",
    "decode_batch_rows": "rows in one decode step of the engine",
}
REJECT_REASONS = ("queue_full", "closed", "timeout")


def _bucket_label(bound: float) -> str:
    return repr(float(bound))


class EngineMetricsCollector(Collector):
    """Histograms and rejection counters of every engine that ``source()`` returns."""

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self._source = source  # model id -> engine

    def collect(self) -> Iterable[Metric]:
        histograms: dict[str, HistogramMetricFamily] = {}
        rejected = CounterMetricFamily(
            "charlm_engine_rejected_requests",
            "requests an engine refused, by reason (queue_full, closed, timeout)",
            labels=["model", "reason"],
        )
        for model_id, engine in sorted(self._source().items()):
            if not hasattr(engine, "histograms"):
                continue
            try:
                snapshots = engine.histograms()
                rejections = engine.rejections()
            except Exception:  # a broken engine must not break the scrape
                logger.exception("engine %s: reading its metrics failed", model_id)
                continue
            for name, snap in snapshots.items():
                family = histograms.get(name)
                if family is None:
                    family = HistogramMetricFamily(
                        "charlm_engine_" + name, _HELP.get(name, name), labels=["model"]
                    )
                    histograms[name] = family
                buckets = [
                    (_bucket_label(b), c) for b, c in zip(snap.bounds, snap.cumulative, strict=True)
                ]
                buckets.append(("+Inf", snap.count))
                family.add_metric([model_id], buckets, sum_value=snap.total)
            for reason in REJECT_REASONS:
                rejected.add_metric([model_id, reason], rejections.get(reason, 0))
        return [*histograms.values(), rejected]
