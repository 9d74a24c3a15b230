"""Bidirectional recurrent models (Schuster & Paliwal 1997), deep when ``num_layers > 1``
(stacked bidirectional layers as in Graves, Mohamed & Hinton 2013).

The models predict each character from both sides: ``logits[:, t]`` is the distribution of
``ids[:, t + 1]`` given everything up to ``t`` (a forward stack read left to right) and everything
from ``t + 2`` on (a backward stack read right to left). That keeps the causal models' indexing, so
the same next-character loss trains both kinds; the only difference is that a bidirectional model
also sees the right context of the target. It can therefore not generate left to right
(``can_generate = False``); it fills gaps and gives pseudo-log-likelihoods (``models.infill``).

The two stacks stay separate up to the top: Graves et al. feed both directions of one layer into
each direction of the next, but that would let the target leak into its own prediction under this
leave-one-out objective. Here each direction has ``num_layers`` layers and the top combines them
through a ``tanh`` layer of ``hidden_size`` units. The benefit: the pseudo-log-likelihood of a text
takes one pass instead of one pass per character.

State: the forward stack's state only (it carries the left context across calls, as in truncated
BPTT); the backward stack starts fresh at the right edge of every call. ``lengths`` (B,) marks
where each row of a padded batch ends, so trailing padding never enters the right context.
``logits_in_pieces`` gives the logits of one forward over a long text in pieces of bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import Tensor, nn

from models.base import CharLM, State
from models.config import ModelConfig
from models.registry import register


def reverse_within(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse the first ``lengths[b]`` steps of each row of ``x`` (B, T, ...); padding stays."""
    steps = x.shape[1]
    if lengths is None:
        return x.flip(1)
    position = torch.arange(steps, device=x.device).unsqueeze(0)  # (1, T)
    lengths = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    index = torch.where(position < lengths, lengths - 1 - position, position)  # (B, T)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class BidirectionalLM(CharLM):
    """The forward and backward stacks, merged at the top (see the module docstring)."""

    rnn_class: ClassVar[type[nn.LSTM] | type[nn.GRU]]
    state_tensors: ClassVar[int] = 1
    can_generate = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        self.drop = nn.Dropout(config.dropout)
        layer_dropout = config.dropout if config.num_layers > 1 else 0.0
        kwargs = {"num_layers": config.num_layers, "dropout": layer_dropout, "batch_first": True}
        self.forward_rnn = self.rnn_class(config.embed_size, config.hidden_size, **kwargs)
        self.backward_rnn = self.rnn_class(config.embed_size, config.hidden_size, **kwargs)
        self.merge = nn.Linear(2 * config.hidden_size, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        nn.init.normal_(self.embedding.weight, std=0.1)
        nn.init.zeros_(self.head.bias)

    def _run(self, rnn: nn.RNNBase, x: Tensor, state: State) -> tuple[Tensor, State]:
        hidden = tuple(s.transpose(0, 1).contiguous() for s in state)  # (L, B, H) for PyTorch
        out, new = rnn(x, hidden if self.state_tensors == 2 else hidden[0])
        parts = new if isinstance(new, tuple) else (new,)
        return out, tuple(s.transpose(0, 1) for s in parts)

    def forward(
        self, ids: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """``ids`` (B, T) -> logits (B, T, V), row ``t`` predicting ``ids[:, t + 1]``."""
        batch, steps = ids.shape
        if state is None:
            state = self.initial_state(batch, ids.device)
        x = self.drop(self.embedding(ids))  # (B, T, E)
        forward_out, new_state = self._run(self.forward_rnn, x, state)  # (B, T, H): reads <= t
        fresh = self.initial_state(batch, ids.device)
        backward_rev, _ = self._run(self.backward_rnn, reverse_within(x, lengths), fresh)
        backward_out = reverse_within(backward_rev, lengths)  # (B, T, H): reads >= t
        # position t needs the backward state that has read t + 2 ... end; beyond the end: zeros
        right = torch.zeros_like(backward_out)
        right[:, : max(0, steps - 2)] = backward_out[:, 2:]
        if lengths is not None:
            position = torch.arange(steps, device=ids.device).unsqueeze(0)
            beyond = (position + 2 >= lengths.to(ids.device).unsqueeze(1)).unsqueeze(-1)
            right = right.masked_fill(beyond, 0.0)
        both = torch.cat([forward_out, right], dim=-1)  # (B, T, 2H)
        merged = torch.tanh(self.merge(self.drop(both)))
        return self.head(self.drop(merged)), new_state

    def logits_in_pieces(self, ids: Tensor, steps: int) -> Iterator[tuple[int, Tensor]]:
        """``forward(ids)``'s logits ``steps`` rows at a time: ``(first row, logits (B, t, V))``.

        The same figures as one forward over ``ids`` (B, T) without padding, in memory bounded by
        ``steps`` instead of ``T``: a first pass reads the text right to left and keeps the
        backward stack's state at the right edge of each piece; the second reads left to right,
        carrying the forward stack's state and running each piece's backward stack from its kept
        state. The backward stack runs twice. Meant for eval mode (dropout draws differ).
        """
        batch, total = ids.shape
        starts = list(range(0, total, steps))

        # row t reads the backward output at position t + 2: piece [s, e) needs positions
        # [s + 2, e + 2), read from the state that has seen everything from e + 2 on
        def right_span(start: int) -> tuple[int, int]:
            return min(start + 2, total), min(start + steps + 2, total)

        edges: list[State] = []
        state = self.initial_state(batch, ids.device)
        for start in reversed(starts):
            edges.append(state)
            low, high = right_span(start)
            if high > low:
                reversed_x = self.drop(self.embedding(ids[:, low:high])).flip(1)
                _, state = self._run(self.backward_rnn, reversed_x, state)
        edges.reverse()
        forward_state = self.initial_state(batch, ids.device)
        for start, edge in zip(starts, edges, strict=True):
            x = self.drop(self.embedding(ids[:, start : start + steps]))  # (B, t, E)
            forward_out, forward_state = self._run(self.forward_rnn, x, forward_state)
            right = torch.zeros_like(forward_out)  # beyond the end: zeros
            low, high = right_span(start)
            if high > low:
                reversed_x = self.drop(self.embedding(ids[:, low:high])).flip(1)
                backward_rev, _ = self._run(self.backward_rnn, reversed_x, edge)
                right[:, : high - low] = backward_rev.flip(1)
            merged = torch.tanh(self.merge(self.drop(torch.cat([forward_out, right], dim=-1))))
            yield start, self.head(self.drop(merged))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return self.zero_layer_state(batch_size, device, self.state_tensors)


@register
class BiLSTMLM(BidirectionalLM):
    """Bidirectional LSTM (Schuster & Paliwal 1997; Hochreiter & Schmidhuber 1997)."""

    arch = "bilstm"
    rnn_class = nn.LSTM
    state_tensors = 2


@register
class BiGRULM(BidirectionalLM):
    """Bidirectional GRU (Schuster & Paliwal 1997; Cho et al. 2014)."""

    arch = "bigru"
    rnn_class = nn.GRU
