"""The training configuration, its presets, and how it builds the model configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from models.config import ModelConfig
from training.algorithms import ALGORITHMS
from training.precision import PRECISIONS

OPTIMIZERS = ("adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data paths; stored in checkpoints.

    ``max_steps`` and ``max_time`` (seconds of training, evaluation excluded) both bound the run;
    the learning-rate schedule follows whichever is further along, so a time-budgeted run still
    anneals to its final rate by the end of the budget.
    """

    preset: str = "small"
    arch: str = "lstm"
    arch_options: dict[str, Any] = field(default_factory=dict)
    algorithm: str = "bptt"
    embed_size: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False
    seq_len: int = 32
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 4e-3
    final_lr_fraction: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.01
    momentum: float = 0.9
    grad_clip: float = 1.0
    #: chance per step that a stream restarts from the zero state and BOS (bptt only): without
    #: it the carried state is only ever zero at step 0, yet scoring and sampling start there
    state_reset: float = 0.01
    max_steps: int | None = None
    max_time: float | None = None
    eval_interval: int = 200
    eval_max_chars: int | None = 1_000_000
    patience: int = 0
    log_interval: int = 10
    sample_chars: int = 200
    seed: int = 1234
    device: str = "auto"
    precision: str = "auto"
    val_fraction: float = 0.1
    min_char_count: int = 2

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.algorithm in ALGORITHMS, f"algorithm must be one of {', '.join(ALGORITHMS)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}"),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {', '.join(PRECISIONS)}",
            ),
            (
                self.precision != "bf16" or self.algorithm == "bptt",
                "precision bf16 applies to the bptt algorithm only",
            ),
            (self.seq_len >= 1, "seq_len must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.final_lr_fraction <= 1, "final_lr_fraction must be in [0, 1]"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)"),
            (0 <= self.state_reset < 1, "state_reset must be in [0, 1)"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.max_time is None or self.max_time > 0, "max_time must be > 0"),
            (self.eval_interval >= 1, "eval_interval must be >= 1"),
            (self.eval_max_chars is None or self.eval_max_chars >= 1, "eval_max_chars >= 1"),
            (self.patience >= 0, "patience must be >= 0 (0 disables early stopping)"),
            (self.log_interval >= 1, "log_interval must be >= 1"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.min_char_count >= 1, "min_char_count must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            arch=self.arch,
            vocab_size=vocab_size,
            embed_size=self.embed_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dropout=self.dropout,
            tie_weights=self.tie_weights,
            options=dict(self.arch_options),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


#: named sizes; explicit command-line flags override these values
PRESETS: dict[str, dict[str, Any]] = {
    # seconds on a laptop; for smoke tests and tiny corpora
    "tiny": {
        "embed_size": 32,
        "hidden_size": 128,
        "num_layers": 1,
        "seq_len": 64,
        "batch_size": 16,
        "lr": 3e-3,
        "dropout": 0.0,
        "eval_interval": 100,
        "max_steps": 1000,
    },
    # the service's default model: minutes on a 2-core CPU. One wide layer learns faster per
    # second than two of 256 at the same cost; short chunks give many updates a minute; dropout
    # and weight decay keep the 1.2M weights from overfitting a small corpus, and with them a
    # high learning rate pays (docs/benchmarks.md)
    "small": {
        "embed_size": 64,
        "hidden_size": 512,
        "num_layers": 1,
        "seq_len": 16,
        "batch_size": 64,
        "lr": 8e-3,
        "weight_decay": 0.075,
        "dropout": 0.1,
        "eval_interval": 200,
        "max_steps": 5000,
    },
    # a GPU or a long CPU run
    "medium": {
        "embed_size": 128,
        "hidden_size": 512,
        "num_layers": 3,
        "seq_len": 256,
        "batch_size": 64,
        "lr": 2e-3,
        "dropout": 0.2,
        "eval_interval": 500,
        "max_steps": 20000,
    },
}


def config_from_preset(preset: str, **overrides: Any) -> TrainConfig:
    """The preset's values with ``overrides`` on top."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return TrainConfig(preset=preset, **{**PRESETS[preset], **overrides})
