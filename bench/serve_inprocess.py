"""In-process parts of ``bench.serve``: the models it builds, the bare model step, batch scoring.

The bare step is what one output character costs without any server: one forward of one
character for one stream and ``choose_next`` (temperature 1), under ``torch.inference_mode``,
timed over a few hundred steps. oneDNN is switched off for it, as the engine does for its steps
(PyTorch's own LSTM kernel is faster for one-character steps); the figure with oneDNN on is
printed too.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint, save_checkpoint
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


def _time_steps(path: Path, onednn: bool, steps: int) -> list[float]:
    ckpt = load_checkpoint(path)
    model = ckpt.model
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = onednn  # type: ignore[assignment]
    times = []
    try:
        with torch.inference_mode():
            generator = make_generator(0)[0]
            params = [SamplingParams()]
            logits, state = model(torch.tensor([[BOS_ID]]), model.initial_state(1))
            logits = logits[:, -1]
            for i in range(steps + 50):
                start = time.perf_counter()
                next_id = choose_next(logits, params, [generator])
                out, state = model(next_id.unsqueeze(-1), state)
                logits = out[:, -1]
                if i >= 50:  # the first steps warm up allocations
                    times.append(time.perf_counter() - start)
    finally:
        torch.backends.mkldnn.enabled = before
    return sorted(times)


def bare_step(path: Path, steps: int = 500) -> dict[str, float]:
    """Seconds per character of the bare loop: p50 and mean, oneDNN off; p50 with it on."""
    times = _time_steps(path, onednn=False, steps=steps)
    with_onednn = _time_steps(path, onednn=True, steps=steps)
    return {
        "p50": times[len(times) // 2],
        "mean": sum(times) / len(times),
        "p50_onednn": with_onednn[len(with_onednn) // 2],
    }


def inprocess_scoring(path: Path, texts: list[str], repeats: int = 3) -> float:
    """Characters per second scoring all ``texts`` in one batch (median of ``repeats``)."""
    ckpt = load_checkpoint(path)
    score_texts(ckpt.model, ckpt.vocab, texts)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        score_texts(ckpt.model, ckpt.vocab, texts)
        times.append(time.perf_counter() - start)
    return sum(len(t) for t in texts) / sorted(times)[len(times) // 2]
