"""Weight averaging: an exponential moving average (EMA) of a model's trainable weights.

After every optimisation step (``training.step.Stepper``) the average moves towards the weights:

    average <- d_t * average + (1 - d_t) * weights,    d_t = min(decay, (1 + t) / (10 + t))

with ``t`` the updates made so far. Without the warm-up term the random initial weights would
weigh on the average for about ``1 / (1 - decay)`` steps; with it the first averages follow the
weights closely and the full decay takes over once ``t`` reaches ``(10 decay - 1) / (1 - decay)``.

At each validation the trainer reads the text with the raw weights and again with the average
swapped in (``read_both``); the better figure counts for the best checkpoint and for early
stopping, and the checkpoint holds those weights and says which (``checkpoint_info``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from training.evaluate import EvalResult

#: the key of the update count in ``WeightAverage.state_dict``: no parameter can have this name
UPDATES_KEY = "@updates"


class WeightAverage:
    """An exponential moving average of ``model``'s trainable parameters (fp32 copies on the
    model's device); ``update()`` after each step, ``swapped_in()`` to evaluate it."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the decay of a weight average must be in (0, 1), not {decay}")
        self.decay = decay
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params: list[Tensor] = [p for _, p in named]
        self.averages: list[Tensor] = []
        self.updates = 0
        self.reset()

    def reset(self) -> None:
        """Start again from the model's current weights."""
        with torch.no_grad():
            self.averages = [p.detach().to(torch.float32, copy=True) for p in self.params]
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next ``update`` applies (the warm-up's, until it reaches ``decay``)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights: one fused pass over every tensor."""
        weights = [p.detach().float() for p in self.params]  # no copy when already fp32
        torch._foreach_lerp_(self.averages, weights, 1.0 - self.current_decay())
        self.updates += 1

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; after it, its own again, bit
        for bit. The weights are copied in place, so the optimizer and the process group keep
        their tensors, and each copy moves the parameters' version counters: what a model
        caches from its weights (the fused inference step, a clockwork matrix) is rebuilt from
        the weights it then holds."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.averages)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, raw)

    def state_dict(self) -> dict[str, Tensor]:
        """The average by parameter name, and the update count under ``UPDATES_KEY``. As with
        ``Module.state_dict`` the tensors are the live ones: write or copy them before the next
        update."""
        saved = dict(zip(self.names, self.averages, strict=True))
        saved[UPDATES_KEY] = torch.tensor(self.updates, dtype=torch.int64)
        return saved

    def load_state_dict(self, saved: dict[str, Tensor]) -> None:
        """Continue from ``state_dict()``'s tensors, exactly; a ``ValueError`` names what does
        not match this model."""
        names = set(saved) - {UPDATES_KEY}
        missing = sorted(set(self.names) - names)
        unexpected = sorted(names - set(self.names))
        if missing or unexpected or UPDATES_KEY not in saved:
            raise ValueError(
                "the weight average does not match the model"
                f" (missing: {', '.join(missing) or 'none'};"
                f" unexpected: {', '.join(unexpected) or 'none'})"
            )
        for name, average in zip(self.names, self.averages, strict=True):
            if saved[name].shape != average.shape:
                raise ValueError(
                    f"the weight average of {name} has shape {tuple(saved[name].shape)},"
                    f" the model's {tuple(average.shape)}"
                )
        with torch.no_grad():
            torch._foreach_copy_(self.averages, [saved[name] for name in self.names])
        self.updates = int(saved[UPDATES_KEY])


@dataclass(frozen=True)
class Validated:
    """One validation's figures: the raw weights', and the average's when there is one."""

    raw: EvalResult
    averaged: EvalResult | None = None

    @property
    def weights(self) -> str:
        """``"ema"`` when the average validates better than the raw weights, else ``"raw"``."""
        if self.averaged is not None and self.averaged.nats_per_char < self.raw.nats_per_char:
            return "ema"
        return "raw"

    @property
    def best(self) -> EvalResult:
        """The figure that counts (best checkpoint, early stopping)."""
        return self.averaged if self.averaged is not None and self.weights == "ema" else self.raw

    def figures(self) -> dict[str, Any]:
        """What a metrics record adds to the raw figure (nothing without an average)."""
        if self.averaged is None:
            return {}
        return {
            "ema_val_nats": self.averaged.nats_per_char,
            "ema_val_bpc": self.averaged.bits_per_char,
            "weights": self.weights,
        }


def read_both(read: Callable[[], EvalResult], average: WeightAverage | None) -> Validated:
    """``read()`` with the raw weights and, when there is an ``average``, with it swapped in."""
    raw = read()
    if average is None:
        return Validated(raw)
    with average.swapped_in():
        return Validated(raw, read())


def checkpoint_info(weights: str, average: WeightAverage | None) -> dict[str, Any]:
    """What a checkpoint's training summary says of the weights it holds."""
    info: dict[str, Any] = {"weights": weights}
    if average is not None:
        info.update(ema_decay=average.decay, ema_updates=average.updates)
    return info
