"""The Clockwork RNN's sequence-generation experiment (Koutník et al. 2014, section 4.1).

A network with no input learns to emit a 320-step waveform from a zero initial state: a simple
RNN (Elman 1990), an LSTM (Hochreiter & Schmidhuber 1997) and a Clockwork RNN, each with about
750 weights, trained full-batch on the mean squared error. The paper used a music clip; the
waveform here is generated (``bench.clockwork_networks.make_waveform``) with structure at several
time scales.

Each network gets the same learning-rate search (``bench.clockwork_search``): SGD with Nesterov
momentum and Adam, each over a log grid of rates, trained on the search seeds; the setting with
the lowest mean final error there is then trained on other seeds, which give the reported figure:
the normalised mean squared error (MSE over the target's variance), mean, spread and per seed. All
seeds and settings of a network train at once as replicas of one batched run.

    python -m bench.clockwork_paper --iterations 6000 --out docs
    python -m bench.clockwork_paper --smoke   # seconds: 3 iterations, 2 settings, a temporary --out
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.clockwork_networks import NETWORKS, STEPS, build_network, make_waveform
from bench.clockwork_search import OPTIMIZERS, Setting, grid, search, train

logger = logging.getLogger(__name__)

INIT_LABELS = {"normal": "N(0, 0.1)", "pytorch": "PyTorch default"}


def run_variant(
    network: str,
    init: str,
    target: Tensor,
    iterations: int,
    settings: Sequence[Setting],
    search_seeds: Sequence[int],
    seeds: Sequence[int],
    momentum: float,
) -> tuple[dict[str, Any], Tensor]:
    """Search, then train the chosen setting on ``seeds``: the row and the best seed's output."""
    found = search(network, init, target, iterations, settings, search_seeds, momentum)
    chosen = found.best
    logger.info("%s (%s init): chose %s in %.0fs", network, init, chosen.label, found.seconds)
    if found.at_edge():
        logger.warning("%s: the chosen rate is at the edge of the grid", network)
    model = build_network(network, seeds, init)
    trained = train(model, target, iterations, [chosen] * len(seeds), momentum)
    nmse = trained.nmse
    finite = nmse[torch.isfinite(nmse)]
    index = int(torch.nan_to_num(nmse, nan=math.inf).argmin())
    row = {
        "model": model.name,
        "network": network,
        "init": init,
        "parameters": model.parameters_per_network(),
        "optimizer": chosen.optimizer,
        "lr": chosen.lr,
        "lr_at_grid_edge": found.at_edge(),
        "nmse": [float(v) for v in nmse],
        "nmse_mean": float(finite.mean()) if len(finite) else math.nan,
        "nmse_std": float(finite.std(unbiased=False)) if len(finite) else math.nan,
        "nmse_min": float(nmse[index]),
        "nmse_max": float(nmse.max()),
        "diverged": int((~torch.isfinite(nmse)).sum()),
        "curve": [float(v) for v in trained.curve.mean(dim=1)],
        "seconds": trained.seconds,
        "search": found.to_json(),
    }
    logger.info("%s: NMSE %.3e +- %.1e", model.name, row["nmse_mean"], row["nmse_std"])
    return row, trained.prediction[index]


def run(
    variants: Sequence[tuple[str, str]],
    settings: Sequence[Setting],
    search_seeds: Sequence[int],
    seeds: Sequence[int],
    iterations: int,
    momentum: float,
    out: Path,
) -> dict[str, Any]:
    """Every (network, init) variant; writes ``clockwork.json`` and ``clockwork.png``."""
    overlap = set(search_seeds) & set(seeds)
    if overlap:
        raise ValueError(f"search seeds and reported seeds overlap: {sorted(overlap)}")
    target = make_waveform()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "steps": STEPS,
        "iterations": iterations,
        "momentum": momentum,
        "adam_betas": [0.9, 0.999],
        "gradient_clip": "elementwise to [-1, 1]",
        "grid": [{"optimizer": s.optimizer, "lr": s.lr} for s in settings],
        "search_seeds": list(search_seeds),
        "seeds": list(seeds),
        "models": [],
    }
    best: dict[str, Tensor] = {}
    for network, init in variants:
        row, prediction = run_variant(
            network, init, target, iterations, settings, search_seeds, seeds, momentum
        )
        results["models"].append(row)
        best[f"{label(row)}, {setting_label(row)}: best seed, NMSE {row['nmse_min']:.2e}"] = (
            prediction
        )
    plot(target, best, out / "clockwork.png")
    (out / "clockwork.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def label(row: dict[str, Any]) -> str:
    return f"{row['model']} ({INIT_LABELS[row['init']]})"


def setting_label(row: dict[str, Any]) -> str:
    return Setting(row["optimizer"], row["lr"]).label


def plot(target: Tensor, predictions: dict[str, Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(predictions)
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.0 * rows), sharex=True, squeeze=False)
    for ax, (title, prediction) in zip(axes[:, 0], predictions.items(), strict=True):
        ax.plot(target.numpy(), color="black", linewidth=1.2, label="target")
        ax.plot(prediction.numpy(), color="tab:red", linewidth=1.0, label="prediction")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-1.3, 1.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


TABLE_HEADER = (
    "| model (init) | weights | optimiser, rate | NMSE mean ± std | min | max | per seed |"
)


def format_table(results: dict[str, Any]) -> str:
    """The reported seeds: one row per network and init, with the setting the search chose."""
    lines = [TABLE_HEADER, "| --- | ---: | --- | ---: | ---: | ---: | --- |"]
    for row in results["models"]:
        per_seed = ", ".join(f"{v:.2e}" for v in row["nmse"])
        edge = " (grid edge)" if row["lr_at_grid_edge"] else ""
        lines.append(
            f"| {label(row)} | {row['parameters']} | {setting_label(row)}{edge} | "
            f"{row['nmse_mean']:.2e} ± {row['nmse_std']:.1e} | {row['nmse_min']:.2e} | "
            f"{row['nmse_max']:.2e} | {per_seed} |"
        )
    return "\n".join(lines)


def format_search(results: dict[str, Any]) -> str:
    """Mean NMSE over the search seeds of every setting tried (rows) for every network
    (columns), the chosen one in bold."""
    rows = results["models"]
    lines = [
        "| optimiser, rate | " + " | ".join(label(row) for row in rows) + " |",
        "| --- |" + " ---: |" * len(rows),
    ]
    for index, tried in enumerate(results["grid"]):
        cells = []
        for row in rows:
            cell = f"{row['search']['settings'][index]['nmse_mean']:.3g}"
            chosen = (tried["optimizer"], tried["lr"]) == (row["optimizer"], row["lr"])
            cells.append(f"**{cell}**" if chosen else cell)
        setting = Setting(tried["optimizer"], tried["lr"]).label
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument(
        "--pytorch-init",
        nargs="*",
        choices=NETWORKS,
        default=["lstm"],
        help="networks that also run with PyTorch's default init beside N(0, 0.1)",
    )
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
    parser.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        help="rates tried with each optimiser (default: SGD 1e-3 to 0.3, Adam 1e-4 to 0.1, "
        "in half decades)",
    )
    parser.add_argument("--search-seeds", nargs="+", type=int, default=[100, 101])
    parser.add_argument("--seeds", type=int, default=5, help="reported seeds: 0, 1, ...")
    parser.add_argument("--iterations", type=int, default=6000, help="full-batch steps per run")
    parser.add_argument("--momentum", type=float, default=0.9, help="Nesterov momentum of SGD")
    parser.add_argument("--out", type=Path, default=Path("clockwork-experiment"))
    parser.add_argument(
        "--smoke", action="store_true", help="seconds: 3 iterations, 2 rates, a temporary --out"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    if args.iterations < 1 or args.seeds < 1:
        parser.error("--iterations and --seeds must be at least 1")
    variants = [(network, "normal") for network in args.models]
    for network in args.pytorch_init:
        if network in args.models:
            variants.insert(variants.index((network, "normal")) + 1, (network, "pytorch"))
    try:
        settings = grid(args.optimizers, args.lrs)
    except ValueError as error:
        parser.error(str(error))
    seeds = range(args.seeds)
    if not args.smoke:
        return _run_and_print(variants, settings, args, seeds, args.iterations, args.out)
    with tempfile.TemporaryDirectory() as tmp:
        return _run_and_print(variants, grid(args.optimizers, [0.01]), args, range(2), 3, Path(tmp))


def _run_and_print(
    variants: Sequence[tuple[str, str]],
    settings: Sequence[Setting],
    args: argparse.Namespace,
    seeds: Sequence[int],
    iterations: int,
    out: Path,
) -> int:
    try:
        results = run(variants, settings, args.search_seeds, seeds, iterations, args.momentum, out)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    print(f"{iterations} iterations; search seeds {args.search_seeds}; seeds {list(seeds)}")
    print(format_table(results))
    print()
    print(format_search(results))
    print(f"wrote {out / 'clockwork.json'} and {out / 'clockwork.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
