"""The target and the three networks of the Clockwork RNN's sequence-generation experiment.

A network with no input emits a 320-step waveform from a zero initial state (Koutník et al. 2014,
section 4.1). Every network here holds ``replicas`` independent copies: each weight has a leading
replica dimension, replica ``r`` drawn from its own seed, so many seeds (and, in the search, many
optimiser settings) train at once as batched matrix products.

Two initialisations: ``"normal"``, the paper's N(0, 0.1) for every weight, and ``"pytorch"``, the
draw a user of ``nn.RNN``/``nn.LSTM`` with an ``nn.Linear(H, 1)`` readout gets: U(-1/sqrt(H),
1/sqrt(H)) for every weight, and the recurrent bias as the sum of two such draws (``b_ih + b_hh``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.clockwork import check_periods

STEPS = 320
INIT_STD = 0.1
INITS = ("normal", "pytorch")


def make_waveform(steps: int = STEPS) -> Tensor:
    """(steps,) target in [-1, 1]: a slow swell, an amplitude-modulated middle tone, fast ripples
    that only appear in the second half, and a step change at 5/8 of the way."""
    t = torch.arange(steps, dtype=torch.float64) / steps
    slow = 0.4 * torch.sin(2 * math.pi * 1.5 * t)
    middle = (
        0.3 * torch.sin(2 * math.pi * 9 * t + 0.5) * (0.6 + 0.4 * torch.cos(2 * math.pi * 2 * t))
    )
    fast = 0.15 * torch.sin(2 * math.pi * 32 * t) * (t >= 0.5)
    step = 0.15 * torch.where(t >= 0.625, 1.0, -1.0)
    wave = slow + middle + fast + step
    return (wave / wave.abs().max()).float()


class _Replicated(nn.Module):
    """Base: ``replicas`` independent networks; ``forward()`` -> outputs (R, STEPS)."""

    name: str
    hidden: int
    out_weight: nn.Parameter  # (R, H)
    out_bias: nn.Parameter  # (R, 1)

    def __init__(self, seeds: Sequence[int], init: str) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.seeds = list(seeds)
        self.replicas = len(self.seeds)
        self.init = init
        self._draws = 0  # each weight tensor gets its own stream of every seed

    def param(self, *shape: int, recurrent_bias: bool = False) -> nn.Parameter:
        """(R, *shape) weights, replica ``r`` drawn from seed ``seeds[r]`` alone (so a result does
        not depend on what runs beside it)."""
        salt, self._draws = self._draws, self._draws + 1
        bound = 1 / math.sqrt(self.hidden)
        draws = []
        for seed in self.seeds:
            generator = torch.Generator().manual_seed(seed * 1000 + salt)
            if self.init == "normal":
                draws.append(torch.randn(*shape, generator=generator) * INIT_STD)
                continue
            draw = (2 * torch.rand(*shape, generator=generator) - 1) * bound
            if recurrent_bias:  # nn.RNN and nn.LSTM add two biases, each drawn so
                draw = draw + (2 * torch.rand(*shape, generator=generator) - 1) * bound
            draws.append(draw)
        return nn.Parameter(torch.stack(draws))

    def parameters_per_network(self) -> int:
        return sum(p[0].numel() for p in self.parameters())

    def readout(self, states: Tensor) -> Tensor:
        """(R, T, H) states -> (R, T) outputs y_t = w . h_t + c."""
        return (states * self.out_weight.unsqueeze(1)).sum(-1) + self.out_bias


class SimpleRNN(_Replicated):
    """h_t = tanh(W h_{t-1} + b), y_t = w . h_t + c (Elman 1990, without input)."""

    name = "Simple RNN"

    def __init__(self, hidden: int, seeds: Sequence[int], init: str = "normal") -> None:
        super().__init__(seeds, init)
        self.hidden = hidden
        self.weight = self.param(hidden, hidden)
        self.bias = self.param(hidden, recurrent_bias=True)
        self.out_weight = self.param(hidden)
        self.out_bias = self.param(1)

    def forward(self, steps: int = STEPS) -> Tensor:
        h = torch.zeros(self.replicas, self.hidden, 1)
        outputs = []
        for _ in range(steps):
            h = torch.tanh(torch.bmm(self.weight, h) + self.bias.unsqueeze(-1))  # (R, H, 1)
            outputs.append(h.squeeze(-1))
        return self.readout(torch.stack(outputs, dim=1))


class LSTM(_Replicated):
    """LSTM (Hochreiter & Schmidhuber 1997; forget gates, Gers et al. 2000) without input."""

    name = "LSTM"

    def __init__(self, hidden: int, seeds: Sequence[int], init: str = "normal") -> None:
        super().__init__(seeds, init)
        self.hidden = hidden
        self.weight = self.param(4 * hidden, hidden)
        self.bias = self.param(4 * hidden, recurrent_bias=True)
        self.out_weight = self.param(hidden)
        self.out_bias = self.param(1)

    def forward(self, steps: int = STEPS) -> Tensor:
        # PyTorch's fused LSTM, one replica at a time (10x faster than a Python loop of steps):
        # a zero input and zero input weights stand for "no input", and one bias for two
        hidden = self.hidden
        no_input = torch.zeros(1, steps, 1)
        input_weight = torch.zeros(4 * hidden, 1)
        no_bias = torch.zeros(4 * hidden)
        start = (torch.zeros(1, 1, hidden), torch.zeros(1, 1, hidden))
        outputs = []
        for r in range(self.replicas):
            weights = [input_weight, self.weight[r], self.bias[r], no_bias]  # gates i, f, g, o
            out, _, _ = torch.lstm(
                no_input, start, weights, True, 1, 0.0, self.training, False, True
            )
            outputs.append(out[0])  # (T, H)
        return self.readout(torch.stack(outputs))

    def reference_forward(self, steps: int = STEPS) -> Tensor:
        """The same network step by step (for tests): gates = W h + b; i, f, g, o."""
        h = torch.zeros(self.replicas, self.hidden, 1)
        c = torch.zeros(self.replicas, self.hidden, 1)
        outputs = []
        for _ in range(steps):
            gates = torch.bmm(self.weight, h) + self.bias.unsqueeze(-1)  # (R, 4H, 1)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h.squeeze(-1))
        return self.readout(torch.stack(outputs, dim=1))


class ClockworkRNN(_Replicated):
    """Clockwork RNN without input: module i (``module_size`` units, period ``periods[i]``) updates
    when t mod T_i == 0 and reads itself and the slower modules only (Koutník et al. 2014). Only
    the active modules' rows are computed at each step, as ``models.clockwork.ClockworkCell``
    does (a test checks that the two agree)."""

    name = "Clockwork RNN"

    def __init__(
        self, module_size: int, periods: Sequence[int], seeds: Sequence[int], init: str = "normal"
    ) -> None:
        super().__init__(seeds, init)
        self.periods = check_periods(periods)
        for fast, slow in zip(self.periods, self.periods[1:], strict=False):
            if slow % fast:
                raise ValueError("this experiment needs each period to divide the next")
        self.module_size = module_size
        self.hidden = module_size * len(self.periods)
        blocks = [
            self.param(module_size, self.hidden - i * module_size) for i in range(len(periods))
        ]
        self.blocks = nn.ParameterList(blocks)
        self.bias = self.param(self.hidden, recurrent_bias=True)
        self.out_weight = self.param(self.hidden)
        self.out_bias = self.param(1)

    def recurrent_matrix(self) -> Tensor:
        """(R, H, H) block upper-triangular matrix from the blocks."""
        rows = [
            nn.functional.pad(block, (i * self.module_size, 0))
            for i, block in enumerate(self.blocks)
        ]
        return torch.cat(rows, dim=1)

    def forward(self, steps: int = STEPS) -> Tensor:
        matrix = self.recurrent_matrix()
        h = torch.zeros(self.replicas, self.hidden, 1)
        bias = self.bias.unsqueeze(-1)
        outputs = []
        for t in range(steps):
            active = sum(1 for p in self.periods if t % p == 0)  # a prefix: periods divide
            cut = active * self.module_size
            updated = torch.tanh(torch.bmm(matrix[:, :cut], h) + bias[:, :cut])
            h = torch.cat([updated, h[:, cut:]], dim=1)
            outputs.append(h.squeeze(-1))
        return self.readout(torch.stack(outputs, dim=1))


#: the networks by command-line name, each at about 750 weights (729, 742 and 771)
NETWORKS = ("srn", "lstm", "clockwork")


def build_network(name: str, seeds: Sequence[int], init: str = "normal") -> _Replicated:
    """One of ``NETWORKS`` with a replica per seed."""
    if name == "srn":
        return SimpleRNN(26, seeds, init)
    if name == "lstm":
        return LSTM(13, seeds, init)
    if name == "clockwork":
        return ClockworkRNN(5, [1, 2, 4, 8, 16, 32, 64], seeds, init)
    raise ValueError(f"network must be one of {NETWORKS}, got {name!r}")


def build_models(seeds: Sequence[int], init: str = "normal") -> list[_Replicated]:
    """The three networks, in the order of ``NETWORKS``."""
    return [build_network(name, seeds, init) for name in NETWORKS]
