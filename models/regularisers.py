"""Training-time regularisers of recurrent language models (Merity, Keskar & Socher 2018,
"Regularizing and Optimizing LSTM Language Models", after Gal & Ghahramani 2016 and Wan et al.
2013).

- **Embedding dropout** (``RowDropout`` on the embedding matrix): whole rows are dropped, so a
  dropped character reads as zeros at every position of the chunk; survivors are scaled by
  ``1 / (1 - p)``.
- **Locked (variational) dropout** (``LockedDropout``): one mask per row of the batch, the same at
  every time step, instead of a fresh mask per element and step.
- **Weight drop** (DropConnect on the hidden-to-hidden matrices, ``recur_with_weight_drop``): one
  mask per forward call (per chunk), shared by the batch, so the recurrence itself is perturbed
  rather than its inputs.

Each is an ``nn.Dropout`` (its rate in ``p``, off outside training mode), so code that turns every
dropout off for evaluation-mode figures in training mode (``models.adapt``) turns these off too.
In evaluation mode every one is the identity, and the model's figures are those without it.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call


class RowDropout(nn.Dropout):
    """Drops whole rows of a matrix ``(N, F)``, scaling the kept ones by ``1 / (1 - p)``."""

    def forward(self, weight: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return weight
        keep = weight.new_empty(weight.shape[0], 1).bernoulli_(1.0 - self.p)  # (N, 1)
        return weight * keep.div_(1.0 - self.p)


class LockedDropout(nn.Dropout):
    """Dropout of ``x`` (B, T, F) with one mask (B, 1, F) for every time step of a row."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1.0 - self.p)  # (B, 1, F)
        return x * keep.div_(1.0 - self.p)


def recurrent_weight_names(rnn: nn.RNNBase) -> list[str]:
    """The hidden-to-hidden matrices of every layer: ``weight_hh_l0``, ``weight_hh_l1``, ..."""
    return [name for name in rnn._flat_weights_names if name.startswith("weight_hh")]


def recur_with_weight_drop(
    rnn: nn.RNNBase, drop: nn.Dropout, x: Tensor, hidden: Tensor | tuple[Tensor, ...]
) -> Any:
    """``rnn(x, hidden)`` with ``drop`` applied to each of its hidden-to-hidden matrices.

    The dropped matrices stand in for the parameters for this call only
    (``torch.func.functional_call``); the gradient flows through the masks to the parameters
    themselves. The dropped matrices are new tensors outside cuDNN's flat weight buffer, so on
    CUDA the layer copies its weights into one for the call, as weight drop must; PyTorch's
    warning about non-contiguous weights says just that and is silenced here.
    """
    dropped = {name: drop(getattr(rnn, name)) for name in recurrent_weight_names(rnn)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single")
        return functional_call(rnn, dropped, (x, hidden))
