"""The training configuration, and how it builds the model configuration; its named sizes are
``training.presets``.

Each field carries its command-line description in ``metadata``: ``help``, the flag ``group``,
``choices`` where the values are a closed set, and ``resumable`` for the budgets and reporting
settings a resumed run may change. ``charlm-train`` builds its flags from them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from models.config import FrozenConfig, ModelConfig
from models.registry import available_architectures
from training.algorithms import ALGORITHMS
from training.distributed import DEVICES
from training.precision import PRECISIONS
from training.presets import DEFAULT_PRESET, PRESET_NAMES, preset_values

OPTIMIZERS = ("adamw", "sgd")

Choices = Sequence[str] | Callable[[], Sequence[str]]


def _about(
    help: str, group: str, choices: Choices | None = None, resumable: bool = False
) -> dict[str, Any]:
    """A field's description (see the module docstring)."""
    return {"help": help, "group": group, "choices": choices, "resumable": resumable}


def _setting(
    default: Any,
    help: str,
    group: str,
    *,
    choices: Choices | None = None,
    resumable: bool = False,
) -> Any:
    """A config field with an immutable default and its description."""
    return field(default=default, metadata=_about(help, group, choices, resumable))


def field_choices(f: dataclasses.Field[Any]) -> tuple[str, ...] | None:
    """The values a field admits, or ``None`` when it is not a closed set."""
    choices: Choices | None = f.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


@dataclass(frozen=True)
class TrainConfig(FrozenConfig):
    """Everything a training run needs besides the data paths; stored in checkpoints.

    ``max_steps`` and ``max_time`` (seconds of wall time, evaluations and files included) both
    bound the run; the learning-rate schedule follows whichever is further along, so a
    time-budgeted run still anneals to its final rate by the end of the budget
    (``training.budget``).
    """

    config_kind: ClassVar[str] = "training"

    preset: str = _setting(
        DEFAULT_PRESET,
        "auto: size the model and recipe to the corpus, the time budget and the device"
        " (docs/training.md); or a named size; explicit flags override its values",
        "model",
        choices=PRESET_NAMES,
    )
    arch: str = _setting("lstm", "architecture", "model", choices=available_architectures)
    arch_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_about("architecture-specific option, value parsed as JSON (repeatable)", "model"),
    )
    algorithm: str = _setting(
        "bptt", "training algorithm", "optimisation", choices=tuple(ALGORITHMS)
    )
    embed_size: int = _setting(64, "embedding width", "model")
    hidden_size: int = _setting(256, "recurrent state width per layer", "model")
    num_layers: int = _setting(2, "stacked recurrent layers", "model")
    dropout: float = _setting(0.0, "dropout between layers, in [0, 1)", "model")
    tie_weights: bool = _setting(
        False,
        "share the embedding and output weights (needs embed = hidden size) (rnn, gru, lstm)",
        "model",
    )
    embed_dropout: float = _setting(
        0.0,
        "embedding dropout: drop whole characters' vectors for a chunk, in [0, 1) (rnn, gru, lstm)",
        "model",
    )
    weight_drop: float = _setting(
        0.0,
        "DropConnect on the hidden-to-hidden matrices, one mask per chunk, in [0, 1)"
        " (rnn, gru, lstm)",
        "model",
    )
    locked_dropout: bool = _setting(
        False,
        "--dropout on the recurrent stack's inputs and outputs keeps one mask per stream for the"
        " whole chunk (between stacked layers it stays per element) (rnn, gru, lstm)",
        "model",
    )
    seq_len: int = _setting(32, "characters per truncated-BPTT chunk", "optimisation")
    batch_size: int = _setting(64, "parallel text streams (per process)", "optimisation")
    optimizer: str = _setting(
        "adamw", "adamw, or sgd with Nesterov momentum", "optimisation", choices=OPTIMIZERS
    )
    lr: float = _setting(4e-3, "peak learning rate", "optimisation")
    final_lr_fraction: float = _setting(
        0.05, "the cosine schedule ends at this fraction of --lr", "optimisation"
    )
    warmup_steps: int = _setting(50, "linear warm-up steps", "optimisation")
    weight_decay: float = _setting(0.01, "decoupled weight decay", "optimisation")
    momentum: float = _setting(0.9, "SGD momentum", "optimisation")
    grad_clip: float = _setting(1.0, "gradient-norm clipping, 0 = off", "optimisation")
    # a resumed run may turn it on, off or change it: the raw weights train the same either way
    ema: float = _setting(
        0.0,
        "decay per step of an exponential moving average of the weights, 0 = off; at each"
        " validation the averaged weights are evaluated beside the raw ones and the checkpoint"
        " keeps whichever validates better (not esn)",
        "optimisation",
        resumable=True,
    )
    # without restarts the carried state is only ever zero at step 0, yet scoring and sampling
    # start there
    state_reset: float = _setting(
        0.01,
        "chance per step that a stream restarts from the zero state and BOS (bptt only)",
        "optimisation",
    )
    max_steps: int | None = _setting(None, "stop after this many steps", "run", resumable=True)
    max_time: float | None = _setting(
        None,
        "stop after this many seconds of wall time, validations and checkpoints included; the"
        " learning-rate schedule ends with it and the final validation fits within it",
        "run",
        resumable=True,
    )
    eval_interval: int | None = _setting(
        None,
        "steps between validations; none = whenever validating keeps within --eval-share",
        "run",
        resumable=True,
    )
    eval_share: float = _setting(
        0.05,
        "without --eval-interval: validations, with their samples and checkpoints, take at most"
        " this share of the wall time before the final one; 0 = only the final one",
        "run",
        resumable=True,
    )
    eval_max_chars: int | None = _setting(
        250_000,
        "validate on the first this many validation characters during training (every"
        " validation reads the same ones; charlm-eval gives the figure of a whole text)",
        "run",
        resumable=True,
    )
    eval_streams: int = _setting(
        32,
        "validation reads the text as up to this many parallel streams, each a contiguous"
        " piece of at least 1,024 characters; 1 = one stream per document, exactly as"
        " charlm-eval and /v1/score read it",
        "run",
        resumable=True,
    )
    eval_warmup: int = _setting(
        128,
        "characters a validation stream that starts mid-text reads, unscored, before it scores",
        "run",
        resumable=True,
    )
    patience: int = _setting(
        0,
        "stop after this many validations without improvement, 0 = never",
        "run",
        resumable=True,
    )
    log_interval: int = _setting(10, "steps between metrics records", "run", resumable=True)
    sample_chars: int = _setting(
        200, "length of the sample shown at each validation, 0 = none", "run", resumable=True
    )
    seed: int = _setting(1234, "random seed", "run")
    device: str = _setting("auto", "where to train", "run", choices=DEVICES, resumable=True)
    precision: str = _setting(
        "auto",
        "forward-pass arithmetic: bf16 mixed precision, fp32, or auto = bf16 on CUDA and on CPUs"
        " with AMX, fp32 elsewhere",
        "run",
        choices=PRECISIONS,
        resumable=True,
    )
    val_fraction: float = _setting(
        0.1, "fraction of the text, from its END, held out for validation", "data"
    )
    min_char_count: int = _setting(
        2, "characters seen fewer times in training become <unk>", "data"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = field_choices(f)
            if choices is not None and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}")
        checks: list[tuple[bool, str]] = [
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
            (0 <= self.ema < 1, "ema must be in [0, 1) (0 disables weight averaging)"),
            (
                self.arch != "esn" or self.ema == 0,
                f"architecture 'esn' does not support ema (got {self.ema}): its readout is fitted"
                " in closed form, with no training steps to average; leave ema off",
            ),
            (0 <= self.state_reset < 1, "state_reset must be in [0, 1)"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.max_time is None or self.max_time > 0, "max_time must be > 0"),
            (self.eval_interval is None or self.eval_interval >= 1, "eval_interval must be >= 1"),
            (0 <= self.eval_share < 1, "eval_share must be in [0, 1)"),
            (self.eval_max_chars is None or self.eval_max_chars >= 1, "eval_max_chars >= 1"),
            (self.eval_streams >= 1, "eval_streams must be >= 1"),
            (self.eval_warmup >= 0, "eval_warmup must be >= 0"),
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
            embed_dropout=self.embed_dropout,
            weight_drop=self.weight_drop,
            locked_dropout=self.locked_dropout,
            options=dict(self.arch_options),
        )


def config_from_preset(preset: str, **overrides: Any) -> TrainConfig:
    """The preset's values with ``overrides`` on top."""
    return TrainConfig(preset=preset, **{**preset_values(preset), **overrides})
