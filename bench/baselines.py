"""The plain PyTorch loops charlm's serving is measured against, with the served model's weights.

``BareLSTM`` is ``nn.Embedding`` -> ``nn.LSTM`` -> ``nn.Linear``, its weights read straight from a
checkpoint's safetensors file (no charlm model class). Its sampling loop is what a user writes
with the library alone: ``torch.softmax`` of the last logits and ``torch.multinomial``, one
character per stream per step, the state carried; temperature 1, no filters, ids kept as ids.
None of charlm's sampler, vocabulary masking or text handling is in it, so a ratio against it
shows everything charlm adds.

Each loop is timed with oneDNN (``torch.backends.mkldnn``) on and off and the faster counts: the
baseline is the best the plain library gives on the machine, whichever kernel that is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

#: the first input of every stream; charlm's vocabulary keeps id 1 for the start of a text
START_ID = 1


class BareLSTM(nn.Module):
    """Embedding(V, E) -> nn.LSTM(E, H, L layers) -> Linear(H, V), nothing else."""

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(
        self, ids: Tensor, hidden: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, hidden = self.rnn(self.embedding(ids), hidden)  # (B, T, H)
        return self.head(out), hidden  # (B, T, V)


def load_bare_lstm(path: Path) -> BareLSTM:
    """The weights of an LSTM checkpoint in a ``BareLSTM`` (all keys must match: strict)."""
    tensors = load_file(str(path))
    vocab_size, embed_size = tensors["embedding.weight"].shape
    hidden_size = tensors["rnn.weight_hh_l0"].shape[1]
    num_layers = sum(1 for name in tensors if name.startswith("rnn.weight_ih_l"))
    model = BareLSTM(vocab_size, embed_size, hidden_size, num_layers)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


@contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


@dataclass(frozen=True)
class LoopTiming:
    """Characters per second of a sampling loop, and which oneDNN setting gave it."""

    batch_size: int
    chars_per_s: float
    onednn: bool

    @property
    def seconds_per_step(self) -> float:
        return self.batch_size / self.chars_per_s


@torch.inference_mode()
def _sampling_loop(model: BareLSTM, batch_size: int, steps: int, warmup: int, seed: int) -> float:
    """Seconds per step of the plain loop, after ``warmup`` untimed steps."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((batch_size, 1), START_ID, dtype=torch.long)  # (B, 1)
    hidden = None
    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        logits, hidden = model(ids, hidden)  # (B, 1, V)
        probs = torch.softmax(logits[:, -1], dim=-1)  # (B, V)
        ids = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
    return (time.perf_counter() - start) / steps


def sampling_loop(model: BareLSTM, batch_size: int, steps: int, warmup: int = 20) -> LoopTiming:
    """The plain sampling loop at ``batch_size`` streams for ``steps`` characters each."""
    best: LoopTiming | None = None
    for enabled in (False, True):
        with onednn(enabled):
            seconds = _sampling_loop(model, batch_size, steps, warmup, seed=0)
        timing = LoopTiming(batch_size, batch_size / seconds, enabled)
        if best is None or timing.chars_per_s > best.chars_per_s:
            best = timing
    assert best is not None
    return best


@torch.inference_mode()
def forward_seconds(model: BareLSTM, ids: Tensor, repeats: int = 3) -> float:
    """The fastest of ``repeats`` single forwards over the padded batch ``ids`` (B, T) to its
    logits (the bound for scoring: no log-softmax, no gather), after one untimed forward."""
    best = float("inf")
    for enabled in (False, True):
        with onednn(enabled):
            model(ids)
            for _ in range(repeats):
                start = time.perf_counter()
                model(ids)
                best = min(best, time.perf_counter() - start)
    return best
