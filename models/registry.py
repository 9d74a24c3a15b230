"""Architecture names to classes: new architectures plug in with ``@register``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from models.base import CharLM
    from models.config import ModelConfig

_REGISTRY: dict[str, type[CharLM]] = {}
# modules whose import registers architectures; imported lazily to avoid cycles
_ARCH_MODULES = ("models.recurrent", "models.clockwork", "models.esn", "models.bidirectional")
_loaded = False

T = TypeVar("T", bound="type[CharLM]")


def register(cls: T) -> T:
    """Class decorator: make an architecture buildable by its ``arch`` name."""
    name = cls.arch
    if not name:
        raise ValueError(f"{cls.__name__} has no arch name")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"architecture {name!r} is registered twice")
    _REGISTRY[name] = cls
    return cls


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _ARCH_MODULES:
            importlib.import_module(module)


def available_architectures() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def model_class(arch: str) -> type[CharLM]:
    _load_builtin()
    try:
        return _REGISTRY[arch]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {valid}") from None


def build_model(config: ModelConfig) -> CharLM:
    """A freshly initialised model for ``config``."""
    return model_class(config.arch)(config)
