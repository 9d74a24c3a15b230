"""The plain PyTorch loop ``bench.train`` measures charlm against: what a careful user writes.

A 2x256 ``nn.LSTM`` with dropout 0.1 between its layers, trained on random windows from a zero
state with fused AdamW, its rate on a cosine from 2e-3 to 2e-4 over the time budget, gradient
clipping at 1, and bfloat16 autocast when the caller passes it (``bench.train`` passes what
charlm's own precision rule picks for the machine).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ReferenceLSTM(nn.Module):
    """Embedding(V, 64) -> nn.LSTM(64, 256, 2 layers) -> Linear(256, V): 0.88M parameters.

    Dropout between its layers: on the embedding's output, between the two LSTM layers and on
    the LSTM's output (as in PyTorch's own word-level language model example).
    """

    def __init__(
        self, vocab_size: int, embed_size: int = 64, hidden_size: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_size, hidden_size, 2, dropout=dropout, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(
        self, ids: Tensor, hidden: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, hidden = self.lstm(self.drop(self.embedding(ids)), hidden)
        return self.head(self.drop(out)), hidden


def cosine_lr(peak: float, final: float, progress: float) -> float:
    """From ``peak`` at progress 0 down to ``final`` at progress 1 along half a cosine."""
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class ReferenceTrainer:
    """Random windows from a zero state; fused AdamW, its rate on a cosine over the time budget;
    gradient clipping at 1; the forward under ``autocast_dtype`` when one is given."""

    def __init__(
        self,
        text: str,
        batch_size: int,
        seq_len: int,
        lr: tuple[float, float],
        budget: float,
        autocast_dtype: torch.dtype | None,
        seed: int,
    ) -> None:
        chars = sorted(set(text))
        stoi = {c: i for i, c in enumerate(chars)}
        ids = np.array([stoi[c] for c in text], dtype=np.int64)
        cut = int(len(ids) * 0.9)
        self.train_ids = torch.from_numpy(ids[:cut])
        self.val_ids = torch.from_numpy(ids[cut:])
        torch.manual_seed(seed)
        self.model = ReferenceLSTM(len(chars))
        self.peak_lr, self.final_lr = lr
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.peak_lr, fused=True)
        self.budget = budget
        self.autocast_dtype = autocast_dtype
        self.batch_size, self.seq_len = batch_size, seq_len
        self.generator = torch.Generator().manual_seed(seed)
        self.train_seconds = 0.0
        self.step = 0

    def advance(self, seconds: float) -> None:
        until = self.train_seconds + seconds
        while self.train_seconds < until:
            started = time.perf_counter()
            lr = cosine_lr(self.peak_lr, self.final_lr, self.train_seconds / self.budget)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            starts = torch.randint(
                0,
                len(self.train_ids) - self.seq_len - 1,
                (self.batch_size,),
                generator=self.generator,
            )
            window = torch.stack([self.train_ids[s : s + self.seq_len + 1] for s in starts])
            with torch.autocast(
                "cpu", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
            ):
                logits, _ = self.model(window[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), window[:, 1:].flatten())
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
