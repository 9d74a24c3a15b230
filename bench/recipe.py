"""The default recipe as a user meets it: ``charlm-train --data CORPUS --max-time B``, nothing else.

For each budget ``B`` (``--budgets``), ``charlm-train`` runs as its own process with the default
preset (``auto``) and no other flag (``--extra-args`` adds some), holding out the last 10% of the
corpus as validation (its default ``--val-fraction 0.1``). The wall time of the whole process is
timed: start-up, reading the corpus, ``auto``'s speed probe, training, validations and files.
Then ``charlm-eval`` scores that validation text exactly (one stream, state carried, ``BOS``
first), written to a file character for character as ``charlm-train`` cut it (checked against
``training.data``'s split), and with ``--adapt`` ``charlm-eval --adapt`` scores it adaptively.
The cost per character of each scoring is its process's wall time less that of the same command
on the text's first ``SHORT_CHARS`` characters (start-up and loading), over the characters between.

It prints what ``auto`` chose, the best validation figure of the run (its own validations, which
may read part of the text), the exact figure, the target where the corpus has one and whether it
was met (the exact figure at or below it, and the process ended within the budget):
tinyshakespeare, <= 1.40 nats/char within 480 s and <= 1.35 within 1800 s on the CPU, <= 1.38
within 180 s with ``--device cuda``; adaptive scoring >= 0.05 bits/char below static with the
480 s model. It draws validation nats/char against the run's wall clock from each run's metrics
(``X.metrics.jsonl``), all budgets on one plot (``mine.png`` in ``--out``).

    python -m bench.recipe --adapt                       # tinyshakespeare, 480 s and 1800 s
    python -m bench.recipe --budgets 480 --adapt --out docs   # keeps docs/mine.png
    python -m bench.recipe --data ../shared/data/warpeace.txt --budgets 480 1800
    python -m bench.recipe --budgets 480 --seeds 1 2 3   # three runs: mean and spread
    python -m bench.recipe --budgets 180 --extra-args="--device cuda"
    python -m bench.recipe --smoke                       # seconds: a generated corpus
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_line
from bench.recipe_report import (
    RunFigures,
    draw_curves,
    print_seed_summary,
    print_tables,
    seed_summary,
    targets_for,
)
from bench.smoke import smoke_corpus
from training.config import config_from_preset
from training.data import load_corpus, read_text_file
from training.distributed import choose_num_threads
from training.presets import DEFAULT_PRESET
from training.report import MetricsLog, metrics_path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
#: the scoring runs on this many first characters time start-up and loading alone
SHORT_CHARS = 200


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.recipe", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="one text file (tinyshakespeare)")
    p.add_argument("--budgets", type=float, nargs="+", default=[480.0, 1800.0], help="--max-time")
    p.add_argument(
        "--extra-args",
        default="",
        help='more charlm-train flags, one string: --extra-args="--device cuda"',
    )
    p.add_argument("--adapt", action="store_true", help="also score with charlm-eval --adapt")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train each budget once per seed (charlm-train --seed); a table adds the exact"
        " figures' mean and spread, and the verdict on the mean",
    )
    p.add_argument(
        "--runs",
        type=Path,
        help="where checkpoints, metrics, logs and the validation text go (default: a new"
        " temporary folder, kept and named at the end)",
    )
    p.add_argument("--out", type=Path, help="where mine.png goes (default: the runs folder)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument(
        "--smoke", action="store_true", help="seconds: a generated corpus, a budget of 3 s"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.budgets, args.adapt, args.seeds = [3.0], True, [1, 2]
    if any(b <= 0 for b in args.budgets):
        p.error("--budgets must be positive seconds")
    return args


def command(tool: str) -> list[str]:
    """The console script beside this interpreter (as installed), else the module behind it."""
    script = Path(sys.executable).with_name(tool)
    if script.is_file():
        return [str(script)]
    found = shutil.which(tool)
    if found:
        return [found]
    entry = {
        "charlm-train": "training.cli:train_main",
        "charlm-eval": "training.checkpoint_cli:eval_main",
    }
    module, func = entry[tool].split(":")
    return [sys.executable, "-c", f"from {module} import {func}; raise SystemExit({func}())"]


def validation_text(data: Path, cache_dir: Path | None) -> str:
    """The last ``val_fraction`` of ``data`` exactly as ``charlm-train`` holds it out.

    ``training.data`` cuts the encoded stream of one document (``BOS`` and the text's code
    points) at ``int(len(stream) * val_fraction)`` positions from its end: for one file that is
    the text's last ``int((len(text) + 1) * val_fraction)`` characters, and no ``BOS`` falls in
    them. The result is checked against ``load_corpus``'s own split (as ids, the run's
    vocabulary) and raises ``ValueError`` if the two differ.
    """
    config = config_from_preset(DEFAULT_PRESET)
    text = read_text_file(data)
    num_val = int((len(text) + 1) * config.val_fraction)
    val = text[len(text) - num_val :]
    corpus = load_corpus(
        [str(data)],
        val_fraction=config.val_fraction,
        min_char_count=config.min_char_count,
        cache_dir=cache_dir,
    )
    held_out = np.concatenate(corpus.val_docs) if corpus.val_docs else np.zeros(0)
    if len(corpus.val_docs) != 1 or not np.array_equal(held_out, corpus.vocab.encode_array(val)):
        raise ValueError(f"{data}: the validation text differs from charlm-train's split")
    return val


@dataclass
class Process:
    """A finished tool process: its exit status, wall seconds and standard output."""

    code: int
    seconds: float
    stdout: str


def run_tool(argv: list[str], env: dict[str, str], log: Path, *, echo: bool = False) -> Process:
    """Run ``argv`` from the repository; standard error goes to ``log``; ``echo`` prints each
    line of standard output as it comes (a long run shows its validations)."""
    lines = []
    started = time.perf_counter()
    with log.open("w") as errors:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo:
                print("    " + line.rstrip(), flush=True)
        code = proc.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        print(f"{shlex.join(argv)} failed ({code}):\n{log.read_text()[-3000:]}", file=sys.stderr)
    return Process(code, seconds, "".join(lines))


def score(
    checkpoint: Path, text: Path, short: Path, env: dict[str, str], adapt: bool
) -> dict[str, Any] | None:
    """``charlm-eval`` on ``text`` (and on ``short`` for the start-up's time): its figures, and
    seconds per character of the scoring alone."""
    argv = [*command("charlm-eval"), "--checkpoint", str(checkpoint)]
    argv += ["--adapt"] if adapt else []
    log = text.with_name(f"{checkpoint.stem}.eval{'-adapt' if adapt else ''}.log")
    whole = run_tool([*argv, "--data", str(text)], env, log)
    start_up = run_tool([*argv, "--data", str(short)], env, log.with_suffix(".short.log"))
    if whole.code or start_up.code:
        return None
    figures: dict[str, Any] = json.loads(whole.stdout.strip().splitlines()[-1])
    short_chars = json.loads(start_up.stdout.strip().splitlines()[-1])["num_chars"]
    figures["seconds"] = whole.seconds
    figures["seconds_per_char"] = (whole.seconds - start_up.seconds) / max(
        1, figures["num_chars"] - short_chars
    )
    return figures


def run_budget(
    budget: float,
    seed: int | None,
    data: Path,
    folder: Path,
    files: tuple[Path, Path],
    args: argparse.Namespace,
) -> RunFigures | None:
    name = f"{budget:g}" + ("" if seed is None else f"-seed{seed}")
    out = folder / f"{name}.safetensors"
    argv = [*command("charlm-train"), "--data", str(data), "--max-time", f"{budget:g}"]
    argv += [] if seed is None else ["--seed", str(seed)]
    argv += ["--out", str(out), *shlex.split(args.extra_args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.smoke:  # the smoke run keeps its cache to itself and one core
        env.update(CHARLM_CACHE_DIR=str(folder / "cache"), CHARLM_NUM_THREADS="1")
    print(f"\n$ {shlex.join(argv)}", flush=True)
    trained = run_tool(argv, env, folder / f"{name}.train.log", echo=True)
    if trained.code:
        return None
    records = MetricsLog(metrics_path(out)).records()
    figures = RunFigures.from_run(budget, trained.seconds, trained.stdout, records, seed)
    figures.static = score(out, *files, env, adapt=False)
    if args.adapt:
        figures.adaptive = score(out, *files, env, adapt=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="charlm-bench-recipe-") as tmp:
        if args.smoke:
            args.data = smoke_corpus(Path(tmp))
            folder = Path(tmp)
        else:
            folder = args.runs or Path(tempfile.mkdtemp(prefix="charlm-recipe-"))
        folder.mkdir(parents=True, exist_ok=True)
        if not args.data.is_file():
            print(f"{args.data}: not a file (the recipe benchmark takes one text)", file=sys.stderr)
            return 2
        val = validation_text(args.data, Path(tmp) / "cache")
        files = (folder / "validation.txt", folder / "validation-start.txt")
        files[0].write_bytes(val.encode("utf-8"))
        files[1].write_bytes(val[:SHORT_CHARS].encode("utf-8"))
        print(machine_line(choose_num_threads()))
        print(
            f"corpus {args.data.name}: {len(read_text_file(args.data)):,} characters, the last"
            f" {len(val):,} held out; budgets {', '.join(f'{b:g}' for b in args.budgets)} s;"
            f" charlm-train flags beyond --data/--max-time/--out: {args.extra_args or 'none'}"
        )
        extra = shlex.split(args.extra_args)
        device = extra[extra.index("--device") + 1] if "--device" in extra[:-1] else "cpu"
        targets = targets_for(args.data.name, device)
        rows = []
        for budget in args.budgets:
            for seed in args.seeds or [None]:
                figures = run_budget(budget, seed, args.data, folder, files, args)
                if figures is None:
                    return 1
                rows.append(figures)
        print()
        print_tables(rows, targets)
        summary = seed_summary(rows, targets)
        print_seed_summary(summary)
        plot = (args.out or folder) / "mine.png"
        title = f"charlm-train --data {args.data.name} --max-time B {args.extra_args}"
        draw_curves(rows, title.strip(), targets, plot)
        print(f"\ncurve: {plot}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            report = {"runs": [r.to_dict(targets) for r in rows], "seeds": summary}
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        if not args.smoke:
            print(f"checkpoints, metrics and logs: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
