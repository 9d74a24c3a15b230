"""Known-entropy benchmark: charlm on Markov-chain text, against the chain's exact entropy rate.

For each grid point (order k, alphabet of A characters, training characters), a chain is drawn
(``bench.markov_chain``: each context's row from a symmetric Dirichlet), a training text and a
separate validation text are sampled from it, and the chain's entropy rate is computed exactly.
Then charlm runs as a user runs it, as processes in a folder of their own:

    charlm-train --data train.txt --val-data val.txt --max-time 300 --out model.safetensors
    charlm-eval --checkpoint model.safetensors --data val.txt

(no other flags unless ``--extra-args`` gives them; its encoded corpora are cached in the run's
folder). The table puts charlm's exact validation bits/char beside the entropy, the oracle (the
chain itself scoring the validation text, which differs from the entropy by sampling noise) and
a count model of the right order (add-delta, delta picked on the end of the training text), the
reference no general model is told about. Target: charlm within 0.03 bits/char of the entropy.

    python -m bench.markov                                   # 3 runs of 300 s, sequentially
    python -m bench.markov --grid 2:32:1e6 --max-time 60 --json markov.json
    python -m bench.markov --extra-args="--preset small"     # flags passed to charlm-train
    python -m bench.markov --smoke                           # seconds: order 1, A=8, 20 kB
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench import markov_chain as mc
from bench.machine import machine_line
from training.distributed import choose_num_threads

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GRID = "1:64:3e5,2:32:1e6,3:16:3e6"
TARGET = 0.03  # bits/char above the entropy
TABLE_HEAD = (
    "| order | alphabet | train chars | exact entropy | oracle on val | count model (gap) |"
    " charlm (gap) | target | verdict |"
)
EVAL_CODE = "from training.checkpoint_cli import eval_main; raise SystemExit(eval_main())"


def parse_grid(spec: str) -> list[tuple[int, int, int]]:
    """``"2:32:1e6,3:16:3e6"`` -> [(order, alphabet size, training characters), ...]."""
    points = []
    for item in spec.split(","):
        try:
            order, size, chars = item.strip().split(":")
            point = (int(order), int(size), int(float(chars)))
        except ValueError:
            raise ValueError(f"grid point {item!r} is not ORDER:ALPHABET:CHARS") from None
        mc.check_size(point[0], point[1])
        if point[2] < 1000:
            raise ValueError(f"grid point {item!r}: at least 1000 training characters")
        points.append(point)
    return points


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--grid", default=DEFAULT_GRID, help=f"ORDER:ALPHABET:CHARS,... ({DEFAULT_GRID})"
    )
    parser.add_argument("--max-time", type=float, default=300.0, help="charlm-train's (300)")
    parser.add_argument("--val-chars", type=int, default=100_000, help="validation text (100000)")
    parser.add_argument(
        "--concentration",
        type=float,
        default=mc.CONCENTRATION,
        help=f"Dirichlet concentration of the chains' rows ({mc.CONCENTRATION})",
    )
    parser.add_argument("--seed", type=int, default=0, help="chains and texts (0)")
    parser.add_argument(
        "--extra-args", default="", help='more charlm-train flags: --extra-args="--preset small"'
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once (1: the budget is wall clock)"
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--keep", type=Path, help="keep texts, checkpoints and logs here")
    parser.add_argument("--smoke", action="store_true", help="seconds: order 1, A=8, 20 kB, 5 s")
    args = parser.parse_args(argv)
    if args.smoke:
        args.grid, args.max_time, args.val_chars = "1:8:2e4", 5.0, 5_000
    try:
        args.points = parse_grid(args.grid)
    except ValueError as exc:
        parser.error(str(exc))
    if args.jobs < 1 or args.val_chars < 1000 or args.max_time <= 0:
        parser.error("--jobs must be >= 1, --val-chars >= 1000 and --max-time > 0")
    return args


def make_texts(
    point: tuple[int, int, int], args: argparse.Namespace, folder: Path
) -> dict[str, Any]:
    """Draw the chain, write its texts, and score the validation text with the chain itself
    and with the count model."""
    order, size, chars = point
    chain_seed, train_seed, val_seed = np.random.SeedSequence([args.seed, order, size]).spawn(3)
    chain = mc.random_chain(order, size, chain_seed, args.concentration)
    stationary = mc.stationary_distribution(chain)
    pi = stationary.probs
    train = mc.sample_ids(chain, chars, train_seed, pi)
    val = mc.sample_ids(chain, args.val_chars, val_seed, pi)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(mc.decode(chain, train), encoding="utf-8")
    (folder / "val.txt").write_text(mc.decode(chain, val), encoding="utf-8")
    entropy = mc.entropy_rate(chain, pi)
    count = mc.fit_count_model(train, order, size)
    count_bits = float(count.log_losses(val).mean())
    return {
        "order": order,
        "alphabet_size": size,
        "alphabet": chain.alphabet,
        "train_chars": chars,
        "val_chars": args.val_chars,
        "concentration": args.concentration,
        "seed": args.seed,
        "entropy_bits": entropy,
        "stationary_iterations": stationary.iterations,
        "stationary_residual": stationary.residual,
        "oracle_val_bits": float(mc.oracle_log_losses(chain, val, pi).mean()),
        "count_val_bits": count_bits,
        "count_delta": count.delta,
        "count_gap": count_bits - entropy,
    }


def run_logged(command: list[str], log: Path, env: dict[str, str]) -> tuple[int, str, float]:
    """Run ``command`` in the repository; stdout to the caller, stderr to ``log``."""
    started = time.perf_counter()
    with log.open("w") as errors:
        done = subprocess.run(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
    return done.returncode, done.stdout, time.perf_counter() - started


def run_charlm(row: dict[str, Any], args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """``charlm-train`` then ``charlm-eval`` on the validation text, as processes."""
    out = folder / "model.safetensors"
    train = [sys.executable, "-m", "training", "--data", str(folder / "train.txt")]
    train += ["--val-data", str(folder / "val.txt"), "--max-time", f"{args.max_time:g}"]
    train += ["--out", str(out), *shlex.split(args.extra_args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHARLM_CACHE_DIR": str(folder / "cache")}
    code, stdout, seconds = run_logged(train, folder / "train.stderr", env)
    (folder / "train.stdout").write_text(stdout, encoding="utf-8")
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    row["charlm_train_seconds"] = seconds
    model = next((i for i, x in enumerate(lines) if " parameters, vocabulary " in x), None)
    row["charlm_setup"] = lines[:model]  # what the run chose before it built the model
    row["charlm_model"] = lines[model] if model is not None else None
    row["charlm_last_line"] = lines[-1] if lines else None
    if code != 0 or not out.is_file():
        tail = (folder / "train.stderr").read_text(encoding="utf-8")[-2000:]
        row["charlm_error"] = f"charlm-train exited with {code}: {tail}"
        return row
    evaluate = [sys.executable, "-c", EVAL_CODE, "--checkpoint", str(out)]
    evaluate += ["--data", str(folder / "val.txt")]
    code, stdout, _ = run_logged(evaluate, folder / "eval.stderr", env)
    if code != 0:
        tail = (folder / "eval.stderr").read_text(encoding="utf-8")[-2000:]
        row["charlm_error"] = f"charlm-eval exited with {code}: {tail}"
        return row
    report = json.loads(stdout.strip().splitlines()[-1])
    if report["num_chars"] != row["val_chars"] or report["num_unknown"]:
        row["charlm_error"] = f"charlm-eval scored the text otherwise: {report}"
        return row
    row["charlm_eval"] = report
    row["charlm_val_bits"] = float(report["bits_per_char"])
    row["charlm_gap"] = row["charlm_val_bits"] - row["entropy_bits"]
    row["met"] = row["charlm_gap"] <= TARGET
    return row


def bench_point(
    point: tuple[int, int, int], args: argparse.Namespace, root: Path
) -> dict[str, Any]:
    order, size, chars = point
    folder = root / f"order{order}-a{size}-n{chars}"
    row = make_texts(point, args, folder)
    row["charlm_command"] = (
        f"charlm-train --data train.txt --val-data val.txt --max-time {args.max_time:g}"
        f" --out model.safetensors {args.extra_args}".strip()
    )
    print(
        f"order {order}, A={size}, {chars:,} chars: entropy {row['entropy_bits']:.4f} bits/char"
        f" (stationary in {row['stationary_iterations']} iterations), count model"
        f" {row['count_val_bits']:.4f} (delta {row['count_delta']:.3g}); training charlm...",
        flush=True,
    )
    return run_charlm(row, args, folder)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n" + TABLE_HEAD)
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        if "charlm_val_bits" in r:
            charlm = f"{r['charlm_val_bits']:.4f} ({r['charlm_gap']:+.4f})"
            verdict = "met" if r["met"] else "missed"
        else:
            charlm, verdict = "n/a", "failed"
        print(
            f"| {r['order']} | {r['alphabet_size']} | {r['train_chars']:,} |"
            f" {r['entropy_bits']:.4f} | {r['oracle_val_bits']:.4f} |"
            f" {r['count_val_bits']:.4f} ({r['count_gap']:+.4f}) | {charlm} |"
            f" {TARGET:g} | {verdict} |"
        )
    print("\nbits/char; gaps are to the exact entropy; the oracle's distance from it is the")
    print("validation text's sampling noise, which every model's figure shares.")
    for r in rows:
        name = f"order {r['order']}, A={r['alphabet_size']}"
        if "charlm_error" in r:
            print(f"{name}: {r['charlm_error']}")
        else:
            print(f"{name}: {r['charlm_model']}")
            for line in [*r["charlm_setup"], r["charlm_last_line"]]:
                print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(machine_line(choose_num_threads()) + " (as charlm-train chooses them now)")
    print(
        f"chains: rows from Dirichlet({args.concentration:g}), seed {args.seed}; validation"
        f" {args.val_chars:,} chars; charlm-train --max-time {args.max_time:g}"
        f" {args.extra_args or '(no other flags)'}; {args.jobs} run(s) at once"
    )
    with tempfile.TemporaryDirectory(prefix="charlm-bench-markov-") as tmp:
        root = args.keep or Path(tmp)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rows = list(pool.map(lambda p: bench_point(p, args, root), args.points))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0 if all("charlm_val_bits" in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
