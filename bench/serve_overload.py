"""Overload part of ``bench.serve``: bursts at 4x a server's capacity, every burst counted.

A fresh server gets ``bursts`` bursts of ``4 x capacity`` generation requests at once, the first
one included: a client meets the first overload of a server as much as any later one. Each 429
is timed from the moment its connection is opened (``serve_load.burst``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from bench.serve_load import burst, percentile
from bench.server import Server


async def overload_check(
    server: Server, model: str, capacity: int, chars: int, bursts: int, settle_s: float = 2.0
) -> dict[str, Any]:
    """``bursts`` bursts of 4x ``capacity`` requests; memory before, after each and
    ``settle_s`` later."""
    baseline = server.rss_mb()
    rounds, peaks = [], []
    for _ in range(bursts):
        rounds.append(await burst(server.url, model, 4 * capacity, chars))
        peaks.append(server.rss_mb())
    await asyncio.sleep(settle_s)
    after = server.rss_mb()
    edge = edge_refusal_times(httpx.get(server.url + "/metrics", timeout=10).text)
    rejected = [t for r in rounds for t in r.rejected_latencies]
    statuses: dict[int, int] = {}
    for r in rounds:
        for status, count in r.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "bursts": bursts,
        "burst_size": 4 * capacity,
        "sent": sum(r.sent for r in rounds),
        "statuses": statuses,
        "rejected": len(rejected),
        "rejected_p50_ms": percentile(rejected, 0.5) * 1000,
        "rejected_p99_ms": percentile(rejected, 0.99) * 1000,
        "rejected_max_ms": max(rejected, default=float("nan")) * 1000,
        "rejected_max_ms_by_burst": [
            max(r.rejected_latencies, default=float("nan")) * 1000 for r in rounds
        ],
        "retry_after": sorted({v for r in rounds for v in r.retry_after}),
        "rss_baseline_mb": baseline,
        "rss_after_bursts_mb": peaks,
        "rss_after_mb": after,
        "settle_s": settle_s,
        "server_errors": sum(n for s, n in statuses.items() if s >= 500),
        **edge,
    }


def edge_refusal_times(metrics: str) -> dict[str, float]:
    """The server's own time for the 429s given at the edge (``route="unmatched"``), from its
    request-duration histogram: count, mean and how many took at most 5 ms. It runs from the
    first middleware to the reply's last byte; time spent waiting for the event loop before
    that is not in it (the client's figures include it)."""
    prefix = 'charlm_request_duration_seconds_{}{{method="POST",route="unmatched"}} '
    bucket = 'charlm_request_duration_seconds_bucket{le="0.005",method="POST",route="unmatched"} '
    values = {"count": 0.0, "sum": 0.0, "le_5ms": 0.0}
    for line in metrics.splitlines():
        for key, start in (
            ("count", prefix.format("count")),
            ("sum", prefix.format("sum")),
            ("le_5ms", bucket),
        ):
            if line.startswith(start):
                values[key] = float(line[len(start) :])
    count = values["count"]
    return {
        "edge_refusals": count,
        "edge_refusal_server_mean_ms": values["sum"] / count * 1000 if count else float("nan"),
        "edge_refusals_within_5ms": values["le_5ms"],
    }


def overload_lines(over: dict[str, Any], model: str, batch: int, queue: int) -> list[str]:
    """The overload report: a heading and its lines."""
    by_burst = ", ".join(f"{v:.1f}" for v in over["rejected_max_ms_by_burst"])
    rss = ", ".join(f"{mb:.0f}" for mb in over["rss_after_bursts_mb"])
    ok = over["rejected_max_ms"] < 50
    return [
        f"## overload ({model}): max_batch_size {batch} + max_queue {queue}, "
        f"{over['bursts']} bursts of {over['burst_size']} requests at once on a fresh server, "
        "every burst counted",
        f"- statuses: {over['statuses']} (0: no answer); 5xx: {over['server_errors']}",
        f"- 429 reply time from connection opening, all {over['rejected']} 429s: p50 "
        f"{over['rejected_p50_ms']:.1f} ms, p99 {over['rejected_p99_ms']:.1f} ms, max "
        f"{over['rejected_max_ms']:.1f} ms (target < 50 ms: "
        f"{'meets target' if ok else 'MISSES target'}); Retry-After "
        f"{', '.join(over['retry_after']) or '-'}",
        f"- max 429 reply time in each burst, in order: {by_burst} ms",
        f"- server time of the {over['edge_refusals']:.0f} 429s given at the edge (first "
        f"middleware to last byte): mean {over['edge_refusal_server_mean_ms']:.2f} ms, "
        f"{over['edge_refusals_within_5ms']:.0f} within 5 ms",
        f"- server RSS: {over['rss_baseline_mb']:.0f} MB before, {rss} MB after each burst, "
        f"{over['rss_after_mb']:.0f} MB {over['settle_s']:g} s later",
    ]
