"""Training benchmark: charlm's loop against the plain loop most users would write.

Both train on ``../shared/data/tinyshakespeare.txt`` (the last 10% is validation) for the same
budget of *their own* training time. The machine may be shared and noisy, so the two trainers run
in one process and take turns in short slices (A B B A A B ...), each timing only its own steps:
slow periods fall on both alike. Both are evaluated by the same rule at the same points of their
training time (every ``--eval-every`` seconds and at the end; evaluation time is not counted):
the whole validation text in one stream, state carried from start to end. The reference is also
scored the way it was trained (windows of its sequence length from a zero state) and keeps the
better of the two figures.

    python -m bench.train                 # 8 minutes each (about 17 minutes in all)
    python -m bench.train --budget 120    # a quicker look
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.config import config_from_preset
from training.data import load_corpus
from training.distributed import choose_num_threads
from training.loop import Trainer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


class ReferenceLSTM(nn.Module):
    """Embedding(V, 64) -> nn.LSTM(64, 256, 2 layers) -> Linear(256, V): 0.88M parameters."""

    def __init__(self, vocab_size: int, embed_size: int = 64, hidden_size: int = 256) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(
        self, ids: Tensor, hidden: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, hidden = self.lstm(self.embedding(ids), hidden)
        return self.head(out), hidden


class ReferenceTrainer:
    """Random windows from a zero state, AdamW at a constant rate, gradient clipping at 1."""

    def __init__(self, text: str, batch_size: int, seq_len: int, lr: float, seed: int) -> None:
        chars = sorted(set(text))
        stoi = {c: i for i, c in enumerate(chars)}
        ids = np.array([stoi[c] for c in text], dtype=np.int64)
        cut = int(len(ids) * 0.9)
        self.train_ids = torch.from_numpy(ids[:cut])
        self.val_ids = torch.from_numpy(ids[cut:])
        torch.manual_seed(seed)
        self.model = ReferenceLSTM(len(chars))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.generator = torch.Generator().manual_seed(seed)
        self.train_seconds = 0.0
        self.step = 0

    def advance(self, seconds: float) -> None:
        until = self.train_seconds + seconds
        while self.train_seconds < until:
            started = time.perf_counter()
            starts = torch.randint(
                0,
                len(self.train_ids) - self.seq_len - 1,
                (self.batch_size,),
                generator=self.generator,
            )
            window = torch.stack([self.train_ids[s : s + self.seq_len + 1] for s in starts])
            logits, _ = self.model(window[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.step += 1
            self.train_seconds += time.perf_counter() - started

    @torch.inference_mode()
    def evaluate(self) -> float:
        """Nats/char on the validation text: the better of one carried stream and windows."""
        self.model.eval()
        try:
            ids = self.val_ids.unsqueeze(0)  # (1, N)
            total, hidden = 0.0, None
            for start in range(0, ids.shape[1] - 1, 2048):
                chunk = ids[:, start : start + 2049]
                logits, hidden = self.model(chunk[:, :-1], hidden)
                total += F.cross_entropy(
                    logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum"
                ).item()
            stream = total / (ids.shape[1] - 1)
            n = (ids.shape[1] - 1) // self.seq_len
            windows = ids[0, : n * self.seq_len + 1]
            inputs = windows[:-1].view(n, self.seq_len)
            targets = windows[1:].view(n, self.seq_len)
            total = 0.0
            for i in range(0, n, 256):
                logits, _ = self.model(inputs[i : i + 256])
                total += F.cross_entropy(
                    logits.flatten(0, 1), targets[i : i + 256].flatten(), reduction="sum"
                ).item()
            windowed = total / (n * self.seq_len)
        finally:
            self.model.train()
        return min(stream, windowed)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


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


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.replace("-", "_")] = json.loads(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="corpus (default: tinyshakespeare)")
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds for each")
    parser.add_argument("--slice", type=float, default=15.0, help="seconds per turn")
    parser.add_argument("--eval-every", type=float, default=120.0, help="training seconds")
    parser.add_argument("--preset", default="small", help="charlm preset")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override a charlm TrainConfig field, e.g. --set lr=0.004",
    )
    parser.add_argument("--ref-batch-size", type=int, default=32)
    parser.add_argument("--ref-seq-len", type=int, default=128)
    parser.add_argument("--ref-lr", type=float, default=2e-3)
    parser.add_argument("--only", choices=("charlm", "reference"), help="train one side only")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: chosen for the machine)"
    )
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"{args.data}: corpus not found", file=sys.stderr)
        return 2
    threads = args.threads or choose_num_threads()
    torch.set_num_threads(threads)
    # a --set max_steps=N run ends at N steps (or the budget), its schedule following the steps:
    # with no timing in the schedule, two runs with the same seed train alike on a noisy machine
    settings: dict[str, Any] = {
        "max_time": args.budget,
        "max_steps": None,
        "eval_interval": 10**9,
        "sample_chars": 0,
        "seed": args.seed,
        "device": "cpu",
    }
    settings.update(parse_overrides(args.set))
    config = config_from_preset(args.preset, **settings)
    corpus = load_corpus([str(args.data)], val_fraction=0.1, min_char_count=config.min_char_count)
    charlm = Trainer(config, corpus, out=None)
    reference = ReferenceTrainer(
        args.data.read_text("utf-8"), args.ref_batch_size, args.ref_seq_len, args.ref_lr, args.seed
    )
    runners: dict[str, Any] = {"charlm": charlm, "reference": reference}
    if args.only:
        runners = {args.only: runners[args.only]}
    tracks = {name: Track(name) for name in runners}
    next_eval = dict.fromkeys(runners, args.eval_every)
    print(f"threads {threads}; budget {args.budget:.0f}s each; slices of {args.slice:.0f}s")
    print(f"charlm config: {json.dumps(config.to_dict(), sort_keys=True)}")
    print(f"charlm arithmetic: {charlm.autocast_dtype or torch.float32}; reference: torch.float32")
    order = list(runners)
    turn = 0
    wall_start = time.perf_counter()
    while True:
        active = [n for n in order if not finished(runners[n], args.budget)]
        if not active:
            break
        # alternate which side goes first so neither always follows the other
        for name in active if turn % 2 == 0 else active[::-1]:
            runner = runners[name]
            runner.advance(min(args.slice, args.budget - runner.train_seconds))
            done = finished(runner, args.budget)
            if runner.train_seconds >= next_eval[name] or done:
                nats = runner.evaluate()
                nats = getattr(nats, "nats_per_char", nats)
                tracks[name].evals.append((runner.train_seconds, nats))
                next_eval[name] += args.eval_every
                print(
                    f"  {name:9s} t={runner.train_seconds:6.1f}s step={runner.step:6d}"
                    f" val={nats:.5f} nats/char",
                    flush=True,
                )
        turn += 1
    wall = time.perf_counter() - wall_start
    print(f"\nwall time {wall:.0f}s\n")
    rows = []
    for name, runner in runners.items():
        chars_per_step = (
            config.batch_size * config.seq_len
            if name == "charlm"
            else args.ref_batch_size * args.ref_seq_len
        )
        params = runner.model.num_parameters() if name == "charlm" else runner.num_parameters()
        best = tracks[name].best
        rows.append(
            (
                name,
                best,
                best / math.log(2),
                runner.step * chars_per_step / runner.train_seconds,
                params,
                runner.step,
            )
        )
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
