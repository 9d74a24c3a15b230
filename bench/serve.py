"""Serving benchmark: real ``charlm-serve`` processes on 127.0.0.1 driven by async httpx clients,
against plain PyTorch loops with the same weights, measured in the same run.

For each model (by default an untrained ``small`` preset, a 1x512 LSTM, and ``tiny-2x128``, the
``tiny`` preset's width with two layers) and each concurrency level it measures non-streamed
generation, streamed generation and scoring on the batched server, and at 32 streams also on
the same engine with ``CHARLM_MAX_BATCH_SIZE=1`` (one request at a time). Beside them, in this
process (``bench.baselines``): a bare ``nn.LSTM`` + ``torch.multinomial`` sampling loop at the
same batch sizes, its single-stream step, and one bare forward over the scoring batch. Then it
overloads a fresh server at 4x its capacity.

Ratios printed for each model: HTTP generation (non-streamed, streamed) / bare loop at 32 and
128 streams; batched / ``CHARLM_MAX_BATCH_SIZE=1`` at 32 streams; single stream time per
character / eager bare step; in-process scoring / bare forward; HTTP scoring / in-process
(64 requests of one text at once, 64 clients each scoring in a closed loop, and one request of
all 64 texts).

    python -m bench.serve                     # several minutes on a 2-core CPU
    python -m bench.serve --quick             # levels 1 and 32, shorter requests
    python -m bench.serve --smoke             # seconds: one small model, tiny levels
    python -m bench.serve --models-dir checkpoints --models small
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.baselines import LoopTiming, forward_seconds, load_bare_lstm, sampling_loop
from bench.machine import machine_line
from bench.raw_http import open_connections as open_raw
from bench.score_load import score_level, score_one_request, score_raw
from bench.serve_inprocess import build_models, make_texts, padded_inputs, score_seconds
from bench.serve_load import Clients, LevelResult, generation_level, open_connections
from bench.serve_overload import overload_check, overload_lines
from bench.serve_report import TABLE_HEAD, bare_row, ratio_lines, summarize, table_row
from bench.server import Server, start_servers
from models.checkpoint import load_checkpoint


async def run_levels(
    servers: dict[str, Server], model: str, path: Path, args: argparse.Namespace, texts: list[str]
) -> tuple[list[tuple[str, LevelResult]], dict[int, list[LoopTiming]]]:
    """Every level on the batched server (and the unbatched one at its levels); before each
    generation level that is compared, the bare loop at that batch size."""
    bare = load_bare_lstm(path)
    results: list[tuple[str, LevelResult]] = []
    loops: dict[int, list[LoopTiming]] = {level: [] for level in args.compare_levels}
    clients = {name: Clients(server.url) for name, server in servers.items()}
    try:
        for pool in clients.values():  # warm up: connections, first calls
            await open_connections(pool, max(args.levels))
            await generation_level(pool, model, 4, 1, 50, stream=False)
            await generation_level(pool, model, 2, 1, 50, stream=True)
        for level in args.levels:
            per_worker = math.ceil(args.requests / level)
            for mode in ("generate", "stream", "score"):
                if mode != "score" and level in loops:
                    timing = sampling_loop(bare, level, args.chars)
                    loops[level].append(timing)
                    print(bare_row(timing), flush=True)
                for name, pool in clients.items():
                    if name == "unbatched" and level not in args.unbatched_levels:
                        continue
                    if mode == "score":
                        r = await score_level(pool, model, level, per_worker, texts)
                    else:
                        r = await generation_level(
                            pool, model, level, per_worker, args.chars, mode == "stream"
                        )
                    results.append((name, r))
                    print(table_row(name, r), flush=True)
    finally:
        for pool in clients.values():
            await pool.aclose()
    return results, loops


async def paired_checks(
    server: Server, path: Path, model: str, texts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """The targets that compare the server with in-process work, measured in alternation
    (in-process, HTTP, in-process, HTTP, ...) so that a slow period falls on both; medians.

    Single stream: the eager bare step (batch 1) against one streamed completion alone on the
    batched server. Scoring: charlm's in-process batch and one bare forward over the same padded
    batch, against one concurrent HTTP request per text (sent by httpx clients, and by the
    hand-written client of ``bench.raw_http``, whose own cost on the shared cores is small) and
    against one request of all the texts (``"texts": [...]``, what the in-process call does).
    """
    ckpt = load_checkpoint(path)
    bare = load_bare_lstm(path)
    inputs = padded_inputs(ckpt.vocab, texts)
    chars = sum(len(t) for t in texts)
    step, single, inproc, forward, http, one, raw, closed = [], [], [], [], [], [], [], []
    server_cpu, client_cpu = [], []  # per scoring request
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    async with Clients(server.url) as clients:
        await open_connections(clients, len(texts))
        await score_level(clients, model, len(texts), 1, texts)  # warm-up
        for _ in range(args.pairs):
            step.append(sampling_loop(bare, 1, args.single_chars).seconds_per_step)
            r = await generation_level(clients, model, 1, 1, args.single_chars, stream=True)
            # a short completion may come in one event when the machine is busy: then its
            # whole time over its characters stands for the time per character
            whole = r.latencies[0] / r.chars if r.chars else math.nan
            single.append(r.tpoc[0] if r.tpoc else whole)
            inproc.append(score_seconds(ckpt, texts))
            forward.append(forward_seconds(bare, inputs))
            server_start, client_start = server.cpu_seconds(), time.process_time()
            http.append((await score_level(clients, model, len(texts), 1, texts)).chars_per_s)
            server_cpu.append((server.cpu_seconds() - server_start) / len(texts))
            client_cpu.append((time.process_time() - client_start) / len(texts))
            one.append(await score_one_request(clients, model, texts))
            # fresh connections, opened before the clock starts: a pair outlasts the server's
            # keep-alive timeout, which closes idle ones
            connections = await open_raw(host, int(port), len(texts))
            await score_raw(connections, model, texts)  # warm-up
            raw.append(await score_raw(connections, model, texts))
            closed.append(await score_raw(connections, model, texts, args.score_rounds))
            for connection in connections:
                await connection.close()
    inproc_s = statistics.median(inproc)
    return {
        "score_texts": [len(t) for t in texts],
        "bare_step_s": statistics.median(step),
        "single_stream_tpoc_s": statistics.median(single),
        "inprocess_score_s": inproc_s,
        "inprocess_score_chars_per_s": chars / inproc_s,
        "bare_forward_s": statistics.median(forward),
        "http_score_chars_per_s": statistics.median(http),
        "http_score_one_request_chars_per_s": statistics.median(one),
        "http_score_raw_chars_per_s": statistics.median(raw),
        "http_score_closed_loop_chars_per_s": statistics.median(closed),
        "score_rounds": args.score_rounds,
        "http_score_server_cpu_s_per_request": statistics.median(server_cpu),
        "http_score_client_cpu_s_per_request": statistics.median(client_cpu),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--models-dir", type=Path, help="use these checkpoints (default: build untrained ones)")
    add("--models", default="small,tiny-2x128", help="model ids (file stems) or shapes to build")
    add("--levels", default="1,8,32,128", help="concurrency levels of the batched server")
    add("--compare-levels", default="32,128", help="levels compared with the bare loop")
    add("--unbatched-levels", default="32", help="levels also run with one request at a time")
    add("--chars", type=int, default=1000, help="characters per completion")
    add("--requests", type=int, default=8, help="completions per level, at least one per worker")
    add("--single-chars", type=int, default=400, help="characters of the single-stream check")
    add("--max-batch-size", type=int, default=128, help="of the batched server")
    add("--threads", type=int, default=1, help="torch threads, servers and here")
    add("--pairs", type=int, default=11, help="alternations of the paired checks")
    add("--score-rounds", type=int, default=8, help="requests per client, closed-loop scoring")
    add("--overload-batch", type=int, default=32, help="max_batch_size of the overload server")
    add("--overload-queue", type=int, default=32, help="max_queue of the overload server")
    add("--bursts", type=int, default=3, help="overload bursts, each 4x the capacity")
    add("--settle", type=float, default=2.0, help="seconds after the bursts before the last RSS")
    add("--quick", action="store_true", help="levels 1,32; 200 characters; 3 pairs")
    add("--smoke", action="store_true", help="seconds: one tiny model, levels 1,4, 20 characters")
    add("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.compare_levels, args.chars, args.pairs = "1,32", "32", 200, 3
    if args.smoke:
        args.models, args.levels, args.compare_levels, args.unbatched_levels = (
            "tiny-2x128", "1,4", "4", "4"
        )  # fmt: skip
        args.chars, args.requests, args.single_chars, args.pairs = 20, 4, 100, 1
        args.score_rounds = 2
        args.max_batch_size, args.overload_batch, args.overload_queue, args.settle = 8, 2, 2, 0.2
    for name in ("levels", "compare_levels", "unbatched_levels"):
        setattr(args, name, [int(x) for x in getattr(args, name).split(",") if x])
    args.models = args.models.split(",")
    args.levels = sorted(set(args.levels) | set(args.compare_levels) | set(args.unbatched_levels))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="charlm-bench-serve-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> int:
    models_dir = args.models_dir or build_models(work / "models", args.models)
    texts = make_texts(200, 64)
    print(f"# charlm serving benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"{machine_line(args.threads)}; models from "
          f"{args.models_dir or 'freshly built, untrained (throughput only)'}")  # fmt: skip
    common = {
        "OMP_NUM_THREADS": str(args.threads),
        "CHARLM_MAX_QUEUE": "4096",
        "CHARLM_MAX_NEW_CHARS": str(max(args.chars, args.single_chars, 4096)),
        "CHARLM_DEFAULT_MODEL": args.models[0],
    }
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    for model in args.models:
        path = models_dir / f"{model}.safetensors"
        batched_env = {**common, "CHARLM_MAX_BATCH_SIZE": str(args.max_batch_size)}
        unbatched_env = {**common, "CHARLM_MAX_BATCH_SIZE": "1"}
        batched, unbatched = start_servers(
            [
                (models_dir, batched_env, work / f"{model}-batched.log"),
                (models_dir, unbatched_env, work / f"{model}-unbatched.log"),
            ]
        )
        try:
            print(f"\n## model {model}\n\n{TABLE_HEAD}", flush=True)
            servers = {"batched": batched, "unbatched": unbatched}
            results, loops = asyncio.run(run_levels(servers, model, path, args, texts))
            paired = asyncio.run(paired_checks(batched, path, model, texts, args))
        finally:
            batched.stop()
            unbatched.stop()
        summary = summarize(results, loops, paired, args.unbatched_levels)
        report["models"][model] = summary
        print(f"\nratios ({model}, medians of {args.pairs} alternations for the paired checks):")
        for line in ratio_lines(summary):
            print("- " + line)

    overload_env = {
        **common,
        "CHARLM_MAX_BATCH_SIZE": str(args.overload_batch),
        "CHARLM_MAX_QUEUE": str(args.overload_queue),
    }
    (server,) = start_servers([(models_dir, overload_env, work / "overload.log")])
    capacity = args.overload_batch + args.overload_queue
    try:
        over = asyncio.run(
            overload_check(server, args.models[0], capacity, args.chars, args.bursts, args.settle)
        )
    finally:
        server.stop()
    report["overload"] = over
    print()
    print("\n".join(overload_lines(over, args.models[0], args.overload_batch, args.overload_queue)))
    print("\nGPU target (256 streams of a 3x512 LSTM on an H100): not measured here.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
