"""The contract every character model follows, and helpers for its recurrent state.

A model maps ids ``(B, T)`` and a state to logits ``(B, T, V)`` and the next state. The state is a
tuple of tensors, each with the batch on dim 0, so rows can be selected, stacked and reset without
knowing the architecture (the server's batching relies on this).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from models.config import ModelConfig

State = tuple[Tensor, ...]


class CharLM(nn.Module):
    """Base class of all architectures.

    Subclasses set ``arch`` (the registry name) and implement ``forward`` and ``initial_state``.
    Capability flags say what a model can do instead of callers testing architecture names:
    ``can_generate`` is False for models that see the future (bidirectional ones);
    ``can_tie_weights`` is True for those whose readout can share the embedding matrix.
    """

    arch: ClassVar[str] = ""
    can_generate: ClassVar[bool] = True
    #: whether ``ModelConfig.tie_weights`` applies; a configuration that sets it is refused if not
    can_tie_weights: ClassVar[bool] = False
    #: options this architecture accepts in ``ModelConfig.options``, with their defaults
    default_options: ClassVar[dict[str, Any]] = {}
    #: whether ``step`` may take an architecture's faster path (False: always ``forward``)
    fast_step: bool = True
    #: the training-time regularisers of ``ModelConfig`` this architecture applies; a
    #: configuration that turns on another is refused
    regularisers: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        unknown = sorted(set(config.options) - set(self.default_options))
        if unknown:
            allowed = ", ".join(sorted(self.default_options)) or "none"
            raise ValueError(
                f"architecture {config.arch!r} does not take option(s) {', '.join(unknown)}"
                f" (allowed: {allowed})"
            )
        for name in config.regularisers() + (["tie_weights"] if config.tie_weights else []):
            if not self.applies(name):
                raise ValueError(
                    f"architecture {config.arch!r} does not support {name}"
                    f" (got {getattr(config, name)!r}); it applies to {_applying(name)}"
                )
        self.config = config

    @classmethod
    def applies(cls, setting: str) -> bool:
        """Whether this architecture applies ``setting``, a regulariser or ``tie_weights``."""
        return setting in cls.regularisers or (setting == "tie_weights" and cls.can_tie_weights)

    def option(self, name: str) -> Any:
        return self.config.options.get(name, self.default_options[name])

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """``ids`` (B, T) long -> logits (B, T, V) and the state after the last step."""
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The state before any input: what a fresh text starts from."""
        raise NotImplementedError

    def step(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One id per row, as when generating: ``ids`` (B, 1) -> logits (B, 1, V) and the next
        state; a drop-in for ``model(ids, state)``. The same figures as ``forward`` (to float
        rounding), which stays the reference; architectures with a faster way override this."""
        return self(ids, state)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def zero_layer_state(
        self, batch_size: int, device: torch.device | str | None, tensors: int
    ) -> State:
        """``tensors`` zero tensors (B, num_layers, hidden_size) in the weights' dtype."""
        device = device if device is not None else self.device
        cfg = self.config
        shape = (batch_size, cfg.num_layers, cfg.hidden_size)
        dtype = next(self.parameters()).dtype
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(tensors))

    def num_parameters(self, trainable_only: bool = False) -> int:
        params = self.parameters()
        return sum(p.numel() for p in params if p.requires_grad or not trainable_only)


def _applying(setting: str) -> str:
    """The architectures that apply ``setting``, for an error message."""
    from models.registry import available_architectures, model_class  # registry imports this

    names = [a for a in available_architectures() if model_class(a).applies(setting)]
    return ", ".join(names) or "no architecture"


def detach_state(state: State) -> State:
    """Cut the graph between truncated-BPTT chunks, keeping the values."""
    return tuple(s.detach() for s in state)


def select_state(state: State, rows: Tensor | Sequence[int]) -> State:
    """The state of the given batch rows, in that order."""
    index = torch.as_tensor(rows, dtype=torch.long, device=state[0].device)
    return tuple(s.index_select(0, index) for s in state)


def concat_states(states: Sequence[State]) -> State:
    """Stack the rows of several states (same architecture) into one batch."""
    if not states:
        raise ValueError("concat_states needs at least one state")
    return tuple(torch.cat(parts, dim=0) for parts in zip(*states, strict=True))
