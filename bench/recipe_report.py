"""What ``bench.recipe`` reads from a run and shows: figures, targets, tables and the curve."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.report import png_plot

#: the corpus the targets are set for (its last 10% held out)
TARGET_CORPUS = "tinyshakespeare.txt"
TABLE_HEAD = (
    "| budget s | wall s | auto chose | best val nats/char (training) | exact nats/char |"
    " exact bits/char | target nats/char | verdict |"
)
ADAPT_HEAD = (
    "| budget s | static bits/char | adaptive bits/char | adaptive - static | static s/char |"
    " adaptive s/char | cost ratio | target |"
)


@dataclass(frozen=True)
class Targets:
    """What runs on a corpus must reach, by budget (wall seconds): the exact validation figure
    in nats/char (``loss``), and how many bits/char adaptive scoring must gain (``adapt_gain``)."""

    loss: dict[float, float]
    adapt_gain: dict[float, float]


def targets_for(corpus: str, device: str) -> Targets:
    """tinyshakespeare's targets on this project's 2-core CPU, or on one GPU (``cuda``); none
    for other corpora."""
    if corpus != TARGET_CORPUS:
        return Targets({}, {})
    if device == "cuda":
        return Targets({180.0: 1.38}, {})
    return Targets({480.0: 1.40, 1800.0: 1.35}, {480.0: 0.05})


_AUTO = re.compile(r"^auto: (?P<shape>.+?) for .*?; (?P<settings>dropout .+?)(?: \(chosen in|$)")


def auto_choice(stdout: str) -> str:
    """The ``auto:`` line ``charlm-train`` prints, shortened to the shape and its settings
    ("-" when it printed none, as with a named preset)."""
    for line in stdout.splitlines():
        if line.startswith("auto: "):
            match = _AUTO.match(line)
            return f"{match['shape']}; {match['settings']}" if match else line[6:]
    return "-"


@dataclass
class RunFigures:
    """One budget's run: its process, what ``auto`` chose, its curve and its scores."""

    budget: float
    wall_seconds: float
    auto: str
    curve: list[tuple[float, float]]  # (the run's wall seconds, validation nats/char)
    stop: str
    static: dict[str, Any] | None = None
    adaptive: dict[str, Any] | None = None
    seed: int | None = None  # None: charlm-train's default

    @classmethod
    def from_run(
        cls,
        budget: float,
        wall_seconds: float,
        stdout: str,
        records: list[dict[str, Any]],
        seed: int | None = None,
    ) -> RunFigures:
        # with a weight average a validation reads both; the better is the one the run keeps
        curve = [
            (float(r["wall_seconds"]), min(r["val_nats"], r.get("ema_val_nats", math.inf)))
            for r in records
            if r.get("kind") == "eval" and "wall_seconds" in r
        ]
        stop = next((line for line in stdout.splitlines() if line.startswith("stopped (")), "")
        return cls(budget, wall_seconds, auto_choice(stdout), curve, stop, seed=seed)

    @property
    def label(self) -> str:
        return f"{self.budget:g}" + ("" if self.seed is None else f" (seed {self.seed})")

    @property
    def best_val(self) -> float:
        return min((v for _, v in self.curve), default=math.nan)

    def target(self, targets: Targets) -> float | None:
        return targets.loss.get(self.budget)

    def verdict(self, targets: Targets) -> str:
        """met when the exact figure reaches the target and the process ended within the
        budget's wall time."""
        target = self.target(targets)
        if target is None or self.static is None:
            return "-"
        misses = []
        if self.static["nats_per_char"] > target:
            misses.append(f"{self.static['nats_per_char']:.4f} > {target:g}")
        if self.wall_seconds > self.budget:
            misses.append(f"wall {self.wall_seconds:.0f} s > {self.budget:g} s")
        return f"missed ({'; '.join(misses)})" if misses else "**met**"

    def adapt_gain(self) -> float:
        """Adaptive minus static bits/char (negative: adaptive scoring is better)."""
        if self.static is None or self.adaptive is None:
            return math.nan
        return float(self.adaptive["bits_per_char"] - self.static["bits_per_char"])

    def adapt_verdict(self, targets: Targets) -> str:
        target = targets.adapt_gain.get(self.budget)
        if target is None:
            return "-"
        met = self.adapt_gain() <= -target
        return f"<= -{target:g}: {'**met**' if met else 'missed'}"

    def to_dict(self, targets: Targets) -> dict[str, Any]:
        return {
            "budget_seconds": self.budget,
            "seed": self.seed,
            "wall_seconds": round(self.wall_seconds, 2),
            "auto": self.auto,
            "stop": self.stop,
            "best_val_nats_per_char": self.best_val,
            "curve": self.curve,
            "static": self.static,
            "adaptive": self.adaptive,
            "target_nats_per_char": self.target(targets),
            "verdict": self.verdict(targets),
            "adaptive_minus_static_bits_per_char": self.adapt_gain(),
            "adaptive_verdict": self.adapt_verdict(targets),
        }


def _figure(scores: dict[str, Any] | None, key: str, spec: str) -> str:
    return "-" if scores is None else format(scores[key], spec)


def print_tables(rows: list[RunFigures], targets: Targets) -> None:
    print(TABLE_HEAD)
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        target = r.target(targets)
        print(
            f"| {r.label} | {r.wall_seconds:.1f} | {r.auto} | {r.best_val:.4f} |"
            f" {_figure(r.static, 'nats_per_char', '.4f')} |"
            f" {_figure(r.static, 'bits_per_char', '.4f')} |"
            f" {'-' if target is None else f'<= {target:g}'} | {r.verdict(targets)} |"
        )
    adaptive = [r for r in rows if r.adaptive is not None and r.static is not None]
    if not adaptive:
        return
    print("\n" + ADAPT_HEAD)
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in adaptive:
        assert r.static is not None and r.adaptive is not None
        static, adapt = r.static["seconds_per_char"], r.adaptive["seconds_per_char"]
        ratio = adapt / static if static > 0 else math.nan
        print(
            f"| {r.label} | {r.static['bits_per_char']:.4f} | {r.adaptive['bits_per_char']:.4f}"
            f" | {r.adapt_gain():+.4f} | {static:.2e} | {adapt:.2e} | {ratio:.1f}x |"
            f" {r.adapt_verdict(targets)} |"
        )


SEEDS_HEAD = (
    "| budget s | runs | exact nats/char: mean | min | max | standard deviation | target nats/char"
    " | verdict on the mean |"
)


def seed_summary(rows: list[RunFigures], targets: Targets) -> list[dict[str, Any]]:
    """Per budget run with several seeds: the exact figures' mean, range and standard deviation,
    and whether the mean reaches the target with every run inside its budget."""
    summary = []
    for budget in dict.fromkeys(r.budget for r in rows):
        runs = [r for r in rows if r.budget == budget and r.static is not None]
        if len(runs) < 2:
            continue
        values = [float(r.static["nats_per_char"]) for r in runs if r.static is not None]
        mean, sd = statistics.mean(values), statistics.stdev(values)
        target = targets.loss.get(budget)
        late = [r for r in runs if r.wall_seconds > budget]
        verdict = "-"
        if target is not None:
            verdict = "**met**" if mean <= target and not late else "missed"
        summary.append(
            {"budget_seconds": budget, "runs": len(values), "mean": mean, "min": min(values),
             "max": max(values), "sd": sd, "target": target, "verdict": verdict}
        )  # fmt: skip
    return summary


def print_seed_summary(summary: list[dict[str, Any]]) -> None:
    if not summary:
        return
    print("\n" + SEEDS_HEAD)
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for s in summary:
        target = "-" if s["target"] is None else f"<= {s['target']:g}"
        print(
            f"| {s['budget_seconds']:g} | {s['runs']} | {s['mean']:.4f} | {s['min']:.4f} |"
            f" {s['max']:.4f} | {s['sd']:.4f} | {target} | {s['verdict']} |"
        )


def draw_curves(rows: list[RunFigures], title: str, targets: Targets, path: Path) -> None:
    """Validation nats/char against the run's wall clock (the seconds ``--max-time`` counts,
    from the start of training), one line per budget, the targets dashed; written as PNG."""
    with png_plot(path) as ax:
        for r in rows:
            if r.curve:
                label = f"--max-time {r.budget:g}" + ("" if r.seed is None else f" --seed {r.seed}")
                ax.plot(*zip(*r.curve, strict=True), marker="o", markersize=3, label=label)
        for budget, target in targets.loss.items():
            ax.axhline(target, linestyle="--", linewidth=0.8, color="grey")
            label = f"target {target:g} by {budget:g} s"
            ax.text(
                0.01, target, label, fontsize=7, va="bottom", transform=ax.get_yaxis_transform()
            )
        ax.set_xlabel("seconds of the run's wall clock (what --max-time counts)")
        ax.set_xlim(left=0)
        ax.set_ylabel("validation nats/char")
        ax.set_title(title, fontsize=9)
