"""The Echo State Network (Jaeger 2001; Jaeger & Haas 2004, "Harnessing nonlinearity").

A fixed random reservoir of ``N = hidden_size`` leaky tanh units is driven by the characters:

    x_t = (1 - a) x_{t-1} + a tanh(W_in u_t + W x_{t-1} + b)

with ``u_t`` the one-hot character, ``a`` the leak rate, ``W_in`` uniform in +-input_scaling and
``W`` a sparse random matrix (``density`` of its entries non-zero) scaled so that its spectral
radius is exactly ``spectral_radius`` (below 1 for the echo-state property: the state forgets its
start). Nothing in the reservoir is trained. The readout sees the reservoir and the current
character, ``y_t = W_out [x_t; u_t] + c``, and is fitted in closed form by ridge regression onto
the one-hot next character (``training.esn``). Regression scores are not log-probabilities: an
inverse temperature ``logit_scale`` and a per-character offset ``logit_bias``, fitted on validation
data, turn them into calibrated probabilities, ``softmax(logit_scale * y_t + logit_bias)``.

The reservoir is kept as buffers (stored dense in the checkpoint, zeros included: safetensors has
no sparse tensors, and a dense (N, N) matmul is the fast path on CPU for the sizes used here).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from models.base import CharLM, State
from models.config import ModelConfig
from models.registry import register

logger = logging.getLogger(__name__)


def spectral_radius(matrix: Tensor) -> float:
    """The largest eigenvalue modulus of a square matrix (exact, from the dense eigenvalues)."""
    return float(torch.linalg.eigvals(matrix.double()).abs().max())


def make_reservoir(
    size: int, density: float, radius: float, generator: torch.Generator
) -> torch.Tensor:
    """A (size, size) sparse random matrix with spectral radius exactly ``radius``."""
    for _ in range(10):
        mask = torch.rand(size, size, generator=generator) < density
        values = torch.rand(size, size, generator=generator) * 2 - 1
        matrix = (values * mask).double()
        current = spectral_radius(matrix)
        if current > 1e-8:
            return (matrix * (radius / current)).float()
    raise ValueError(
        f"a {size}-unit reservoir with density {density} has no non-zero eigenvalue;"
        " raise density or hidden_size"
    )


@register
class EchoStateLM(CharLM):
    """Leaky echo-state reservoir with a linear readout fitted by ridge regression.

    Options: ``spectral_radius`` (0.9), ``density`` (0.1), ``input_scaling`` (1.0),
    ``bias_scaling`` (0.2), ``leak_rate`` (0.5), ``seed`` (reservoir draw), ``ridge`` (1e-4, the
    regularisation of the closed-form fit). ``embed_size`` and ``num_layers`` are not used.
    State: ``(x (B, N),)``.
    """

    arch = "esn"
    reservoir: Tensor  # (N, N) buffers: fixed, stored in the checkpoint
    input_weights: Tensor  # (N, V)
    reservoir_bias: Tensor  # (N,)
    logit_scale: Tensor  # (1,): the softmax temperature's inverse, fitted on validation
    logit_bias: Tensor  # (V,): per-character offsets, fitted with the temperature
    default_options: ClassVar[dict[str, Any]] = {
        "spectral_radius": 0.9,
        "density": 0.1,
        "input_scaling": 1.0,
        "bias_scaling": 0.2,
        "leak_rate": 0.5,
        "seed": 0,
        "ridge": 1e-4,
    }

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        size, vocab = config.hidden_size, config.vocab_size
        radius = float(self.option("spectral_radius"))
        density = float(self.option("density"))
        self.leak_rate = float(self.option("leak_rate"))
        if not radius > 0.0:
            raise ValueError(f"spectral_radius must be positive, got {radius}")
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        if not 0.0 < self.leak_rate <= 1.0:
            raise ValueError(f"leak_rate must be in (0, 1], got {self.leak_rate}")
        if float(self.option("ridge")) < 0:
            raise ValueError("ridge must be >= 0")
        if radius >= 1.0:
            logger.warning(
                "spectral radius %.3g >= 1: the echo-state property may not hold", radius
            )
        generator = torch.Generator().manual_seed(int(self.option("seed")))
        scale_in = float(self.option("input_scaling"))
        scale_bias = float(self.option("bias_scaling"))
        self.register_buffer("reservoir", make_reservoir(size, density, radius, generator))
        self.register_buffer(
            "input_weights", (torch.rand(size, vocab, generator=generator) * 2 - 1) * scale_in
        )
        self.register_buffer(
            "reservoir_bias", (torch.rand(size, generator=generator) * 2 - 1) * scale_bias
        )
        self.register_buffer("logit_scale", torch.ones(1))
        self.register_buffer("logit_bias", torch.zeros(vocab))
        # the readout of [x_t; u_t]; near zero until fitted: an unfitted model is almost uniform
        self.readout = nn.Linear(size + vocab, vocab)
        nn.init.normal_(self.readout.weight, std=0.01, generator=generator)
        nn.init.zeros_(self.readout.bias)

    @property
    def num_features(self) -> int:
        return self.config.hidden_size + self.config.vocab_size

    def run_reservoir(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Reservoir states after each character (B, T, N) and the state after the last."""
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        x = state[0]
        drive = self.input_weights.T[ids] + self.reservoir_bias  # (B, T, N): W_in u_t + b
        weight = self.reservoir.T
        keep, leak = 1.0 - self.leak_rate, self.leak_rate
        states = []
        for t in range(ids.shape[1]):
            x = keep * x + leak * torch.tanh(drive[:, t] + x @ weight)
            states.append(x)
        return torch.stack(states, dim=1), (x,)

    def features(self, states: Tensor, ids: Tensor) -> Tensor:
        """The readout's inputs [x_t; u_t] (B, T, N + V)."""
        onehot = nn.functional.one_hot(ids, self.config.vocab_size).to(states.dtype)
        return torch.cat([states, onehot], dim=-1)

    def scores(self, states: Tensor, ids: Tensor) -> Tensor:
        """Unscaled readout outputs (B, T, V); the one-hot part is a column lookup, not a matmul."""
        size = self.config.hidden_size
        weight = self.readout.weight  # (V, N + V)
        return states @ weight[:, :size].T + weight[:, size:].T[ids] + self.readout.bias

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        states, new_state = self.run_reservoir(ids, state)
        return self.scores(states, ids) * self.logit_scale + self.logit_bias, new_state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.reservoir.device
        size = self.config.hidden_size
        return (torch.zeros(batch_size, size, device=device, dtype=self.reservoir.dtype),)
