"""The classic gated and simple recurrent networks over PyTorch's fused layers.

- ``rnn``: Elman's simple recurrent network (Elman 1990), tanh units.
- ``lstm``: long short-term memory (Hochreiter & Schmidhuber 1997).
- ``gru``: gated recurrent unit (Cho et al. 2014).

Each has an embedding, ``num_layers`` stacked recurrent layers (a deep RNN when > 1) with dropout
between them, and a linear readout, optionally tied to the embedding. In training mode the
regularisers of ``models.regularisers`` may also apply: embedding dropout, locked dropout on the
stack's inputs and outputs, and weight drop on its hidden-to-hidden matrices.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import CharLM, State
from models.config import REGULARISERS, ModelConfig
from models.fast_step import FusedStep
from models.registry import register
from models.regularisers import LockedDropout, RowDropout, recur_with_weight_drop


class _FusedRecurrentLM(CharLM):
    """Embedding -> stacked ``nn.RNN``/``nn.GRU``/``nn.LSTM`` -> linear readout."""

    rnn_class: ClassVar[type[nn.RNN] | type[nn.GRU] | type[nn.LSTM]]
    #: tensors in the state: (h,) or (h, c)
    state_tensors: ClassVar[int] = 1
    regularisers: ClassVar[frozenset[str]] = frozenset(REGULARISERS)
    can_tie_weights: ClassVar[bool] = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.tie_weights and config.embed_size != config.hidden_size:
            raise ValueError(
                "tie_weights needs embed_size == hidden_size "
                f"(got {config.embed_size} and {config.hidden_size})"
            )
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        # on the stack's inputs and outputs; between its layers nn.RNNBase's own dropout
        self.drop = (LockedDropout if config.locked_dropout else nn.Dropout)(config.dropout)
        self.embed_drop = RowDropout(config.embed_dropout)  # rows of the embedding matrix
        self.weight_drop = nn.Dropout(config.weight_drop)  # the hidden-to-hidden matrices
        self.rnn = self._make_rnn(config)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embedding.weight
        self._init_weights()
        self._step_cache: CachedStep | None = None

    def _make_rnn(self, config: ModelConfig) -> nn.RNNBase:
        return self.rnn_class(
            config.embed_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )

    def _init_weights(self) -> None:
        # unit-variance inputs (PyTorch's default) leave the unigram plateau several times faster
        # than small ones; a tied matrix is also the readout, where small values keep the
        # initial logits near uniform
        nn.init.normal_(self.embedding.weight, std=0.1 if self.config.tie_weights else 1.0)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        x = self.drop(self._embed(ids))  # (B, T, E)
        # the contract keeps the batch on dim 0; PyTorch's layers want (L, B, H)
        hidden = tuple(s.transpose(0, 1).contiguous() for s in state)
        hx = hidden if self.state_tensors == 2 else hidden[0]
        if self.training and self.weight_drop.p > 0.0:
            out, new_hidden = recur_with_weight_drop(self.rnn, self.weight_drop, x, hx)
        else:
            out, new_hidden = self.rnn(x, hx)
        logits = self.head(self.drop(out))  # (B, T, V)
        parts = new_hidden if isinstance(new_hidden, tuple) else (new_hidden,)
        return logits, tuple(s.transpose(0, 1) for s in parts)

    def _embed(self, ids: Tensor) -> Tensor:
        """``ids`` (B, T) -> embeddings (B, T, E), whole rows dropped when training with
        embedding dropout (one mask over the vocabulary for the chunk)."""
        if self.training and self.embed_drop.p > 0.0:
            return F.embedding(ids, self.embed_drop(self.embedding.weight))
        return self.embedding(ids)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return self.zero_layer_state(batch_size, device, self.state_tensors)

    def step(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """``forward`` for one id per row, through ``models.fast_step.FusedStep`` when nothing
        needs the reference path: inference (no autograd, eval mode) on the CPU, ``fast_step``
        on. The fused step is built from the weights at the first call and again whenever a
        weight has changed since (its storage or version counter moved)."""
        if (
            not self.fast_step
            or self.training
            or torch.is_grad_enabled()
            or ids.shape[1] != 1
            or ids.device.type != "cpu"
        ):
            return self(ids, state)
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        return self._fused_step()(ids, state)

    def _fused_step(self) -> FusedStep:
        cached = self._step_cache
        if cached is None or not cached.current():
            cached = self._step_cache = CachedStep(self)
        return cached.step


class CachedStep:
    """A model's ``FusedStep`` and the weights it was built from: current while every weight
    keeps its storage and version counter (checked at each step from the list kept here, about
    a sixth of the cost of walking ``parameters()`` each time)."""

    def __init__(self, model: _FusedRecurrentLM) -> None:
        self.weights = list(model.parameters())
        self.key = [(p.data_ptr(), p._version) for p in self.weights]
        self.step = FusedStep(model.embedding, model.rnn, model.head)

    def current(self) -> bool:
        return [(p.data_ptr(), p._version) for p in self.weights] == self.key


@register
class ElmanLM(_FusedRecurrentLM):
    """Simple recurrent network (Elman 1990): h_t = tanh(W x_t + U h_{t-1} + b)."""

    arch = "rnn"
    rnn_class = nn.RNN


@register
class GRULM(_FusedRecurrentLM):
    """Gated recurrent unit (Cho et al. 2014)."""

    arch = "gru"
    rnn_class = nn.GRU


@register
class LSTMLM(_FusedRecurrentLM):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), forget-gate bias set to 1."""

    arch = "lstm"
    rnn_class = nn.LSTM
    state_tensors = 2

    def _init_weights(self) -> None:
        super()._init_weights()
        hidden = self.config.hidden_size
        for name, param in self.rnn.named_parameters():
            if name.startswith("bias_ih"):
                with torch.no_grad():
                    param[hidden : 2 * hidden].fill_(1.0)
