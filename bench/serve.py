"""Serving benchmark: real ``charlm-serve`` processes on 127.0.0.1 driven by async httpx clients.

For each model (the default ``small`` preset, a 1x512 LSTM, and the ``tiny`` preset, a 1x128 LSTM)
and each concurrency level it measures non-streamed generation, streamed generation and scoring on
two servers started side by side: the batched engine and the same engine with
``CHARLM_MAX_BATCH_SIZE=1`` (one request at a time). The levels alternate between the two servers,
so a slow period of a shared machine falls on both. In the same run it times the bare model step
in-process (one forward of one character plus ``choose_next``, batch 1), scores the benchmark's
texts in-process in one batch, and overloads a server at 4x its capacity.

Without ``--models-dir`` the script builds untrained models of the preset sizes (vocabulary from
``../shared/data/tinyshakespeare.txt`` when present): the cost of a step does not depend on the
weights, so throughput figures hold for trained models of the same size.

    python -m bench.serve                     # about 4 minutes on a 2-core CPU
    python -m bench.serve --quick             # levels 1 and 32 only, shorter requests
    python -m bench.serve --models-dir checkpoints --models small
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.serve_inprocess import bare_step_seconds, build_models, make_texts, score_chars_per_s
from bench.serve_load import (
    Clients,
    LevelResult,
    burst,
    generation_level,
    open_connections,
    percentile,
    score_level,
)
from models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- servers
class Server:
    """One ``charlm-serve`` process (``python -m app.cli``) on a free port."""

    def __init__(self, models_dir: Path, env: dict[str, str], log: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CHARLM_")}
        environ.update(env)
        args = [sys.executable, "-m", "app.cli", "--models-dir", str(models_dir)]
        args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        self.log = log
        self._log_handle = log.open("wb")
        self.process = subprocess.Popen(
            args, cwd=REPO, env=environ, stdout=self._log_handle, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{log.read_text()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{log.read_text()}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_handle.close()


# ---------------------------------------------------------------------------- report
def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds == seconds else "-"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}" if seconds == seconds else "-"


def table_row(server: str, r: LevelResult) -> str:
    return (
        f"| {server} | {r.mode} | {r.concurrency} | {r.requests_per_s:.1f} "
        f"| {ms(percentile(r.ttfc, 0.5))} / {ms(percentile(r.ttfc, 0.99))} "
        f"| {us(percentile(r.tpoc, 0.5))} / {us(percentile(r.tpoc, 0.99))} "
        f"| {r.chars_per_s:,.0f} | {r.errors()} |"
    )


TABLE_HEAD = (
    "| server | mode | conc. | req/s | TTFC p50 / p99 ms | TPOC p50 / p99 us | chars/s | errors |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
)


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


# ---------------------------------------------------------------------------- the run
async def run_levels(
    batched: Server, unbatched: Server, model: str, args: argparse.Namespace, texts: list[str]
) -> list[tuple[str, LevelResult]]:
    results: list[tuple[str, LevelResult]] = []
    clients = {"batched": Clients(batched.url), "unbatched": Clients(unbatched.url)}
    try:
        for pool in clients.values():  # warm up: connections, first calls
            await open_connections(pool, max(args.levels))
            await generation_level(pool, model, 4, 1, 50, stream=False)
            await generation_level(pool, model, 2, 1, 50, stream=True)
        for level in args.levels:
            per_worker = max(1, args.requests // level)
            for mode in ("generate", "stream", "score"):
                for name, pool in clients.items():
                    if mode == "score":
                        r = await score_level(pool, model, level, per_worker * 4, texts)
                    else:
                        stream = mode == "stream"
                        r = await generation_level(
                            pool, model, level, per_worker, args.chars, stream
                        )
                    results.append((name, r))
                    print(table_row(name, r), flush=True)
    finally:
        for pool in clients.values():
            await pool.aclose()
    return results


async def paired_checks(
    server: Server, path: Path, model: str, texts: list[str], pairs: int
) -> dict[str, float]:
    """The targets that compare the server with in-process work, measured in alternation
    (in-process, HTTP, in-process, HTTP, ...) so that a slow period falls on both; medians.

    Single stream: the bare step against one streamed completion of 400 characters alone on the
    batched server. Scoring: the 64 texts of 200 characters in one in-process batch against 64
    concurrent HTTP requests of one text each.
    """
    ckpt = load_checkpoint(path)
    bare, single, inproc, http = [], [], [], []
    server_cpu, client_cpu = [], []  # per scoring request
    async with Clients(server.url) as clients:
        await open_connections(clients, 64)
        await score_level(clients, model, 64, 1, texts)  # warm-up
        for _ in range(pairs):
            bare.append(bare_step_seconds(ckpt))
            r = await generation_level(clients, model, 1, 1, 400, stream=True)
            single.append(r.tpoc[0] if r.tpoc else float("nan"))
            inproc.append(score_chars_per_s(ckpt, texts))
            server_start, client_start = server.cpu_seconds(), time.process_time()
            http.append((await score_level(clients, model, 64, 1, texts)).chars_per_s)
            server_cpu.append((server.cpu_seconds() - server_start) / 64)
            client_cpu.append((time.process_time() - client_start) / 64)
    return {
        "score_texts": [len(t) for t in texts],
        "inprocess_score_batch_s": sum(len(t) for t in texts) / statistics.median(inproc),
        "http_score_server_cpu_s_per_request": statistics.median(server_cpu),
        "http_score_client_cpu_s_per_request": statistics.median(client_cpu),
        "bare_step_s": statistics.median(bare),
        "single_stream_tpoc_s": statistics.median(single),
        "inprocess_score_chars_per_s": statistics.median(inproc),
        "http_score_chars_per_s_c64": statistics.median(http),
    }


async def overload_check(server: Server, model: str, capacity: int, chars: int) -> dict[str, Any]:
    """Send 4x ``capacity`` requests at once, three times; memory before, between and after.

    The first overload after the server starts is warm-up (a one-time stall of some tens of
    milliseconds on first use of the refusal path and of that many connections); its reply
    times are reported on their own."""
    rounds, peaks = [], []
    await burst(server.url, model, capacity, chars)  # warm-up, within capacity
    first = await burst(server.url, model, 4 * capacity, chars)  # warm-up, the first overload
    baseline = server.rss_mb()
    for _ in range(3):
        rounds.append(await burst(server.url, model, 4 * capacity, chars))
        peaks.append(server.rss_mb())
    await asyncio.sleep(2.0)
    after = server.rss_mb()
    edge = edge_refusal_times(httpx.get(server.url + "/metrics", timeout=10).text)
    rejected = [t for r in rounds for t in r.rejected_latencies]
    statuses: dict[int, int] = {}
    for r in rounds:
        for status, count in r.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "sent": sum(r.sent for r in rounds),
        "statuses": statuses,
        "rejected_p50_ms": percentile(rejected, 0.5) * 1000,
        "rejected_p99_ms": percentile(rejected, 0.99) * 1000,
        "rejected_max_ms": max(rejected, default=float("nan")) * 1000,
        "first_overload_rejected_p50_ms": percentile(first.rejected_latencies, 0.5) * 1000,
        "first_overload_rejected_max_ms": max(first.rejected_latencies, default=float("nan"))
        * 1000,
        "retry_after": sorted({v for r in rounds for v in r.retry_after}),
        "rss_baseline_mb": baseline,
        "rss_after_bursts_mb": peaks,
        "rss_after_mb": after,
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


def ratio_of(results: list[tuple[str, LevelResult]], mode: str, level: int) -> float:
    pick = {name: r for name, r in results if r.mode == mode and r.concurrency == level}
    if "batched" not in pick or "unbatched" not in pick or not pick["unbatched"].chars_per_s:
        return float("nan")
    return pick["batched"].chars_per_s / pick["unbatched"].chars_per_s


def ratio_lines(s: dict[str, Any]) -> list[str]:
    """The targets of the serving benchmark, each with its figure and verdict."""
    gen, stream = s["ratio_generate_c32"], s["ratio_stream_c32"]
    single, scoring = s["single_stream_tpoc_over_bare"], s["http_score_over_inprocess"]
    return [
        f"non-streamed, 32 concurrent, batched/unbatched chars/s: {gen:.1f}x "
        f"(target >= 8x: {verdict(gen >= 8)})",
        f"streamed, 32 concurrent, batched/unbatched chars/s: {stream:.1f}x "
        f"(target >= 4x: {verdict(stream >= 4)})",
        f"single stream time per character / bare step: {single:.2f} "
        f"(target <= 1.25: {verdict(single <= 1.25)})",
        f"HTTP scoring, 64 concurrent x 200 chars, {s['http_score_chars_per_s_c64']:,.0f} chars/s"
        f" / in-process one batch {s['inprocess_score_chars_per_s']:,.0f} chars/s: "
        f"{scoring:.2f} (target >= 0.70: {verdict(scoring >= 0.7)}); CPU per request: server "
        f"{ms(s['http_score_server_cpu_s_per_request'])} ms (model included), client "
        f"{ms(s['http_score_client_cpu_s_per_request'])} ms; in-process batch: "
        f"{ms(s['inprocess_score_batch_s'])} ms for all {len(s['score_texts'])}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, help="use these checkpoints (default: build)")
    parser.add_argument("--models", default="small,tiny", help="model ids (file stems)")
    parser.add_argument("--levels", default="1,8,32,128", help="concurrency levels")
    parser.add_argument("--chars", type=int, default=200, help="characters per completion")
    parser.add_argument("--requests", type=int, default=32, help="completions per level")
    parser.add_argument("--max-batch-size", type=int, default=128, help="of the batched server")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, servers and here")
    parser.add_argument("--quick", action="store_true", help="levels 1,32; 100 characters")
    parser.add_argument("--pairs", type=int, default=11, help="alternations of paired checks")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.chars = "1,32", 100
    args.levels = [int(x) for x in args.levels.split(",")]
    models = args.models.split(",")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="charlm-bench-serve-"))
    models_dir = args.models_dir or build_models(work / "models", models)
    texts = make_texts(200, 64)
    print(f"# charlm serving benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; torch "
          f"{torch.__version__}, {args.threads} thread(s); models from "
          f"{args.models_dir or 'freshly built, untrained (throughput only)'}")  # fmt: skip
    common = {
        "OMP_NUM_THREADS": str(args.threads),
        "CHARLM_MAX_QUEUE": "4096",
        "CHARLM_MAX_NEW_CHARS": str(max(args.chars, 4096)),
        "CHARLM_DEFAULT_MODEL": models[0],
    }
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    for model in models:
        path = models_dir / f"{model}.safetensors"
        batched_env = {**common, "CHARLM_MAX_BATCH_SIZE": str(args.max_batch_size)}
        batched = Server(models_dir, batched_env, work / f"{model}-batched.log")
        unbatched_env = {**common, "CHARLM_MAX_BATCH_SIZE": "1"}
        unbatched = Server(models_dir, unbatched_env, work / f"{model}-unbatched.log")
        try:
            print(f"\n## model {model}\n\n{TABLE_HEAD}", flush=True)
            results = asyncio.run(run_levels(batched, unbatched, model, args, texts))
            paired = asyncio.run(paired_checks(batched, path, model, texts, args.pairs))
        finally:
            batched.stop()
            unbatched.stop()
        summary: dict[str, Any] = {
            **paired,
            "ratio_generate_c32": ratio_of(results, "generate", 32),
            "ratio_stream_c32": ratio_of(results, "stream", 32),
            "single_stream_tpoc_over_bare": paired["single_stream_tpoc_s"] / paired["bare_step_s"],
            "http_score_over_inprocess": paired["http_score_chars_per_s_c64"]
            / paired["inprocess_score_chars_per_s"],
            "levels": [
                {"server": n, **asdict(r), "statuses": dict(r.statuses)} for n, r in results
            ],
        }
        report["models"][model] = summary
        print(f"\nbare model step (in-process, batch 1, oneDNN off): "
              f"{us(paired['bare_step_s'])} us per character; ratios ({model}):")  # fmt: skip
        for line in ratio_lines(summary):
            print("- " + line)

    capacity_env = {**common, "CHARLM_MAX_BATCH_SIZE": "32", "CHARLM_MAX_QUEUE": "32"}
    server = Server(models_dir, capacity_env, work / "overload.log")
    try:
        over = asyncio.run(overload_check(server, models[0], 64, args.chars))
    finally:
        server.stop()
    report["overload"] = over
    print(f"\n## overload ({models[0]}): max_batch_size 32 + max_queue 32, 3 bursts of "
          f"{4 * 64} requests at once")  # fmt: skip
    print(f"- statuses: {over['statuses']} (0: no answer); 5xx: {over['server_errors']}")
    print(f"- 429 reply time p50 {over['rejected_p50_ms']:.1f} ms, p99 "
          f"{over['rejected_p99_ms']:.1f} ms, max {over['rejected_max_ms']:.1f} ms "
          f"(target < 50 ms: {verdict(over['rejected_max_ms'] < 50)}); Retry-After "
          f"{', '.join(over['retry_after'])}")  # fmt: skip
    print(f"- the first overload after start (warm-up, not counted above): 429 reply time p50 "
          f"{over['first_overload_rejected_p50_ms']:.1f} ms, max "
          f"{over['first_overload_rejected_max_ms']:.1f} ms")  # fmt: skip
    print(f"- server time of the {over['edge_refusals']:.0f} 429s given at the edge (first "
          f"middleware to last byte): mean {over['edge_refusal_server_mean_ms']:.2f} ms, "
          f"{over['edge_refusals_within_5ms']:.0f} within 5 ms")  # fmt: skip
    bursts = ", ".join(f"{mb:.0f}" for mb in over["rss_after_bursts_mb"])
    print(f"- server RSS: {over['rss_baseline_mb']:.0f} MB before, {bursts} MB after each "
          f"burst, {over['rss_after_mb']:.0f} MB 2 s later")  # fmt: skip
    print("\nGPU target (256 streams of a 3x512 LSTM on an H100): not measured, no GPU here.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
