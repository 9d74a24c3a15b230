"""What a run shows and leaves behind: progress bar, metrics JSON lines and the loss plot."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.files import atomic_write_bytes
from models.scoring import bits_per_char

if TYPE_CHECKING:
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)


def metrics_path(checkpoint: str | os.PathLike[str]) -> Path:
    path = Path(checkpoint)
    return path.with_name(path.name.removesuffix(".safetensors") + ".metrics.jsonl")


def plot_path(checkpoint: str | os.PathLike[str]) -> Path:
    path = Path(checkpoint)
    return path.with_name(path.name.removesuffix(".safetensors") + ".png")


class MetricsLog:
    """Appends one JSON object per line: ``{"kind": "train" | "eval", "step": ..., ...}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text("utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        return out

    def truncate_after(self, step: int) -> None:
        """Drop records newer than ``step`` (written after the state a run resumes from)."""
        kept = [r for r in self.records() if int(r.get("step", 0)) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def reset(self) -> None:
        atomic_write_bytes(self.path, b"")

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


@contextmanager
def png_plot(path: Path) -> Iterator[Axes]:
    """Axes of a 7 x 4 inch figure to draw on; when the block ends, a light grid and the legend
    are added and the figure is written to ``path`` atomically as PNG. The figure is closed
    either way; a block that raises writes nothing."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        yield ax
        ax.grid(alpha=0.3)
        ax.legend()
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def draw_plot(records: list[dict[str, Any]], path: Path) -> None:
    """Train and validation loss (nats/char) against step, written atomically as PNG."""
    train = [(r["step"], r["train_loss"]) for r in records if r.get("kind") == "train"]
    val = [(r["step"], r["val_nats"]) for r in records if r.get("kind") == "eval"]
    ema = [(r["step"], r["ema_val_nats"]) for r in records if "ema_val_nats" in r]
    with png_plot(path) as ax:
        if train:
            ax.plot(*zip(*train, strict=True), label="train", linewidth=1, alpha=0.7)
        if val:
            ax.plot(*zip(*val, strict=True), label="validation", marker="o", linewidth=1.5)
        if ema:
            ax.plot(*zip(*ema, strict=True), label="validation, weight average", marker=".")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/char)")


class Reporter:
    """Where a run's progress goes; this base class logs, the CLI's subclass draws a bar."""

    def start(self, step: int, total_steps: int | None) -> None:
        pass

    def train(self, record: dict[str, Any]) -> None:
        logger.debug("step %s loss %.4f", record["step"], record["train_loss"])

    def evaluation(self, record: dict[str, Any], sample: str | None) -> None:
        logger.info(
            "step %s: validation %.4f nats/char, %.4f bits/char",
            record["step"],
            record["val_nats"],
            record["val_bpc"],
        )

    def message(self, text: str) -> None:
        logger.info("%s", text)

    def close(self) -> None:
        pass


class ProgressReporter(Reporter):
    """A tqdm bar (step, loss, bits/char, chars/s, ETA); evaluations print a line and a sample."""

    def __init__(self) -> None:
        self._bar: Any = None

    def start(self, step: int, total_steps: int | None) -> None:
        from tqdm import tqdm

        # redrawn often on a terminal; rarely when the output goes to a log file
        interval = 0.5 if sys.stderr.isatty() else 30.0
        self._bar = tqdm(
            total=total_steps, initial=step, unit="step", dynamic_ncols=True, mininterval=interval
        )

    def train(self, record: dict[str, Any]) -> None:
        if self._bar is None:
            return
        self._bar.update(record["step"] - self._bar.n)
        self._bar.set_postfix(
            loss=f"{record['train_loss']:.3f}",
            bpc=f"{bits_per_char(record['train_loss']):.3f}",
            chars_s=f"{record['chars_per_sec']:.0f}",
            lr=f"{record['lr']:.2e}",
        )

    def evaluation(self, record: dict[str, Any], sample: str | None) -> None:
        best = " (best)" if record.get("is_best") else ""
        if "ema_val_bpc" in record:  # the raw weights' figure, then the average's
            best = f"; weight average {record['ema_val_bpc']:.4f} bits/char{best}"
        cost = (
            f"; {record['eval_seconds']:.1f}s, validations {record['eval_share']:.1%} of the time"
            if "eval_seconds" in record
            else ""
        )
        self.message(
            f"step {record['step']}: val {record['val_bpc']:.4f} bits/char,"
            f" {record['val_nats']:.4f} nats/char{best}{cost}"
        )
        if sample:
            self.message("sample: " + sample.replace("\n", "\n        "))

    def message(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
