"""How fast a model shape trains here: a few timed steps on random ids, for the ``auto`` preset.

The steps are the training step's arithmetic (forward, cross-entropy, backward, fused AdamW,
the precision the run will use) on a throwaway model, so the figure includes what the device
and its thread count make of that shape. The data pipeline, clipping and state carrying cost a
little more in a real run; ``REAL_RUN_FACTOR`` allows for it.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch.nn import functional

from models.config import ModelConfig
from models.registry import build_model

#: a real run's chars/s against this probe's (the loop around the step, measured on a CPU)
REAL_RUN_FACTOR = 0.9
WARMUP_STEPS = 2
TIMED_STEPS = 3


def training_chars_per_second(
    config: ModelConfig,
    *,
    seq_len: int,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Training characters per second for ``config``'s shape at that chunk and batch size."""
    generator = torch.Generator().manual_seed(0)
    model = build_model(config).to(device).train()
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    shape = (batch_size, seq_len)
    ids = torch.randint(config.vocab_size, shape, generator=generator).to(device)
    targets = torch.randint(config.vocab_size, shape, generator=generator).to(device)

    def step() -> None:
        autocast = (
            torch.autocast(device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            logits, _ = model(ids)
        loss = functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(TIMED_STEPS):
        step()
    _synchronize(device)
    seconds = max(time.perf_counter() - started, 1e-9)
    return REAL_RUN_FACTOR * TIMED_STEPS * batch_size * seq_len / seconds


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
