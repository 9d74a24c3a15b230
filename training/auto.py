"""The ``auto`` preset: a model and recipe sized to the corpus, the budget and the device.

A user names a corpus and a time; ``choose`` turns the training-character count, the budget and
the measured speed of each candidate size into settings, by two rules and a schedule of
regularisation (docs/training.md gives the runs behind the constants):

- **Compute.** The budget must show each weight ``CHARS_PER_WEIGHT`` training characters:
  a wider model that would see fewer ends the budget undertrained. The speed of each candidate
  is measured on the device (``training.speed``), so a GPU or a faster CPU gets a wider model.
- **Data.** At most ``WEIGHTS_PER_CHAR`` weights per training character: past that a model
  memorises the corpus faster than any regulariser here holds it back.
- **Passes.** The number of passes over the corpus the budget allows sets the dropout and the
  weight decay (none for one pass, more as the passes grow: a model that sees each character
  a few times underfits, and regularising it only slows it down), and passes beyond
  ``MAX_PASSES`` are cut: the run ends sooner, with its learning-rate schedule annealed to that
  end, rather than overfit.

Every choice also turns on the weight average (``ema``) and early stopping (``patience``).
Values given explicitly on the command line are never changed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from models.config import ModelConfig
from models.registry import build_model
from training import distributed
from training.config import TrainConfig
from training.distributed import DistContext
from training.precision import autocast_dtype
from training.presets import AUTO_PRESET
from training.speed import training_chars_per_second

#: architectures ``auto`` sizes; the others take the ``small`` preset's values
SIZED_ARCHS = ("lstm", "gru", "rnn")
#: candidate shapes, smallest first: (layers, width). On a CPU one wide layer learns faster
#: than two narrower ones of the same cost (docs/benchmarks.md), so depth comes last.
SHAPES: tuple[tuple[int, int], ...] = (
    (1, 128),
    (1, 192),
    (1, 256),
    (1, 384),
    (1, 512),
    (1, 768),
    (1, 1024),
    (2, 1024),
    (2, 1536),
    (3, 1536),
)
CHARS_PER_WEIGHT = 6.0
WEIGHTS_PER_CHAR = 1.5
MAX_PASSES = 60.0
#: the share of a time budget left for training steps: validations, files and start-up aside
TRAIN_SHARE = 0.9
#: chunk length and parallel streams per process, by device type
LAYOUT = {"cpu": (16, 64), "cuda": (64, 128)}
EMBED_SIZE = 64
#: the peak rate that suits widths up to 512; wider models take it scaled by 512 / width
BASE_LR = 8e-3
WEIGHT_DECAY = 0.075
EMA_DECAY = 0.999
#: where the cosine schedule ends, as a fraction of the peak rate: with the weight average on,
#: a higher floor than the plain schedule's 0.05 keeps the raw weights moving while the average
#: smooths them (docs/training.md: 0.15 best of 0 to 0.2 on tinyshakespeare at 8,440 steps)
FINAL_LR_FRACTION = 0.15
PATIENCE = 4

#: training characters per second of a shape: (layers, width) -> chars/s
SpeedProbe = Callable[[int, int], float]


@dataclass(frozen=True)
class Budget:
    """What bounds the run: seconds of wall time, steps, or both (the first reached ends it)."""

    seconds: float | None
    steps: int | None

    def chars(self, chars_per_second: float, chars_per_step: int) -> float:
        """Training characters the budget allows at that speed."""
        limits = []
        if self.seconds is not None:
            limits.append(self.seconds * TRAIN_SHARE * chars_per_second)
        if self.steps is not None:
            limits.append(float(self.steps * chars_per_step))
        return min(limits) if limits else math.inf


@dataclass(frozen=True)
class AutoChoice:
    """The settings ``auto`` chose, and a line that says why."""

    values: dict[str, Any]
    reason: str


def num_weights(arch: str, layers: int, width: int, vocab_size: int) -> int:
    """Trainable parameters of that shape, counted on the meta device (no memory used)."""
    config = ModelConfig(
        arch=arch,
        vocab_size=vocab_size,
        embed_size=EMBED_SIZE,
        hidden_size=width,
        num_layers=layers,
    )
    with torch.device("meta"):
        return build_model(config).num_parameters(trainable_only=True)


def dropout_for(passes: float) -> float:
    """No dropout for a single pass, 0.1 at ten, 0.2 at a hundred (log-linear, capped at 0.3)."""
    if passes <= 1.0:
        return 0.0
    return round(min(0.3, 0.1 * math.log10(passes)), 3)


def weight_decay_for(passes: float) -> float:
    """``WEIGHT_DECAY`` at ten passes, less for fewer (none for one), at most 1.5 times it."""
    if passes <= 1.0:
        return 0.0
    return round(WEIGHT_DECAY * min(1.5, math.log10(passes)), 4)


def lr_for(width: int) -> float:
    return BASE_LR * min(1.0, 512 / width)


def ema_for(total_steps: float) -> float:
    """``EMA_DECAY``, shortened for short runs so the average spans at most a tenth of them."""
    return round(min(EMA_DECAY, max(0.9, 1.0 - 10.0 / max(total_steps, 1.0))), 6)


def candidate_shapes(layers: int | None = None, width: int | None = None) -> list[tuple[int, int]]:
    """``SHAPES`` with the dimensions the user pinned put in, smallest first, without repeats:
    a pinned width keeps the choice of depth, a pinned depth the choice of width."""
    shapes: list[tuple[int, int]] = []
    for shape_layers, shape_width in SHAPES:
        shape = (layers or shape_layers, width or shape_width)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def choose(
    arch: str,
    train_chars: int,
    vocab_size: int,
    budget: Budget,
    speed: SpeedProbe,
    device_type: str = "cpu",
    *,
    world_size: int = 1,
    layout: tuple[int, int] | None = None,
    layers: int | None = None,
    width: int | None = None,
) -> AutoChoice:
    """The settings for ``arch`` on ``train_chars`` characters within ``budget``.

    ``speed`` is called for the shapes in order, smallest first, and no further than the first
    that the compute rule refuses (a wider one is slower still). With ``world_size``
    processes, ``speed`` gives all of theirs together and each step trains that many batches.
    ``layers`` and ``width``, when given, are the user's: only shapes with them are candidates,
    and the rest (rate, regularisation, passes) is chosen for the shape that will train.
    """
    if train_chars < 1:
        raise ValueError("the auto preset needs training text")
    seq_len, batch_size = layout or LAYOUT.get(device_type, LAYOUT["cpu"])
    chars_per_step = seq_len * batch_size * world_size
    shapes = candidate_shapes(layers, width)
    chosen = shapes[0]
    chosen_chars = budget.chars(speed(*chosen), chars_per_step)
    for shape in shapes[1:]:
        weights = num_weights(arch, *shape, vocab_size)
        if weights > WEIGHTS_PER_CHAR * train_chars:
            break
        chars = budget.chars(speed(*shape), chars_per_step)
        if chars < CHARS_PER_WEIGHT * weights:
            break
        chosen, chosen_chars = shape, chars
    layers, width = chosen
    allowed = chosen_chars / train_chars
    passes = min(allowed, MAX_PASSES)
    values: dict[str, Any] = {
        "embed_size": EMBED_SIZE,
        "hidden_size": width,
        "num_layers": layers,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "lr": lr_for(width),
        "final_lr_fraction": FINAL_LR_FRACTION,
        "weight_decay": weight_decay_for(passes),
        "dropout": dropout_for(passes),
        "patience": PATIENCE,
        "ema": ema_for(passes * train_chars / chars_per_step),
    }
    shown = "unbounded" if math.isinf(allowed) else f"about {allowed:.1f}"
    cut = ""
    if allowed > MAX_PASSES:
        values["max_steps"] = max(1, int(MAX_PASSES * train_chars / chars_per_step))
        cut = f", cut to {MAX_PASSES:g} ({values['max_steps']:,} steps)"
    weights = num_weights(arch, layers, width, vocab_size)
    reason = (
        f"auto: {layers}x{width} {arch} ({weights:,} weights) for {train_chars:,} training"
        f" characters; the budget allows {shown} passes{cut}; dropout {values['dropout']:g},"
        f" weight decay {values['weight_decay']:g}, lr {values['lr']:g} (ending at"
        f" {FINAL_LR_FRACTION:g}x), ema {values['ema']:g}"
    )
    return AutoChoice(values, reason)


def resolve(
    config: TrainConfig,
    explicit: set[str],
    train_chars: int,
    vocab_size: int,
    context: DistContext,
) -> tuple[TrainConfig, str]:
    """``config`` with the ``auto`` choices for every setting not in ``explicit``, and the line
    that says what was chosen. Rank 0 measures the speeds and every rank gets its figures, so
    all processes of a run choose alike."""
    if config.preset != AUTO_PRESET:
        return config, ""
    if config.arch not in SIZED_ARCHS:
        return config, f"auto: {config.arch} is not sized by auto; it takes the small preset"
    started = time.perf_counter()
    dtype = autocast_dtype(config.precision, context.device)
    seq_len, batch_size = LAYOUT.get(context.device.type, LAYOUT["cpu"])
    seq_len = config.seq_len if "seq_len" in explicit else seq_len
    batch_size = config.batch_size if "batch_size" in explicit else batch_size

    def speed(layers: int, width: int) -> float:
        shape = ModelConfig(
            arch=config.arch,
            vocab_size=vocab_size,
            embed_size=EMBED_SIZE,
            hidden_size=width,
            num_layers=layers,
            options=dict(config.arch_options),
        )
        measured = 0.0
        if context.is_main:
            measured = training_chars_per_second(
                shape,
                seq_len=seq_len,
                batch_size=batch_size,
                device=context.device,
                autocast_dtype=dtype,
            )
        return distributed.broadcast_float(measured, context) * context.world_size

    budget = Budget(config.max_time, config.max_steps)
    choice = choose(
        config.arch,
        train_chars,
        vocab_size,
        budget,
        speed,
        device_type=context.device.type,
        world_size=context.world_size,
        layout=(seq_len, batch_size),
        layers=config.num_layers if "num_layers" in explicit else None,
        width=config.hidden_size if "hidden_size" in explicit else None,
    )
    changes = {k: v for k, v in choice.values.items() if k not in explicit}
    reason = choice.reason
    if config.tie_weights:
        changes.update(_tied_widths(config, explicit, changes))
        reason += f"; tied embeddings of {changes.get('embed_size', config.embed_size)}"
    probe_seconds = time.perf_counter() - started
    return config.replace(**changes), f"{reason} (chosen in {probe_seconds:.1f}s)"


def _tied_widths(
    config: TrainConfig, explicit: set[str], changes: dict[str, Any]
) -> dict[str, int]:
    """Tied embeddings share the output layer's matrix, so the embedding is as wide as the
    hidden state: the width given explicitly wins (the hidden one if both are), else auto's."""
    if "embed_size" in explicit and "hidden_size" not in explicit:
        return {"hidden_size": config.embed_size}
    if "embed_size" in explicit:
        return {}  # both given: a mismatch is the user's to see (the model build refuses it)
    return {"embed_size": int(changes.get("hidden_size", config.hidden_size))}
