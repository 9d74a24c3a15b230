"""The Clockwork RNN's sequence-generation experiment (Koutník et al. 2014, section 4.1).

A network with no input learns to emit a 320-step waveform from a zero initial state: a simple
RNN (Elman 1990), an LSTM (Hochreiter & Schmidhuber 1997) and a Clockwork RNN, each with about
750 weights drawn from N(0, 0.1), trained by full-batch SGD with Nesterov momentum on the mean
squared error. The paper used a music clip; the waveform here is generated (``make_waveform``) with
structure at several time scales. The result is the normalised mean squared error (MSE divided by
the target's variance) over several seeds, a table and a PNG of targets and predictions.

All seeds of a model train at once: every weight has a leading replica dimension and the steps are
batched matrix products, so five seeds cost little more than one. The Clockwork network computes
only the active modules' rows at each step, exactly as ``models.clockwork.ClockworkCell`` does
(a test checks that the two agree).

    python -m bench.clockwork_paper --seeds 5 --iterations 2000 --out docs
    python -m bench.clockwork_paper --smoke     # seconds: 2 seeds, 3 iterations, a temporary folder
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.clockwork import check_periods

logger = logging.getLogger(__name__)

STEPS = 320
INIT_STD = 0.1


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


def _normal(replicas: int, shape: Sequence[int], seeds: Sequence[int], salt: int) -> nn.Parameter:
    """Weights N(0, INIT_STD), replica ``r`` drawn from its own seed (so results do not depend on
    how many seeds run beside it)."""
    draws = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed * 1000 + salt)
        draws.append(torch.randn(*shape, generator=generator) * INIT_STD)
    assert len(draws) == replicas
    return nn.Parameter(torch.stack(draws))


class _Replicated(nn.Module):
    """Base: ``replicas`` independent networks; ``forward()`` -> outputs (R, STEPS)."""

    hidden: int

    def __init__(self, seeds: Sequence[int]) -> None:
        super().__init__()
        self.seeds = list(seeds)
        self.replicas = len(self.seeds)

    def param(self, *shape: int) -> nn.Parameter:
        salt = len(list(self.parameters()))
        return _normal(self.replicas, shape, self.seeds, salt)

    def parameters_per_network(self) -> int:
        return sum(p[0].numel() for p in self.parameters())


class SimpleRNN(_Replicated):
    """h_t = tanh(W h_{t-1} + b), y_t = w . h_t + c (Elman 1990, without input)."""

    name = "Simple RNN"

    def __init__(self, hidden: int, seeds: Sequence[int]) -> None:
        super().__init__(seeds)
        self.hidden = hidden
        self.weight = self.param(hidden, hidden)
        self.bias = self.param(hidden)
        self.out_weight = self.param(hidden)
        self.out_bias = self.param(1)

    def forward(self, steps: int = STEPS) -> Tensor:
        h = torch.zeros(self.replicas, self.hidden, 1)
        outputs = []
        for _ in range(steps):
            h = torch.tanh(torch.bmm(self.weight, h) + self.bias.unsqueeze(-1))  # (R, H, 1)
            outputs.append(h.squeeze(-1))
        states = torch.stack(outputs, dim=1)  # (R, T, H)
        return (states * self.out_weight.unsqueeze(1)).sum(-1) + self.out_bias


class LSTM(_Replicated):
    """LSTM (Hochreiter & Schmidhuber 1997; forget gates, Gers et al. 2000) without input."""

    name = "LSTM"

    def __init__(self, hidden: int, seeds: Sequence[int]) -> None:
        super().__init__(seeds)
        self.hidden = hidden
        self.weight = self.param(4 * hidden, hidden)
        self.bias = self.param(4 * hidden)
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
        states = torch.stack(outputs)  # (R, T, H)
        return (states * self.out_weight.unsqueeze(1)).sum(-1) + self.out_bias

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
        states = torch.stack(outputs, dim=1)
        return (states * self.out_weight.unsqueeze(1)).sum(-1) + self.out_bias


class ClockworkRNN(_Replicated):
    """Clockwork RNN without input: module i (``module_size`` units, period ``periods[i]``) updates
    when t mod T_i == 0 and reads itself and the slower modules only (Koutník et al. 2014)."""

    name = "Clockwork RNN"

    def __init__(self, module_size: int, periods: Sequence[int], seeds: Sequence[int]) -> None:
        super().__init__(seeds)
        self.periods = check_periods(periods)
        for fast, slow in zip(self.periods, self.periods[1:], strict=False):
            if slow % fast:
                raise ValueError("this experiment needs each period to divide the next")
        self.module_size = module_size
        self.hidden = module_size * len(self.periods)
        self.blocks = nn.ParameterList(
            self.param(module_size, self.hidden - i * module_size) for i in range(len(periods))
        )
        self.bias = self.param(self.hidden)
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
        states = torch.stack(outputs, dim=1)
        return (states * self.out_weight.unsqueeze(1)).sum(-1) + self.out_bias


def build_models(seeds: Sequence[int]) -> list[_Replicated]:
    """The three networks at about 750 weights each (729, 742 and 771)."""
    return [
        SimpleRNN(26, seeds),
        LSTM(13, seeds),
        ClockworkRNN(5, [1, 2, 4, 8, 16, 32, 64], seeds),
    ]


def train(
    model: _Replicated, target: Tensor, iterations: int, lr: float, momentum: float
) -> tuple[Tensor, Tensor, list[float]]:
    """Full-batch SGD with Nesterov momentum; returns NMSE (R,), predictions (R, T) and the
    mean NMSE every 10% of the run."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True)
    variance = float(target.var(unbiased=False))
    curve = []
    for iteration in range(iterations):
        prediction = model(len(target))
        mse = ((prediction - target) ** 2).mean(dim=1)  # (R,)
        optimizer.zero_grad()
        mse.sum().backward()  # replicas are independent: their losses add
        for p in model.parameters():  # elementwise clip (per replica, unlike a norm clip)
            p.grad.clamp_(-1.0, 1.0)  # type: ignore[union-attr]
        optimizer.step()
        if (iteration + 1) % max(1, iterations // 10) == 0:
            curve.append(float(mse.detach().mean()) / variance)
    with torch.no_grad():
        prediction = model(len(target))
        nmse = ((prediction - target) ** 2).mean(dim=1) / variance
    return nmse, prediction, curve


def plot(target: Tensor, predictions: dict[str, Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(predictions), 1, figsize=(8, 2.0 * len(predictions)), sharex=True)
    for ax, (label, prediction) in zip(axes, predictions.items(), strict=True):
        ax.plot(target.numpy(), color="black", linewidth=1.2, label="target")
        ax.plot(prediction.numpy(), color="tab:red", linewidth=1.0, label="prediction")
        ax.set_title(label, fontsize=9)
        ax.set_ylim(-1.3, 1.3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(
    seeds: Sequence[int], iterations: int, lr: float, momentum: float, out: Path
) -> dict[str, Any]:
    """Train the three models on every seed; write ``clockwork.json`` and ``clockwork.png``."""
    target = make_waveform()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "steps": STEPS,
        "iterations": iterations,
        "lr": lr,
        "momentum": momentum,
        "seeds": list(seeds),
        "models": [],
    }
    best: dict[str, Tensor] = {}
    for model in build_models(seeds):
        started = time.perf_counter()
        nmse, prediction, curve = train(model, target, iterations, lr, momentum)
        seconds = time.perf_counter() - started
        finite = nmse[torch.isfinite(nmse)]
        index = int(torch.nan_to_num(nmse, nan=math.inf).argmin())
        best[f"{model.name}: best seed, NMSE {float(nmse[index]):.2e}"] = prediction[index].detach()
        row = {
            "model": model.name,
            "parameters": model.parameters_per_network(),
            "nmse": [float(v) for v in nmse],
            "nmse_mean": float(finite.mean()) if len(finite) else math.nan,
            "nmse_std": float(finite.std(unbiased=False)) if len(finite) else math.nan,
            "nmse_best": float(nmse[index]),
            "curve": curve,
            "seconds": seconds,
        }
        results["models"].append(row)
        logger.info(
            "%s: NMSE %.3e +- %.1e (%.0fs)", model.name, row["nmse_mean"], row["nmse_std"], seconds
        )
    plot(target, best, out / "clockwork.png")
    (out / "clockwork.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def format_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | weights | NMSE mean ± std | best seed | per seed |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in results["models"]:
        per_seed = ", ".join(f"{v:.2e}" for v in row["nmse"])
        lines.append(
            f"| {row['model']} | {row['parameters']} | {row['nmse_mean']:.2e} ± "
            f"{row['nmse_std']:.1e} | {row['nmse_best']:.2e} | {per_seed} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...)")
    parser.add_argument("--iterations", type=int, default=2000, help="SGD steps per model")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.9, help="Nesterov momentum")
    parser.add_argument("--out", type=Path, default=Path("clockwork-experiment"))
    parser.add_argument(
        "--smoke", action="store_true", help="seconds: 2 seeds, 3 iterations, a temporary --out"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    if not args.smoke:
        return _run_and_print(range(args.seeds), args.iterations, args.lr, args.momentum, args.out)
    with tempfile.TemporaryDirectory() as tmp:
        return _run_and_print(range(2), 3, args.lr, args.momentum, Path(tmp))


def _run_and_print(
    seeds: Sequence[int], iterations: int, lr: float, momentum: float, out: Path
) -> int:
    results = run(seeds, iterations, lr, momentum, out)
    print(format_table(results))
    print(f"wrote {out / 'clockwork.json'} and {out / 'clockwork.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
