"""The Clockwork RNN (Koutník, Greff, Gomez & Schmidhuber 2014, "A Clockwork RNN").

The hidden layer is split into ``g`` modules with periods ``T_1 < ... < T_g`` (default 1, 2, 4, 8).
At step ``t`` module ``i`` is *active* when ``t mod T_i == 0``: it computes
``h_i = tanh(W_in,i x_t + sum_{j >= i} U_ij h_j + b_i)``; inactive modules keep their state. The
recurrent matrix is block upper-triangular: a module reads itself and the *slower* modules only,
never faster ones, so slow modules integrate long-range information undisturbed.

Modules are kept in order of increasing period. When every period divides the next (the default
powers of two), the modules active at a step are exactly a prefix, so a step computes the first
``k`` modules' rows of the recurrent matrix and nothing else. A batch can hold rows at different
clock phases (the server batches requests that started at different times), so each row carries its
own step counter in the state; a step computes the longest prefix that any row needs and keeps the
modules a row does not update unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from models.base import CharLM, State
from models.config import ModelConfig
from models.registry import register


def split_sizes(total: int, parts: int) -> list[int]:
    """``total`` units in ``parts`` near-equal modules, the larger ones first."""
    if parts < 1 or total < parts:
        raise ValueError(f"cannot split {total} hidden units into {parts} clock modules")
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def check_periods(periods: Sequence[int]) -> list[int]:
    values = list(periods)
    if not values or any(not isinstance(p, int) or isinstance(p, bool) or p < 1 for p in values):
        raise ValueError(f"clock periods must be positive integers, got {values!r}")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"clock periods must be strictly increasing, got {values!r}")
    return values


class ClockworkCell(nn.Module):
    """One Clockwork layer: ``x`` (B, T, I) or no input -> hidden states (B, T, H).

    ``module_sizes[i]`` units tick with period ``periods[i]``. Weights are stored per module: the
    input weights ``W_in,i`` (size_i, I) and the recurrent block row ``U_i`` (size_i, H - offset_i)
    that reads module ``i`` and every slower one, so the parameter count is that of the paper.
    """

    _periods: Tensor
    _unit_module: Tensor

    def __init__(self, input_size: int, module_sizes: Sequence[int], periods: Sequence[int]):
        super().__init__()
        self.periods = check_periods(periods)
        self.module_sizes = list(module_sizes)
        if len(self.module_sizes) != len(self.periods) or min(self.module_sizes) < 1:
            raise ValueError("need one positive module size per clock period")
        self.input_size = input_size
        self.hidden_size = sum(self.module_sizes)
        offsets = [0]
        for size in self.module_sizes:
            offsets.append(offsets[-1] + size)
        self.offsets = offsets
        hidden = self.hidden_size
        self.input_weights = nn.Parameter(torch.empty(hidden, input_size)) if input_size else None
        self.recurrent_blocks = nn.ParameterList(
            nn.Parameter(torch.empty(size, hidden - offsets[i]))
            for i, size in enumerate(self.module_sizes)
        )
        self.bias = nn.Parameter(torch.zeros(hidden))
        self._matrix_cache: tuple[tuple[tuple[int, int], ...], Tensor] | None = None
        # (g,) periods and (H,) module index of each unit, for the per-row activity masks
        self.register_buffer(
            "_periods", torch.tensor(self.periods, dtype=torch.long), persistent=False
        )
        unit_module = torch.repeat_interleave(
            torch.arange(len(self.module_sizes)), torch.tensor(self.module_sizes)
        )
        self.register_buffer("_unit_module", unit_module, persistent=False)
        self.reset_parameters()

    def reset_parameters(self, std: float | None = None) -> None:
        """Uniform(+-1/sqrt(H)) like PyTorch's RNNs, or N(0, std) when ``std`` is given."""
        bound = self.hidden_size**-0.5
        for param in self.parameters():
            if param is self.bias:
                continue
            if std is None:
                nn.init.uniform_(param, -bound, bound)
            else:
                nn.init.normal_(param, 0.0, std)
        nn.init.zeros_(self.bias)

    def recurrent_matrix(self) -> Tensor:
        """The (H, H) block upper-triangular recurrent matrix (zeros where faster modules are).

        Without autograd (inference) it is built once and reused until a block changes (its
        storage or version counter moves); with autograd it is rebuilt so gradients reach the
        blocks."""
        if torch.is_grad_enabled():
            return self._build_matrix()
        key = tuple((p.data_ptr(), p._version) for p in self.recurrent_blocks)
        if self._matrix_cache is None or self._matrix_cache[0] != key:
            self._matrix_cache = (key, self._build_matrix())
        return self._matrix_cache[1]

    def _build_matrix(self) -> Tensor:
        hidden = self.hidden_size
        rows = [
            nn.functional.pad(block, (self.offsets[i], 0))
            for i, block in enumerate(self.recurrent_blocks)
        ]
        matrix = torch.cat(rows, dim=0)
        assert matrix.shape == (hidden, hidden)
        return matrix

    def forward(
        self, x: Tensor | None, h: Tensor, step: Tensor, length: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run ``length`` steps (or ``x.shape[1]``) from hidden ``h`` (B, H) at clock ``step`` (B,).

        Returns the hidden state after each step (B, T, H), the last hidden state and the advanced
        step counters.
        """
        steps = x.shape[1] if x is not None else length
        if steps is None:
            raise ValueError("give the input or the number of steps")
        if steps == 0:
            return h.new_zeros(h.shape[0], 0, self.hidden_size), h, step
        matrix = self.recurrent_matrix()  # (H, H), built once per call
        drive: list[Tensor] | None = None
        if x is not None and self.input_weights is not None:
            # (B, T, H): every module's input term and bias at once, split per step once (slicing
            # a (B, T, H) tensor at every step would cost a full-size gradient buffer per step)
            drive = list(nn.functional.linear(x, self.input_weights, self.bias).unbind(1))
        counts, exact, active = self._schedule(step, steps)
        rows_of: dict[int, Tensor] = {}  # cut -> matrix[:cut].T, sliced once per call
        outputs = []
        for t in range(steps):
            count = counts[t]
            if count == 0:  # no module ticks (possible when the fastest period > 1)
                outputs.append(h)
                continue
            cut = self.offsets[count]
            if cut not in rows_of:
                rows_of[cut] = matrix[:cut].T
            if drive is not None:
                base = drive[t] if cut == self.hidden_size else drive[t][:, :cut]
            else:
                base = self.bias[:cut].expand(h.shape[0], cut)
            updated = torch.tanh(torch.addmm(base, h, rows_of[cut]))  # (B, cut): rows computed
            if not exact[t]:  # rows at other phases, or a period that does not divide the next
                unit_active = active[:, t, self._unit_module[:cut]]  # (B or 1, cut)
                updated = torch.where(unit_active, updated, h[:, :cut])
            h = torch.cat([updated, h[:, cut:]], dim=1) if cut < self.hidden_size else updated
            outputs.append(h)
        return torch.stack(outputs, dim=1), h, step + steps

    def _schedule(self, step: Tensor, steps: int) -> tuple[list[int], list[bool], Tensor]:
        """The clock schedule of a whole call: per step, how many leading modules to compute, and
        whether exactly those are active in every row (no mask needed); and the (B or 1, T, g)
        activity of each module."""
        if step.numel() and bool((step == step[0]).all()):
            # one clock for the batch (training, one stream): plain integers, no tensor work
            start = int(step[0])
            ticks = [[(start + t) % p == 0 for p in self.periods] for t in range(steps)]
            counts, exact = [], []
            for row in ticks:
                count = max((i + 1 for i, tick in enumerate(row) if tick), default=0)
                counts.append(count)
                exact.append(all(row[:count]))
            active = torch.tensor(ticks, dtype=torch.bool, device=step.device).unsqueeze(0)
            return counts, exact, active
        clock = step.unsqueeze(1) + torch.arange(steps, device=step.device)  # (B, T)
        active = (clock.unsqueeze(-1) % self._periods) == 0  # (B, T, g)
        any_active = active.any(dim=0)  # (T, g)
        # modules up to the last one any row needs: the prefix computed at each step
        last = torch.where(any_active, torch.arange(len(self.periods), device=step.device), -1)
        counts = (last.max(dim=1).values + 1).tolist()
        uniform = (active == active[:1]).all(dim=0).all(dim=-1)  # (T,): rows agree
        prefix = any_active.cumprod(dim=1).sum(dim=1) == any_active.sum(dim=1)
        return counts, (uniform & prefix).tolist(), active

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, modules={self.module_sizes}, periods={self.periods}"


@register
class ClockworkLM(CharLM):
    """Embedding -> ``num_layers`` stacked Clockwork layers -> linear readout of all modules.

    Options: ``periods`` (list of strictly increasing ints; the hidden units are split into that
    many near-equal modules). State: ``(h (B, L, H), step (B,) long)``.
    """

    arch = "clockwork"
    default_options: ClassVar[dict[str, Any]] = {"periods": [1, 2, 4, 8]}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        periods = check_periods(self.option("periods"))
        sizes = split_sizes(config.hidden_size, len(periods))
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            ClockworkCell(config.embed_size if i == 0 else config.hidden_size, sizes, periods)
            for i in range(config.num_layers)
        )
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        nn.init.normal_(self.embedding.weight, std=0.1)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        hidden, step = state
        x = self.drop(self.embedding(ids))  # (B, T, E)
        last = []
        end_step = step
        for i, layer in enumerate(self.layers):
            x, h, end_step = layer(x, hidden[:, i], step)  # every layer shares the row's clock
            last.append(h)
            x = self.drop(x)
        logits = self.head(x)  # (B, T, V)
        return logits, (torch.stack(last, dim=1), end_step)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.device
        cfg = self.config
        dtype = self.head.weight.dtype
        hidden = torch.zeros(
            batch_size, cfg.num_layers, cfg.hidden_size, device=device, dtype=dtype
        )
        return hidden, torch.zeros(batch_size, dtype=torch.long, device=device)
