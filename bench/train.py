"""Training benchmark: charlm's loop against the plain loop a careful user would write.

Both train on ``--data`` (default ``../shared/data/tinyshakespeare.txt``; the last 10% is
validation) for the same budget of seconds each. The machine may be shared and noisy, so the two
trainers run in one process and take turns in short slices (A B B A A B ...), each timing only
its own work: slow periods fall on both alike. Both are evaluated by the same rule at the same
points of their budgets (every ``--eval-every`` seconds and at the end; this evaluation is
counted for neither): the whole validation text in one stream, state carried from start to end.
The reference is also scored the way it was trained (windows of its sequence length from a zero
state) and keeps the better of the two figures.

The reference is what a careful user writes with plain PyTorch: a 2x256 ``nn.LSTM`` with dropout
0.1 between its layers, fused AdamW with a cosine learning rate from 2e-3 to 2e-4 over the
budget, gradient clipping, and the same arithmetic as charlm (bfloat16 autocast where charlm's
``precision`` setting chooses it on this machine, float32 elsewhere).

charlm runs its default preset, ``auto``, as ``charlm-train`` does: ``training.auto.resolve``
sizes the model to the corpus's training characters and the budget (the ``auto:`` line says what
it chose; settings given with ``--set`` are kept), the speed probe's seconds come off charlm's
budget, and the ``Trainer`` validates on its own schedule, for early stopping and the weight
average (read as ``charlm-train`` keeps its weights: the better of the raw ones and their
average). The budgets differ in what they count, in the reference's favour: charlm's is its
``Trainer``'s wall clock, its own validations and the time it keeps back for a final validation
included, while the reference's counts only its training steps. A named ``--preset`` runs with
that preset's values and no validations of its own (the figures docs/benchmarks.md gives for
``small``). ``--set max_steps=N`` ends charlm's run at N steps with a schedule that follows the
steps, so that runs compare on a busy machine.

    python -m bench.train                 # 8 minutes each (about 17 minutes in all)
    python -m bench.train --data ../shared/data/warpeace.txt --budget 1800
    python -m bench.train --budget 120    # a quicker look
    python -m bench.train --smoke         # seconds: a small generated corpus, tiny budgets
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.machine import machine_line
from bench.smoke import smoke_corpus
from bench.train_reference import ReferenceTrainer
from training import auto
from training.averaging import read_both
from training.config import TrainConfig, config_from_preset
from training.data import load_corpus
from training.distributed import DistContext, choose_num_threads
from training.loop import Trainer
from training.precision import autocast_dtype
from training.presets import AUTO_PRESET

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@dataclass
class Track:
    name: str
    evals: list[tuple[float, float]] = field(default_factory=list)  # (train seconds, nats)

    @property
    def best(self) -> float:
        return min(v for _, v in self.evals)


def finished(runner: Any, budget: float) -> bool:
    """Out of training time, or (charlm) stopped by its own limits such as ``max_steps``."""
    return bool(runner.train_seconds >= budget or getattr(runner, "finished", None))


def reading(runner: Any) -> float:
    """A runner's validation figure in nats/char. charlm's is the better of its raw weights and,
    with ``ema``, their average: the weights ``charlm-train`` would keep."""
    if isinstance(runner, Trainer):
        return read_both(runner.evaluate, runner.stepper.average).best.nats_per_char
    return float(runner.evaluate())


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.replace("-", "_")] = json.loads(value)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="corpus (default: tinyshakespeare)")
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds for each")
    parser.add_argument("--slice", type=float, default=15.0, help="seconds per turn")
    parser.add_argument("--eval-every", type=float, default=120.0, help="training seconds")
    parser.add_argument(
        "--preset", default=AUTO_PRESET, help="charlm preset (auto: sized to corpus and budget)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a charlm TrainConfig field, e.g. --set lr=0.004",
    )
    parser.add_argument("--ref-batch-size", type=int, default=32)
    parser.add_argument("--ref-seq-len", type=int, default=128)
    parser.add_argument("--ref-lr", type=float, default=2e-3, help="peak rate (2e-3)")
    parser.add_argument("--ref-final-lr", type=float, default=2e-4, help="rate at the end (2e-4)")
    parser.add_argument("--only", choices=("charlm", "reference"), help="train one side only")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: chosen for the machine)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds: a generated corpus, 1.5 s budgets, to check that the script runs",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.budget, args.slice, args.eval_every = 1.5, 0.5, 1.0
    return args


def run_turns(runners: dict[str, Any], args: argparse.Namespace) -> dict[str, Track]:
    """Train the runners in alternating slices until each is out of budget; evaluate on time."""
    tracks = {name: Track(name) for name in runners}
    next_eval = dict.fromkeys(runners, args.eval_every)
    order = list(runners)
    turn = 0
    while True:
        active = [n for n in order if not finished(runners[n], args.budget)]
        if not active:
            return tracks
        # alternate which side goes first so neither always follows the other
        for name in active if turn % 2 == 0 else active[::-1]:
            runner = runners[name]
            runner.advance(min(args.slice, args.budget - runner.train_seconds))
            done = finished(runner, args.budget)
            if runner.train_seconds >= next_eval[name] or done:
                nats = reading(runner)
                tracks[name].evals.append((runner.train_seconds, nats))
                next_eval[name] += args.eval_every
                print(
                    f"  {name:9s} t={runner.train_seconds:6.1f}s step={runner.step:6d}"
                    f" val={nats:.5f} nats/char",
                    flush=True,
                )
        turn += 1


def print_table(
    runners: dict[str, Any], tracks: dict[str, Track], config: TrainConfig, args: argparse.Namespace
) -> None:
    rows = []
    for name, runner in runners.items():
        chars_per_step = (
            config.batch_size * config.seq_len
            if name == "charlm"
            else args.ref_batch_size * args.ref_seq_len
        )
        params = runner.model.num_parameters() if name == "charlm" else runner.num_parameters()
        best = tracks[name].best
        cps = runner.step * chars_per_step / runner.train_seconds
        rows.append((name, best, best / math.log(2), cps, params, runner.step))
    print("| loop | best val nats/char | best val bits/char | chars/s | parameters | steps |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, nats, bpc, cps, params, steps in rows:
        print(f"| {name} | {nats:.5f} | {bpc:.4f} | {cps:,.0f} | {params:,} | {steps:,} |")
    if len(rows) == 2:
        (_, a, _, ca, _, _), (_, b, _, cb, _, _) = rows
        print(
            f"\ncharlm - reference: {a - b:+.5f} nats/char (target <= -0.05);"
            f" loss ratio {a / b:.3f}; chars/s ratio {ca / cb:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="charlm-bench-train-") as tmp:
        if args.smoke:
            args.data = smoke_corpus(Path(tmp))
        if not args.data.is_file():
            print(f"{args.data}: corpus not found", file=sys.stderr)
            return 2
        return run(args)


def run(args: argparse.Namespace) -> int:
    threads = args.threads or choose_num_threads()
    torch.set_num_threads(threads)
    # a --set max_steps=N run ends at N steps (or the budget), its schedule following the steps:
    # with no timing in the schedule, two runs with the same seed train alike on a noisy machine
    settings: dict[str, Any] = {
        "max_time": args.budget,
        "max_steps": None,
        "sample_chars": 0,
        "seed": args.seed,
        "device": "cpu",
    }
    if args.preset != AUTO_PRESET:
        settings["eval_interval"] = 10**9  # no validations of its own: as the figures were taken
    given = parse_overrides(args.set)
    settings.update(given)
    config = config_from_preset(args.preset, **settings)
    corpus = load_corpus([str(args.data)], val_fraction=0.1, min_char_count=config.min_char_count)
    config, chosen = auto.resolve(
        config, set(given), len(corpus.train_ids), len(corpus.vocab), DistContext()
    )
    charlm = Trainer(config, corpus, out=None)
    # the reference computes in the format charlm's own rule picks for this CPU
    dtype = autocast_dtype(config.precision, torch.device("cpu"))
    reference = ReferenceTrainer(
        args.data.read_text("utf-8"),
        args.ref_batch_size,
        args.ref_seq_len,
        (args.ref_lr, args.ref_final_lr),
        args.budget,
        dtype,
        args.seed,
    )
    runners: dict[str, Any] = {"charlm": charlm, "reference": reference}
    if args.only:
        runners = {args.only: runners[args.only]}
    print(machine_line(threads))
    print(f"corpus {args.data.name}; budget {args.budget:g}s each; slices of {args.slice:g}s")
    if chosen:
        print(chosen)
    print(f"charlm config: {json.dumps(dataclasses.asdict(config), sort_keys=True)}")
    print(
        f"arithmetic: charlm {charlm.autocast_dtype or torch.float32} (precision "
        f"{config.precision!r}), reference {dtype or torch.float32}; charlm state_reset "
        f"{config.state_reset}; reference lr {args.ref_lr:g} -> {args.ref_final_lr:g} (cosine)"
    )
    wall_start = time.perf_counter()
    tracks = run_turns(runners, args)
    print(f"\nwall time {time.perf_counter() - wall_start:.0f}s\n")
    print_table(runners, tracks, config, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
