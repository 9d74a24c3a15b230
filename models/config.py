"""The model configuration: everything needed to rebuild an architecture from a checkpoint.

``FrozenConfig`` gives a frozen dataclass its dict round trip (``to_dict`` / ``from_dict``, which
names unknown keys) and ``replace``; the training configuration uses it too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self


class FrozenConfig:
    """Dict round trip and ``replace`` for a frozen dataclass (subclass it, then decorate)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    #: names the configuration in errors: "unknown <kind> config keys: ..."
    config_kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The configuration ``to_dict`` gave; a key that is not a field is a ``ValueError``."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown {cls.config_kind} config keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


#: the training-time regularisers of ``ModelConfig``: off when zero / False
REGULARISERS = ("embed_dropout", "weight_drop", "locked_dropout")


@dataclass(frozen=True)
class ModelConfig(FrozenConfig):
    """Hyper-parameters of one character model.

    ``options`` holds architecture-specific settings (clock periods, reservoir parameters, ...);
    each architecture validates the keys it understands and rejects the others.

    ``embed_dropout``, ``weight_drop`` and ``locked_dropout`` are training-time regularisers
    (``models.regularisers``); an architecture that does not apply one refuses a model that
    sets it. Their defaults (off) are what a configuration written before them means.
    """

    config_kind: ClassVar[str] = "model"

    arch: str
    vocab_size: int
    embed_size: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False
    embed_dropout: float = 0.0
    weight_drop: float = 0.0
    locked_dropout: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        for name in ("embed_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("dropout", "embed_dropout", "weight_drop"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if not isinstance(self.locked_dropout, bool):
            raise ValueError(f"locked_dropout must be true or false, got {self.locked_dropout!r}")

    def regularisers(self) -> list[str]:
        """The names of the training-time regularisers this configuration turns on."""
        return [name for name in REGULARISERS if getattr(self, name)]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
