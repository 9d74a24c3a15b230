"""Evaluation benchmark: what validation costs beside training, and whether --max-time holds.

For each preset (``tiny``, ``small``, ``medium``) on ``../shared/data/tinyshakespeare.txt`` (the
last 10% is validation), in this process:

1. a run with the preset's defaults and ``--max-time`` of ``--budget`` seconds (files written to
   a temporary folder, as ``charlm-train`` writes them): its training characters per second, its
   wall time, its validations and their share of the wall time;
2. with the trained model, on the validation text the run would read (``--eval-max-chars``):
   characters per second of the parallel reading (the run's validation), of the exact reading
   (one stream, what ``charlm-eval`` does) and of training; and the parallel figure's difference
   from the exact one for several warm-up lengths (``--warmups``).

Then ``charlm-train --max-time --cli-budget`` with the default preset, as a process: the seconds
from the line it prints once the data are loaded and the model built to its exit.

    python -m bench.evaluation                                  # 120 s per preset, about 15 min
    python -m bench.evaluation --budget 60 --presets tiny small --cli-budget 0
    python -m bench.evaluation --smoke                          # seconds: generated text
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.machine import machine_line
from bench.smoke import smoke_corpus
from training.config import config_from_preset
from training.data import Corpus, load_corpus
from training.distributed import choose_num_threads
from training.evaluate import EvalResult, Reading, evaluate_docs, limit_docs
from training.loop import Trainer
from training.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
#: the smoke run's presets are this small, whatever their real sizes
SMOKE_SIZES = {"embed_size": 16, "hidden_size": 32, "num_layers": 1, "batch_size": 4, "seq_len": 16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="corpus (default: tinyshakespeare)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--budget", type=float, default=120.0, help="--max-time of each run")
    parser.add_argument("--cli-budget", type=float, default=120.0, help="0 = no CLI run")
    parser.add_argument("--warmups", type=int, nargs="+", default=[0, 32, 64, 128, 256])
    parser.add_argument("--threads", type=int, help="torch threads (default: for the machine)")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds: generated text, 1x32 models, 1.5 s budgets"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.budget, args.cli_budget, args.warmups = 1.5, 3.0, [0, 128]
    return args


def timed(work: Callable[[], EvalResult]) -> tuple[EvalResult, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def bench_preset(
    preset: str, corpus: Corpus, folder: Path, args: argparse.Namespace
) -> dict[str, Any]:
    sizes = SMOKE_SIZES if args.smoke else {}
    config = config_from_preset(preset, max_time=args.budget, max_steps=None, device="cpu", **sizes)
    started = time.perf_counter()
    trainer = Trainer(config, corpus, folder / f"{preset}.safetensors")
    result = trainer.run()
    outside = time.perf_counter() - started  # model building included
    model = trainer.model
    docs = limit_docs(corpus.val_docs, config.eval_max_chars)
    reading = Reading(config.eval_streams, config.eval_warmup)
    evaluate_docs(model, docs[:1], reading)  # the first forward's set-up, not counted
    parallel = min(timed(lambda: evaluate_docs(model, docs, reading))[1] for _ in range(2))
    exact, single = timed(lambda: evaluate_docs(model, docs))
    differences = {
        w: evaluate_docs(model, docs, Reading(config.eval_streams, w)).nats_per_char
        - exact.nats_per_char
        for w in args.warmups
    }
    return {
        "preset": preset,
        "config": config,
        "result": result,
        "outside": outside,
        "chars": exact.num_chars,
        "exact": exact.nats_per_char,
        "parallel_cps": exact.num_chars / parallel,
        "single_cps": exact.num_chars / single,
        "differences": differences,
    }


def print_tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print("\n| preset | training chars/s | validation chars/s | single stream chars/s |"
          " validation / training | validation / single stream |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        train = r["result"].chars_per_sec
        print(
            f"| {r['preset']} | {train:,.0f} | {r['parallel_cps']:,.0f} | {r['single_cps']:,.0f}"
            f" | {r['parallel_cps'] / train:.1f}x | {r['parallel_cps'] / r['single_cps']:.1f}x |"
        )
    print(f"\n| preset | wall s (--max-time {args.budget:g}) | steps | validations | eval s |"
          " eval share |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        res = r["result"]
        print(
            f"| {r['preset']} | {res.wall_seconds:.1f} ({r['outside']:.1f} with set-up) |"
            f" {res.step:,} | {res.num_evals} | {res.eval_seconds:.2f} |"
            f" {res.eval_seconds / res.wall_seconds:.1%} |"
        )
    warmups = list(rows[0]["differences"]) if rows else []
    print(
        "\nparallel - exact validation figure (nats/char) by warm-up W, the presets'"
        f" {rows[0]['config'].eval_streams if rows else 0} streams:"
    )
    print(
        "| preset | characters | exact nats/char | " + " | ".join(f"W={w}" for w in warmups) + " |"
    )
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in warmups) + " |")
    for r in rows:
        diffs = " | ".join(f"{d:+.6f}" for d in r["differences"].values())
        print(f"| {r['preset']} | {r['chars']:,} | {r['exact']:.5f} | {diffs} |")


def bench_cli(data: Path, folder: Path, args: argparse.Namespace, threads: int) -> None:
    """``charlm-train --max-time`` as a process: seconds from its first line to its exit."""
    command = [sys.executable, "-m", "training", "--data", str(data), "--device", "cpu"]
    command += ["--out", str(folder / "cli.safetensors"), "--cache-dir", str(folder / "cache")]
    command += ["--max-time", f"{args.cli_budget:g}"]
    if args.smoke:
        command += ["--preset", "tiny"]
        for key, value in SMOKE_SIZES.items():
            command += ["--" + key.replace("_", "-"), str(value)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHARLM_NUM_THREADS": str(threads)}
    launched = time.perf_counter()
    with (folder / "cli.stderr").open("w") as errors:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        assert proc.stdout is not None
        loaded = None
        last = ""
        for line in proc.stdout:
            if loaded is None and " parameters, vocabulary " in line:
                loaded = time.perf_counter()  # printed once the data are loaded
            last = line.strip() or last
        code = proc.wait()
    ended = time.perf_counter()
    if code != 0 or loaded is None:
        print(f"charlm-train failed ({code}): {(folder / 'cli.stderr').read_text()[-2000:]}")
        raise SystemExit(1)
    after = ended - loaded
    print(
        f"\ncharlm-train --max-time {args.cli_budget:g}: {after:.1f} s of wall time after the data"
        f" were loaded, {after - args.cli_budget:+.1f} s past the budget (target: within"
        f" {args.cli_budget + 10:g} s); {loaded - launched:.1f} s to start and load the data"
    )
    print(f"its last line: {last}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or choose_num_threads()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="charlm-bench-eval-") as tmp:
        folder = Path(tmp)
        data = smoke_corpus(folder) if args.smoke else args.data
        if not data.is_file():
            print(f"{data}: corpus not found", file=sys.stderr)
            return 2
        corpus = load_corpus([str(data)], val_fraction=0.1, cache_dir=folder / "cache")
        print(machine_line(threads))
        print(
            f"corpus {data.name}: {len(corpus.train_ids):,} training and"
            f" {corpus.num_val_chars:,} validation characters; --max-time {args.budget:g} per"
            " preset, each preset's defaults otherwise; fp32 on cpu"
        )
        rows = []
        for preset in args.presets:
            rows.append(bench_preset(preset, corpus, folder, args))
            print(f"  {preset}: done at load average {os.getloadavg()[0]:.2f}", flush=True)
        print_tables(rows, args)
        if args.cli_budget > 0:
            bench_cli(data, folder, args, threads)
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
