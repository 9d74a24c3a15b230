"""In-process parts of ``bench.serve``: the models it builds, the bare model step, batch scoring.

The bare step is what one output character costs without any server: one forward of one
character for one stream and ``choose_next`` (temperature 1), under ``torch.inference_mode``,
timed over a few hundred steps. oneDNN is switched off for it, as the engine does for its steps
(PyTorch's own LSTM kernel is faster for one-character steps).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from models.checkpoint import LoadedCheckpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.sampling import SamplingParams, choose_next, make_generator
from models.scoring import score_texts
from models.vocab import BOS_ID, CharVocab
from training.config import PRESETS

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def bench_vocab() -> CharVocab:
    if CORPUS.is_file():
        return CharVocab.from_text(CORPUS.read_text(encoding="utf-8"))
    return CharVocab([chr(c) for c in range(32, 127)] + ["\n"])


def build_models(folder: Path, presets: list[str]) -> Path:
    """Untrained LSTMs of the named training presets, saved as ``<preset>.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = bench_vocab()
    for preset in presets:
        if preset not in PRESETS:
            raise SystemExit(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        p = PRESETS[preset]
        config = ModelConfig(
            "lstm",
            len(vocab),
            embed_size=p["embed_size"],
            hidden_size=p["hidden_size"],
            num_layers=p["num_layers"],
        )
        torch.manual_seed(0)
        model = build_model(config).eval()
        training = {"note": "untrained: built by bench.serve for throughput measurements"}
        save_checkpoint(folder / f"{preset}.safetensors", model, vocab, training=training)
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


def bare_step_seconds(ckpt: LoadedCheckpoint, steps: int = 300, onednn: bool = False) -> float:
    """Mean seconds per character of the bare loop (after 30 warm-up steps)."""
    model = ckpt.model
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = onednn  # type: ignore[assignment]
    try:
        with torch.inference_mode():
            generator = make_generator(0)[0]
            params = [SamplingParams()]
            logits, state = model(torch.tensor([[BOS_ID]]), model.initial_state(1))
            logits = logits[:, -1]
            for i in range(steps + 30):
                if i == 30:
                    start = time.perf_counter()
                next_id = choose_next(logits, params, [generator])
                out, state = model(next_id.unsqueeze(-1), state)
                logits = out[:, -1]
            return (time.perf_counter() - start) / steps
    finally:
        torch.backends.mkldnn.enabled = before


def score_chars_per_s(ckpt: LoadedCheckpoint, texts: list[str]) -> float:
    """Characters per second scoring all ``texts`` in one padded batch."""
    start = time.perf_counter()
    score_texts(ckpt.model, ckpt.vocab, texts)
    return sum(len(t) for t in texts) / (time.perf_counter() - start)
