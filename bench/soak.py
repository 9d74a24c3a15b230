"""Soak under overload: a real ``charlm-serve`` on 127.0.0.1 held at twice its capacity.

Capacity is what the engine holds at once: ``CHARLM_MAX_BATCH_SIZE`` running rows plus
``CHARLM_MAX_QUEUE`` waiting requests. The script runs ``2 x capacity`` client loops (by default)
for ``--duration`` seconds, each drawing one request at a time from a mix of scoring, whole and
streamed generation, streams dropped after a few events, and OpenAI completions; a loop backs off
briefly after a 429 (``bench.soak_load``).

It prints requests by kind and status, p50/p99 latency of served requests, the server's resident
memory at start, after warm-up and at the end, and, once the load stopped, queue depth, running
rows and open generations from ``/metrics``. The promises (exit status 1 if one is broken): no
5xx and no broken response; memory at the end within 10% of memory after warm-up; queue, rows and
open generations back to zero.

    python -m bench.soak                         # 10 minutes
    python -m bench.soak --duration 120 --json soak.json
    python -m bench.soak --smoke                 # seconds, to check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.soak_load import KINDS, Tally, client_loop
from tests.reliability.harness import rss_bytes, write_good_model
from tests.support import LiveServer as Server
from tests.support import start_server, stop_server


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def read_metrics(url: str) -> dict[str, float]:
    """Engine gauges summed over models: queue depth, running rows, open generations."""
    text = httpx.get(url + "/metrics", timeout=10).text
    wanted = {
        "charlm_engine_queue_depth": "queue_depth",
        "charlm_engine_running_rows": "running_rows",
        "charlm_generations_active": "open_generations",
    }
    values = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        match = re.match(r"^(\w+)\{[^}]*\} ([-0-9.e+]+)$", line)
        if match and match.group(1) in wanted:
            values[wanted[match.group(1)]] += float(match.group(2))
    return values


async def soak(server: Server, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    pid = server.process.pid
    rss_start = rss_bytes(pid)
    # idle connections are dropped by the client after 2 s, before the server's 5 s keep-alive
    # timeout, so no request is ever sent on a connection the server is closing at that moment
    limits = httpx.Limits(
        max_connections=concurrency + 8,
        max_keepalive_connections=concurrency,
        keepalive_expiry=2.0,
    )
    timeout = httpx.Timeout(180.0, connect=30.0)
    tally = Tally()
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
        began = time.monotonic()
        until = began + warmup + duration
        loops = [
            asyncio.create_task(client_loop(client, 1000 + i, until, tally, stop))
            for i in range(concurrency)
        ]
        await asyncio.sleep(warmup)
        rss_warm = rss_bytes(pid)
        warm_total = sum(tally.total().values())
        print(f"warm-up done ({warm_total} requests), RSS {rss_warm / 2**20:.1f} MiB", flush=True)
        next_report = time.monotonic() + 60
        peak = rss_warm
        while time.monotonic() < until:
            await asyncio.sleep(1)
            peak = max(peak, rss_bytes(pid))
            if time.monotonic() >= next_report:
                next_report += 60
                elapsed = time.monotonic() - began - warmup
                counts = dict(tally.total())
                print(
                    f"  {elapsed:4.0f}s {counts} RSS {rss_bytes(pid) / 2**20:.1f} MiB", flush=True
                )
        stop.set()
        await asyncio.gather(*loops)
        load_seconds = time.monotonic() - began
    await asyncio.sleep(3)  # let disconnected rows leave and queues drain
    gauges = read_metrics(server.url)
    rss_end = rss_bytes(pid)
    return {
        "concurrency": concurrency,
        "duration_s": duration,
        "warmup_s": warmup,
        "load_seconds": round(load_seconds, 1),
        "requests": {k: dict(v) for k, v in tally.status.items()},
        "totals": dict(tally.total()),
        "latency_ms": {
            k: {
                "p50": round(percentile(v, 0.5) * 1000, 1),
                "p99": round(percentile(v, 0.99) * 1000, 1),
                "n": len(v),
            }
            for k, v in sorted(tally.latency.items())
        },
        "latency_all_ms": {
            "p50": round(percentile([x for v in tally.latency.values() for x in v], 0.5) * 1000, 1),
            "p99": round(
                percentile([x for v in tally.latency.values() for x in v], 0.99) * 1000, 1
            ),
        },
        "rss_mib": {
            "start": round(rss_start / 2**20, 1),
            "after_warmup": round(rss_warm / 2**20, 1),
            "peak": round(peak / 2**20, 1),
            "end": round(rss_end / 2**20, 1),
        },
        "after_load": gauges,
        "broken": tally.broken[:20],
        "broken_count": len(tally.broken),
    }


def verdicts(result: dict[str, Any], tolerance: float) -> list[tuple[str, bool]]:
    totals: dict[str, int] = result["totals"]
    server_errors = sum(n for s, n in totals.items() if s.startswith("5"))
    rss = result["rss_mib"]
    growth = rss["end"] / rss["after_warmup"] - 1
    gauges = result["after_load"]
    return [
        (f"no 5xx ({server_errors})", server_errors == 0),
        (f"no broken answer or transport error ({result['broken_count']})", not result["broken"]),
        (
            f"memory end vs after warm-up {growth * 100:+.1f}% (limit {tolerance * 100:.0f}%)",
            growth <= tolerance,
        ),
        (
            f"queue {gauges['queue_depth']:.0f}, rows {gauges['running_rows']:.0f}, open"
            f" generations {gauges['open_generations']:.0f} after the load",
            all(v == 0 for v in gauges.values()),
        ),
        ("some requests served", totals.get("200", 0) > 0),
    ]


def print_report(result: dict[str, Any], checks: list[tuple[str, bool]]) -> None:
    print(
        f"\nsoak: {result['concurrency']} clients for {result['duration_s']:.0f}s after"
        f" {result['warmup_s']:.0f}s warm-up"
    )
    statuses = sorted({s for counts in result["requests"].values() for s in counts})
    print(f"{'kind':<12}" + "".join(f"{s:>10}" for s in statuses) + f"{'p50 ms':>10}{'p99 ms':>10}")
    for kind in KINDS:
        counts = result["requests"].get(kind, {})
        lat = result["latency_ms"].get(kind, {"p50": float("nan"), "p99": float("nan")})
        row = "".join(f"{counts.get(s, 0):>10}" for s in statuses)
        print(f"{kind:<12}{row}{lat['p50']:>10}{lat['p99']:>10}")
    totals = result["totals"]
    row = "".join(f"{totals.get(s, 0):>10}" for s in statuses)
    lat_all = result["latency_all_ms"]
    print(f"{'all':<12}{row}{lat_all['p50']:>10}{lat_all['p99']:>10}")
    rss = result["rss_mib"]
    print(
        f"RSS MiB: start {rss['start']}, after warm-up {rss['after_warmup']},"
        f" peak {rss['peak']}, end {rss['end']}"
    )
    print(f"after the load: {result['after_load']}")
    for line in result["broken"]:
        print(f"  broken: {line}")
    for text, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (600)")
    parser.add_argument("--warmup", type=float, default=30, help="seconds before memory (30)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="server rows per step (8)")
    parser.add_argument("--max-queue", type=int, default=16, help="server waiting requests (16)")
    parser.add_argument("--load-factor", type=float, default=2.0, help="clients / capacity (2)")
    parser.add_argument("--memory-tolerance", type=float, default=0.10, help="(0.10)")
    parser.add_argument(
        "--models-dir", type=Path, help="checkpoints to serve (default: a tiny one)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds: capacity 4 + 4, 2 s of load after 1 s of warm-up",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.max_batch_size, args.max_queue = 2.0, 1.0, 4, 4
    capacity = args.max_batch_size + args.max_queue
    concurrency = max(1, round(args.load_factor * capacity))
    with tempfile.TemporaryDirectory(prefix="charlm-soak-") as tmp:
        folder = args.models_dir
        if folder is None:
            folder = Path(tmp) / "models"
            write_good_model(folder, steps=20 if args.smoke else 200)
        env = {
            "CHARLM_MAX_BATCH_SIZE": str(args.max_batch_size),
            "CHARLM_MAX_QUEUE": str(args.max_queue),
            "CHARLM_LOG_LEVEL": "warning",
        }
        server = start_server(folder, Path(tmp) / "server.log", **env)
        print(
            f"server {server.url} (pid {server.process.pid}): capacity {capacity}"
            f" ({args.max_batch_size} rows + {args.max_queue} queued), {concurrency} clients",
            flush=True,
        )
        try:
            result = asyncio.run(soak(server, concurrency, args.duration, args.warmup))
        finally:
            code = stop_server(server)
            log = server.log()
        result["server_exit_code"] = code
        result["server_log_errors"] = [
            line for line in log.splitlines() if " ERROR " in line or "Traceback" in line
        ][:20]
    checks = verdicts(result, args.memory_tolerance)
    checks.append(
        (
            f"server log has no ERROR ({len(result['server_log_errors'])})",
            not result["server_log_errors"],
        )
    )
    print_report(result, checks)
    result["checks"] = [{"check": text, "ok": ok} for text, ok in checks]
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
