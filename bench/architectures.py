"""Every architecture side by side on tinyshakespeare: same parameter budget, same wall clock.

Each gradient-trained model (Adam, truncated BPTT over 32 streams of 128 characters) trains for
``--budget`` seconds; the echo state network makes its one closed-form pass over the training text
(however long that takes; its time is reported). Then, on the same held-out text:

- validation bits per character (for ``bilstm``/``bigru`` the pseudo-log-likelihood: each
  character given both sides, *not comparable* with the left-to-right figures);
- training characters per second;
- generation characters per second, one stream and 32 streams at once (causal models only).

    python bench/architectures.py --budget 300 \
        --json docs/architectures.json --plot docs/architectures.png
    python bench/architectures.py --budget 60 --json docs/architectures-60s.json

The corpus is read from ``../shared/data/tinyshakespeare.txt`` beside the repository; without it
the script says so and exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.smoke import smoke_corpus  # noqa: E402
from models.base import CharLM, detach_state  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.esn import EchoStateLM  # noqa: E402
from models.infill import pll_score_id_sequences  # noqa: E402
from models.registry import build_model, model_class  # noqa: E402
from models.sampling import SamplingParams, generate  # noqa: E402
from models.scoring import score_id_sequences  # noqa: E402
from models.vocab import CharVocab  # noqa: E402
from training.esn import fit_esn  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
ARCHS = ["rnn", "lstm", "gru", "clockwork", "esn", "bilstm", "bigru"]
EMBED = 32


def sized_config(arch: str, vocab_size: int, target: int) -> ModelConfig:
    """The single-layer config of ``arch`` whose trainable parameter count is closest to target."""
    best: tuple[int, ModelConfig] | None = None
    for hidden in range(8, 2049, 4):
        cfg = ModelConfig(
            arch=arch, vocab_size=vocab_size, embed_size=EMBED, hidden_size=hidden, num_layers=1
        )
        if arch == "esn":  # only the readout trains: (N + V) V + V
            count = (hidden + vocab_size) * vocab_size + vocab_size
        else:
            count = build_model(cfg).num_parameters(trainable_only=True)
        if best is None or abs(count - target) < abs(best[0] - target):
            best = (count, cfg)
        if count > target:
            break
    assert best is not None
    return best[1]


def train_for(model: CharLM, ids: np.ndarray, budget: float, batch: int, steps: int) -> int:
    """Truncated BPTT with Adam over ``batch`` streams until ``budget`` seconds pass; chars seen."""
    data = torch.from_numpy(ids.astype(np.int64))
    length = (len(data) - 1) // batch
    streams = data[: batch * length + 1]
    inputs_all = streams[:-1].view(batch, length)
    targets_all = streams[1:].view(batch, length)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    state = model.initial_state(batch)
    model.train()
    seen, position = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < budget:
        if position + steps > length:
            position, state = 0, model.initial_state(batch)
        inputs = inputs_all[:, position : position + steps]
        targets = targets_all[:, position : position + steps]
        logits, state = model(inputs, state)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state = detach_state(state)
        position += steps
        seen += inputs.numel()
    model.eval()
    return seen


def generation_speed(model: CharLM, vocab: CharVocab, streams: int, chars: int) -> float:
    started = time.perf_counter()
    generate(model, vocab, "ROMEO:\n", chars, SamplingParams(temperature=0.8), seed=0, n=streams)
    return streams * chars / (time.perf_counter() - started)


def bench_one(
    arch: str, vocab: CharVocab, train: np.ndarray, val: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    torch.manual_seed(0)
    cfg = sized_config(arch, len(vocab), args.params)
    model = build_model(cfg)
    started = time.perf_counter()
    if isinstance(model, EchoStateLM):
        fit = fit_esn(model, train[: args.esn_chars], val)
        seen = fit.train_chars
    else:
        seen = train_for(model, train, args.budget, args.batch, args.steps)
    train_seconds = time.perf_counter() - started
    bidirectional = not model_class(arch).can_generate
    with torch.inference_mode():
        if bidirectional:
            (score,) = pll_score_id_sequences(model, [val])
        else:
            (score,) = score_id_sequences(model, [val])
    row: dict[str, Any] = {
        "arch": arch,
        "hidden_size": cfg.hidden_size,
        "trainable_parameters": model.num_parameters(trainable_only=True),
        "val_bpc": score.bits_per_char,
        "bpc_kind": "pll (not comparable)" if bidirectional else "left-to-right",
        "train_seconds": train_seconds,
        "train_chars": seen,
        "train_chars_per_s": seen / train_seconds,
    }
    if not bidirectional:
        with torch.inference_mode():
            row["gen_1_chars_per_s"] = generation_speed(model, vocab, 1, args.gen_chars)
            row["gen_32_chars_per_s"] = generation_speed(model, vocab, 32, args.gen_chars // 4)
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| arch | hidden | trainable params | val bpc | train chars/s | gen 1 stream chars/s "
        "| gen 32 streams chars/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        bpc = f"{r['val_bpc']:.3f}" + (" (pll, not comparable)" if "pll" in r["bpc_kind"] else "")
        gen1 = f"{r['gen_1_chars_per_s']:.0f}" if "gen_1_chars_per_s" in r else "cannot generate"
        gen32 = f"{r['gen_32_chars_per_s']:.0f}" if "gen_32_chars_per_s" in r else "—"
        lines.append(
            f"| {r['arch']} | {r['hidden_size']} | {r['trainable_parameters']} | {bpc} "
            f"| {r['train_chars_per_s']:.0f} | {gen1} | {gen32} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["arch"] for r in rows]
    colors = ["tab:gray" if "pll" in r["bpc_kind"] else "tab:blue" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.bar(names, [r["val_bpc"] for r in rows], color=colors)
    left.set_ylabel("validation bits/char")
    left.set_title("bpc (grey: pseudo-log-likelihood)", fontsize=9)
    right.bar(names, [r["train_chars_per_s"] for r in rows], color="tab:green")
    right.set_yscale("log")
    right.set_ylabel("training chars/s")
    right.set_title("training throughput", fontsize=9)
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--archs", nargs="+", default=ARCHS, choices=ARCHS)
    parser.add_argument("--params", type=int, default=60_000, help="trainable parameter target")
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds per model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128, help="truncated-BPTT length")
    parser.add_argument("--val-chars", type=int, default=20_000)
    parser.add_argument("--esn-chars", type=int, default=400_000, help="ESN training chars")
    parser.add_argument("--gen-chars", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write a PNG here")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds: a generated corpus, tiny models and budgets"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.budget, args.params, args.batch, args.steps = 0.3, 3000, 4, 16
        args.val_chars, args.esn_chars, args.gen_chars = 500, 5000, 8
        with tempfile.TemporaryDirectory(prefix="charlm-bench-arch-") as tmp:
            args.corpus = smoke_corpus(Path(tmp))
            return run(args)
    return run(args)


def run(args: argparse.Namespace) -> int:
    if not args.corpus.is_file():
        print(f"skipped: corpus {args.corpus} not found")
        return 0
    torch.set_num_threads(args.threads)
    text = args.corpus.read_text(encoding="utf-8")
    vocab = CharVocab.from_text(text)
    ids = vocab.encode_array(text).astype(np.int64)
    split = int(len(ids) * 0.9)
    train, val = ids[:split], ids[split : split + args.val_chars]
    print(
        f"corpus {args.corpus.name}: {len(ids)} chars, vocab {len(vocab)}; "
        f"budget {args.budget:g}s per model, ~{args.params} trainable parameters, "
        f"{args.threads} thread(s), {len(val)} validation chars"
    )
    rows = []
    for arch in args.archs:
        row = bench_one(arch, vocab, train, val, args)
        rows.append(row)
        print(
            f"{arch}: {row['val_bpc']:.3f} bpc ({row['bpc_kind']}), "
            f"{row['train_chars_per_s']:.0f} train chars/s",
            flush=True,
        )
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)
    if any(math.isnan(r["val_bpc"]) for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
