"""Adaptive scoring (dynamic evaluation) against static scoring: bits/char and cost per character.

    python -m bench.adaptive --checkpoint small.safetensors              # tinyshakespeare
    python -m bench.adaptive --smoke                                     # seconds: proves it runs

The validation text is the last ``--val-fraction`` of ``--data``, as ``charlm-train`` holds it
out. A sweep of update rules, rates and segment lengths runs on the first ``--sweep-chars`` of
it (the tuning part); then static and adaptive scoring (the defaults of ``models.adapt``, and the
sweep's best) read the rest (the held-out part, never used for choosing) and the whole text.
Each figure is bits per character and characters per second on this process's threads
(``time.perf_counter`` around the call; the model runs alone). The cost per character comes from
``--cost-rounds`` rounds that alternate static and adaptive scoring of the same held-out text
(medians), so a change in the machine's load falls on both.

``--smoke`` trains a tiny LSTM on a generated text for a few steps and scores a few hundred
characters: the figures mean nothing, only that every part runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bench.machine import machine_line
from models.adapt import AdaptSettings, adaptive_score_id_sequences
from models.base import CharLM
from models.checkpoint import load_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.scoring import score_id_sequences
from models.vocab import BOS_ID, CharVocab

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
TABLE_HEAD = "| scoring | rule | rate | segment | chars | bits/char | chars/s | vs static |"
TABLE_RULE = "|---|---|---|---|---|---|---|---|"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.adaptive", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="the model (required unless --smoke)")
    p.add_argument("--data", type=Path, default=DATA, help="the corpus (tinyshakespeare)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held out at the end (0.1)")
    p.add_argument("--sweep-chars", type=int, default=20_000, help="tuning part (20,000)")
    p.add_argument("--methods", nargs="+", default=["sgd", "rms"], help="update rules")
    p.add_argument("--rates", nargs="+", type=float, help="sgd rates (default: a grid)")
    p.add_argument("--rms-rates", nargs="+", type=float, help="rms rates (default: a grid)")
    p.add_argument("--segments", nargs="+", type=int, default=[20, 50, 100, 200])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument(
        "--sweep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the sweep on the tuning part (on)",
    )
    p.add_argument("--cost-chars", type=int, default=10_000, help="text of the cost rounds")
    p.add_argument("--cost-rounds", type=int, default=3, help="alternated cost rounds (3)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--smoke", action="store_true", help="tiny model and text: seconds")
    args = p.parse_args(argv)
    if args.checkpoint is None and not args.smoke:
        p.error("--checkpoint is required (or --smoke)")
    return args


def tiny_model(text: str, steps: int = 20) -> tuple[CharLM, CharVocab]:
    """A one-layer LSTM fitted for a few Adam steps on random windows of ``text``."""
    torch.manual_seed(0)
    vocab = CharVocab.from_text(text)
    config = ModelConfig(arch="lstm", vocab_size=len(vocab), embed_size=8, hidden_size=32)
    model = build_model(config)
    data = torch.tensor(vocab.encode(text), dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 33, (8,)).tolist()
        rows = torch.stack([data[s : s + 33] for s in starts])  # (B, 33)
        inputs = torch.cat([torch.full((8, 1), BOS_ID), rows[:, :-1]], dim=1)
        logits, _ = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), vocab


def smoke_text() -> str:
    words = ["exeunt", "enter", "king", "queen", "lord"]
    return "".join(f"{words[i % 5]} {words[(i * 3) % 5]}, {i % 9}.\n" for i in range(200))


def measure(model: CharLM, ids: np.ndarray, settings: AdaptSettings | None) -> tuple[float, float]:
    """Bits per character and characters per second of one text, static or adaptive."""
    start = time.perf_counter()
    if settings is None:
        (score,) = score_id_sequences(model, [ids])
    else:
        (score,) = adaptive_score_id_sequences(model, [ids], settings=settings)
    seconds = time.perf_counter() - start
    return score.bits_per_char, len(ids) / seconds


def sweep_grid(args: argparse.Namespace) -> list[AdaptSettings]:
    rates = {
        "sgd": args.rates or ([0.1] if args.smoke else [0.1, 0.2, 0.3, 0.5]),
        "rms": args.rms_rates or ([1e-3] if args.smoke else [3e-4, 6e-4, 1e-3, 1.5e-3]),
    }
    segments = [8, 16] if args.smoke else args.segments
    return [
        AdaptSettings(rate=rate, segment=segment, method=method)
        for method in args.methods
        for rate, segment in itertools.product(rates[method], segments)
    ]


@dataclass(frozen=True)
class Row:
    """One text scored one way, beside the static figures of the same text."""

    scoring: str
    settings: AdaptSettings | None
    chars: int
    bits_per_char: float
    chars_per_s: float
    static_bits_per_char: float
    static_chars_per_s: float

    @property
    def gain(self) -> float:
        """Bits per character below static scoring."""
        return self.static_bits_per_char - self.bits_per_char

    @property
    def cost(self) -> float:
        """Time per character over static scoring's."""
        return self.static_chars_per_s / self.chars_per_s

    def line(self) -> str:
        s = self.settings
        rule = f"{s.method} | {s.rate:g} | {s.segment}" if s else "- | - | -"
        versus = f"{self.gain:+.4f} bits/char lower, {self.cost:.1f}x the time" if s else "-"
        return (
            f"| {self.scoring} | {rule} | {self.chars:,} | {self.bits_per_char:.4f}"
            f" | {self.chars_per_s:,.0f} | {versus} |"
        )

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "gain_bits_per_char": self.gain, "cost_ratio": self.cost}


def score_rows(
    model: CharLM, ids: np.ndarray, label: str, ways: Sequence[tuple[str, AdaptSettings]]
) -> list[Row]:
    """Static scoring of ``ids``, then each named adaptive way, one row each."""
    bpc, cps = measure(model, ids, None)
    rows = [Row(f"static{label}", None, len(ids), bpc, cps, bpc, cps)]
    print(rows[-1].line())
    for name, settings in ways:
        adapted_bpc, adapted_cps = measure(model, ids, settings)
        rows.append(Row(f"{name}{label}", settings, len(ids), adapted_bpc, adapted_cps, bpc, cps))
        print(rows[-1].line())
    return rows


def cost_ratio(model: CharLM, ids: np.ndarray, rounds: int) -> tuple[float, float]:
    """Median chars/s of static and default adaptive scoring of ``ids``, in alternated rounds
    (so a change of the machine's load falls on both alike)."""
    static, adaptive = [], []
    for _ in range(rounds):
        static.append(measure(model, ids, None)[1])
        adaptive.append(measure(model, ids, AdaptSettings())[1])
    return statistics.median(static), statistics.median(adaptive)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        text = smoke_text()
        model, vocab = tiny_model(text)
        val = text[-600:]
        args.sweep_chars, args.cost_chars, args.cost_rounds = 200, 200, 1
        source = "smoke: a tiny LSTM trained 20 steps on a generated text"
    else:
        loaded = load_checkpoint(args.checkpoint)
        model, vocab = loaded.model.eval(), loaded.vocab
        text = args.data.read_text(encoding="utf-8")
        val = text[len(text) - int(len(text) * args.val_fraction) :]
        source = f"{args.checkpoint} ({loaded.config.arch}, {model.num_parameters():,} weights)"
    tune_ids = vocab.encode_array(val[: args.sweep_chars])
    held_ids = vocab.encode_array(val[args.sweep_chars :])
    all_ids = vocab.encode_array(val)
    print(machine_line(args.threads))
    print(f"model: {source}")
    print(
        f"validation text: {len(val):,} chars; tuning part {len(tune_ids):,},"
        f" held out {len(held_ids):,}"
    )
    for settings in (None, AdaptSettings()):  # warm-up: first calls pay one-time costs
        measure(model, tune_ids[:200], settings)

    default = AdaptSettings()
    ways = [("adaptive default", default)]
    sweep: list[Row] = []
    if args.sweep:
        print(f"\nsweep on the tuning part\n\n{TABLE_HEAD}\n{TABLE_RULE}")
        sweep = score_rows(model, tune_ids, "", [("adaptive", s) for s in sweep_grid(args)])
        best = min(sweep[1:], key=lambda r: r.bits_per_char).settings
        assert best is not None
        print(
            f"\nbest on the tuning part: {best.method}, rate {best.rate:g}, segment {best.segment}"
        )
        if best != default:
            ways.append(("adaptive best", best))

    print(f"\nheld-out part and whole text\n\n{TABLE_HEAD}\n{TABLE_RULE}")
    results = score_rows(model, held_ids, " (held-out)", ways)
    whole = score_rows(model, all_ids, " (whole)", ways)
    results += whole
    cost_ids = held_ids[: args.cost_chars]
    static_cps, adaptive_cps = cost_ratio(model, cost_ids, args.cost_rounds)
    print(
        f"\ncost per character: static {static_cps:,.0f} chars/s, adaptive (defaults)"
        f" {adaptive_cps:,.0f} chars/s, {static_cps / adaptive_cps:.1f}x the time (median of"
        f" {args.cost_rounds} alternated rounds on {len(cost_ids):,} held-out chars)"
    )
    gain = whole[1].gain
    verdict = "met" if gain >= 0.05 else "missed"
    print(
        f"adaptive (defaults) vs static on the whole validation text: {gain:.4f} bits/char"
        f" lower (target >= 0.05: {verdict}); on the held-out part {results[1].gain:.4f}"
    )
    if args.json:
        figures = {
            "sweep": [r.to_dict() for r in sweep],
            "results": [r.to_dict() for r in results],
            "cost": {"static_chars_per_s": static_cps, "adaptive_chars_per_s": adaptive_cps},
        }
        args.json.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    return 0 if math.isfinite(gain) else 1


if __name__ == "__main__":
    raise SystemExit(main())
