"""Training algorithms: how one chunk of every stream updates the model.

The loop owns data, schedule, evaluation and checkpoints; an algorithm owns one update. To add
one, write a class with the ``TrainStep`` signature and list it in ``ALGORITHMS``; the CLI's
``--algorithm`` choices come from that table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import State, detach_state
from training.ekf import DecoupledEKF
from training.rtrl import RealTimeRecurrentLearning


class TrainStep(Protocol):
    """One update from ``inputs``/``targets`` (B, T); returns the mean loss and the new state.

    An algorithm that carries tensors of its own from chunk to chunk (besides the model's state)
    hands them out through ``carried`` so a resumed run continues exactly, takes them back
    through ``restore_carried``, and drops what belongs to the streams in ``reset_streams`` when
    the streams start again from a fresh state.
    """

    def __call__(self, inputs: Tensor, targets: Tensor, state: State) -> tuple[Tensor, State]: ...

    def carried(self) -> dict[str, Tensor]: ...

    def restore_carried(self, tensors: dict[str, Tensor]) -> None: ...

    def reset_streams(self) -> None: ...


class TruncatedBPTT:
    """Truncated backpropagation through time (Williams & Peng 1990; char-rnn's loop).

    The state arrives detached from the previous chunk, so gradients flow through ``T`` steps
    while the forward pass still carries context from the whole stream.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        grad_clip: float,
        device: torch.device,
    ) -> None:
        self.module = module  # the model, or its DistributedDataParallel wrapper
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.device = device
        #: mixed precision for the forward pass (None = float32); the trainer sets it from
        #: the configured precision
        self.autocast_dtype: torch.dtype | None = None

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def __call__(self, inputs: Tensor, targets: Tensor, state: State) -> tuple[Tensor, State]:
        with self._autocast():
            logits, new_state = self.module(inputs, state)  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        return loss.detach(), detach_state(new_state)

    def carried(self) -> dict[str, Tensor]:
        return {}  # the state alone links one chunk to the next

    def restore_carried(self, tensors: dict[str, Tensor]) -> None:
        pass

    def reset_streams(self) -> None:
        pass


#: name -> factory(module, optimizer, grad_clip, device)
ALGORITHMS: dict[str, Callable[[nn.Module, torch.optim.Optimizer, float, torch.device], TrainStep]]
ALGORITHMS = {"bptt": TruncatedBPTT, "rtrl": RealTimeRecurrentLearning, "ekf": DecoupledEKF}
