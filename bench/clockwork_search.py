"""Training with an optimiser setting per replica, and the learning-rate search around it.

Every replica of a network (``bench.clockwork_networks``) is an independent network with its own
loss, so one batched run can train each replica with its own optimiser and rate: the search trains
every (setting, search seed) pair at once, and picks for each network the setting whose final
error, averaged over the search seeds, is lowest. The seeds that are reported are other seeds, so
the choice is not fitted to the figure it produces.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench.clockwork_networks import build_network

OPTIMIZERS = ("sgd", "adam")
CLIP = 1.0  # elementwise gradient clip, per replica (a norm clip would mix replicas)


@dataclass(frozen=True)
class Setting:
    """One optimiser and its rate: ``"sgd"`` (Nesterov momentum) or ``"adam"``."""

    optimizer: str
    lr: float

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be positive, got {self.lr!r}")

    @property
    def label(self) -> str:
        name = "SGD+Nesterov" if self.optimizer == "sgd" else "Adam"
        return f"{name} {self.lr:g}"


#: half-decade log grids, each from rates too small to move in a few thousand steps to rates
#: that diverge or oscillate (SGD at 0.3, Adam at 0.1, on this task)
DEFAULT_LRS = {
    "sgd": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    "adam": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
}


def grid(optimizers: Sequence[str], lrs: Sequence[float] | None = None) -> list[Setting]:
    """Every optimiser with every rate of ``lrs``, or of its own ``DEFAULT_LRS``."""
    settings = []
    for optimizer in optimizers:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        rates = DEFAULT_LRS[optimizer] if lrs is None else lrs
        settings += [Setting(optimizer, lr) for lr in rates]
    return settings


class ReplicaOptimizer:
    """SGD with Nesterov momentum or Adam, with its rate, chosen per replica: each update is
    the one ``torch.optim.SGD(nesterov=True)`` or ``torch.optim.Adam`` would make for that
    replica alone (a test checks it). Parameters are (R, ...) with the replica dimension first."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        settings: Sequence[Setting],
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr = torch.tensor([s.lr for s in settings])  # (R,)
        self.adam = torch.tensor([s.optimizer == "adam" for s in settings])  # (R,)
        for p in self.params:
            if p.shape[0] != len(settings):
                raise ValueError(f"{len(settings)} settings for {p.shape[0]} replicas")
        self.momentum, self.betas, self.eps = momentum, betas, eps
        self.steps = 0
        # per parameter: the momentum buffer, Adam's first and second moments
        self.state = [
            (torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)) for p in self.params
        ]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        first_correction = 1 - beta1**self.steps
        second_correction = 1 - beta2**self.steps
        for p, (buffer, first, second) in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            buffer.mul_(self.momentum).add_(g)
            sgd = g + self.momentum * buffer
            first.mul_(beta1).add_(g, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denominator = second.sqrt() / math.sqrt(second_correction) + self.eps
            adam = first / first_correction / denominator
            shape = (-1,) + (1,) * (p.dim() - 1)
            p.sub_(self.lr.view(shape) * torch.where(self.adam.view(shape), adam, sgd))


@dataclass
class Trained:
    nmse: Tensor  # (R,) final MSE over the target's variance; NaN where a replica diverged
    prediction: Tensor  # (R, T)
    curve: Tensor  # (points, R) NMSE every 10% of the run
    seconds: float


def train(
    model: nn.Module,
    target: Tensor,
    iterations: int,
    settings: Sequence[Setting],
    momentum: float = 0.9,
) -> Trained:
    """Full-batch training on the mean squared error, replica ``r`` with ``settings[r]``."""
    started = time.perf_counter()
    optimizer = ReplicaOptimizer(model.parameters(), settings, momentum)
    variance = float(target.var(unbiased=False))
    curve = []
    for iteration in range(iterations):
        prediction = model(len(target))
        mse = ((prediction - target) ** 2).mean(dim=1)  # (R,)
        optimizer.zero_grad()
        mse.sum().backward()  # replicas are independent: their losses add
        for p in optimizer.params:
            p.grad.clamp_(-CLIP, CLIP)  # type: ignore[union-attr]
        optimizer.step()
        if (iteration + 1) % max(1, iterations // 10) == 0:
            curve.append(mse.detach() / variance)
    with torch.no_grad():
        prediction = model(len(target))
        nmse = ((prediction - target) ** 2).mean(dim=1) / variance
    points = torch.stack(curve) if curve else torch.empty(0, len(settings))
    return Trained(nmse, prediction.detach(), points, time.perf_counter() - started)


def choose(nmse: Tensor) -> int:
    """Index of the setting with the lowest mean NMSE over its seeds; ``nmse`` is (S, seeds) and
    a diverged seed (not finite) counts as infinitely bad."""
    finite = torch.where(torch.isfinite(nmse), nmse, torch.full_like(nmse, math.inf))
    return int(finite.mean(dim=1).argmin())


@dataclass
class Search:
    settings: list[Setting]
    seeds: list[int]
    nmse: Tensor  # (S, seeds)
    chosen: int
    seconds: float

    @property
    def best(self) -> Setting:
        return self.settings[self.chosen]

    def at_edge(self) -> bool:
        """Whether the chosen rate is the lowest or highest tried for its optimiser."""
        rates = [s.lr for s in self.settings if s.optimizer == self.best.optimizer]
        return len(rates) > 1 and self.best.lr in (min(rates), max(rates))

    def to_json(self) -> dict[str, object]:
        return {
            "seeds": self.seeds,
            "seconds": self.seconds,
            "chosen": {"optimizer": self.best.optimizer, "lr": self.best.lr},
            "settings": [
                {
                    "optimizer": s.optimizer,
                    "lr": s.lr,
                    "nmse": [float(v) for v in row],
                    "nmse_mean": float(row.mean()),
                }
                for s, row in zip(self.settings, self.nmse, strict=True)
            ],
        }


def search(
    network: str,
    init: str,
    target: Tensor,
    iterations: int,
    settings: Sequence[Setting],
    seeds: Sequence[int],
    momentum: float = 0.9,
) -> Search:
    """Train ``network`` once per (setting, seed), all as replicas of one run, and choose."""
    replica_seeds = [seed for _ in settings for seed in seeds]
    replica_settings = [setting for setting in settings for _ in seeds]
    model = build_network(network, replica_seeds, init)
    trained = train(model, target, iterations, replica_settings, momentum)
    nmse = trained.nmse.view(len(settings), len(seeds))
    return Search(list(settings), list(seeds), nmse, choose(nmse), trained.seconds)
