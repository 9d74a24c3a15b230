"""In-process parts of ``bench.serve``: the models it builds, its texts, charlm's batch scoring.

The models are untrained LSTMs of named shapes: the cost of a step does not depend on the
weights, so throughput figures hold for trained models of the same size.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from models.checkpoint import LoadedCheckpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.scoring import score_texts
from models.vocab import BOS_ID, CharVocab
from training.presets import PRESETS

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"

#: shapes the benchmark can build besides the training presets: ``tiny-2x128`` has the ``tiny``
#: preset's width and embedding with a second layer
SHAPES: dict[str, dict[str, Any]] = {
    "tiny-2x128": {"embed_size": 32, "hidden_size": 128, "num_layers": 2},
}


def shape_of(name: str) -> dict[str, Any]:
    if name in SHAPES:
        return SHAPES[name]
    if name in PRESETS:
        preset = PRESETS[name]
        return {k: preset[k] for k in ("embed_size", "hidden_size", "num_layers")}
    raise SystemExit(f"unknown model shape {name!r}; choose from {', '.join([*SHAPES, *PRESETS])}")


def bench_vocab() -> CharVocab:
    if CORPUS.is_file():
        return CharVocab.from_text(CORPUS.read_text(encoding="utf-8"))
    return CharVocab([chr(c) for c in range(32, 127)] + ["\n"])


def build_models(folder: Path, names: list[str]) -> Path:
    """Untrained LSTMs of the named shapes, saved as ``<name>.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = bench_vocab()
    for name in names:
        config = ModelConfig("lstm", len(vocab), **shape_of(name))
        torch.manual_seed(0)
        model = build_model(config).eval()
        training = {"note": "untrained: built by bench.serve for throughput measurements"}
        save_checkpoint(folder / f"{name}.safetensors", model, vocab, training=training)
    return folder


def make_texts(length: int, count: int) -> list[str]:
    """``count`` texts of ``length`` characters: slices of the corpus, or random letters."""
    rng = random.Random(0)
    if CORPUS.is_file():
        corpus = CORPUS.read_text(encoding="utf-8")
        starts = [rng.randrange(len(corpus) - length) for _ in range(count)]
        return [corpus[s : s + length] for s in starts]
    letters = "abcdefghijklmnopqrstuvwxyz     .,\n"
    return ["".join(rng.choice(letters) for _ in range(length)) for _ in range(count)]


def padded_inputs(vocab: CharVocab, texts: list[str]) -> Tensor:
    """The inputs a scoring forward reads: ``BOS_ID`` then each text but its last character,
    padded to the longest (B, T)."""
    rows = [[BOS_ID, *vocab.encode_array(t)[:-1].tolist()] for t in texts]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [BOS_ID] * (width - len(r)) for r in rows], dtype=torch.long)


def score_seconds(ckpt: LoadedCheckpoint, texts: list[str], repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls scoring all ``texts`` in one padded batch with charlm's
    ``score_texts``, after one untimed call."""
    score_texts(ckpt.model, ckpt.vocab, texts)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        score_texts(ckpt.model, ckpt.vocab, texts)
        best = min(best, time.perf_counter() - start)
    return best
