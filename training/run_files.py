"""The files a training run keeps beside ``--out X.safetensors``, and the validation that writes
them.

Files (rank 0 only): ``X.safetensors`` holds the model with the best validation loss (the last
one when there is no validation text; with ``--ema``, the raw weights or their average, whichever
validated better: ``training.averaging``), ``X.resume.safetensors`` the state to continue from,
``X.metrics.jsonl`` the metrics and ``X.png`` the loss plot.

A validation (``RunFiles.evaluate_and_save``) reads the text as parallel streams
(``training.evaluate``): a close estimate of the exact figure ``charlm-eval`` gives, at a
fraction of its cost. Its figure goes into the run's record (``training.progress``); the model is
saved when it is the best so far, the resume file every time, then the metrics record, the
sample and the plot. Its time, with the sample and the files, is measured and reported
(``eval_seconds`` in the metrics).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.checkpoint import save_checkpoint
from models.scoring import bits_per_char
from training import distributed
from training.averaging import checkpoint_info, read_both
from training.budget import RunClock
from training.config import TrainConfig
from training.data import Corpus
from training.distributed import DistContext
from training.progress import Progress
from training.report import MetricsLog, Reporter, draw_plot, metrics_path, plot_path
from training.resume import ResumeState, resume_path, save_resume
from training.step import Stepper
from training.validation import Validation

logger = logging.getLogger(__name__)


@dataclass
class RunFiles:
    """The files of one run beside ``out`` (None: none, metrics included), and each validation.

    Shares the run's parts with its ``training.loop.Trainer``, which decides when a validation
    is due and hands over the run's resume state (``state``, read on every rank).
    """

    config: TrainConfig
    corpus: Corpus
    out: Path | None
    ctx: DistContext
    stepper: Stepper
    validation: Validation
    progress: Progress
    clock: RunClock
    reporter: Reporter
    metrics: MetricsLog | None = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = MetricsLog(metrics_path(self.out)) if self.out is not None else None

    def append(self, record: dict[str, Any]) -> None:
        """A record at the end of the metrics (rank 0's to write)."""
        if self.metrics is not None:
            self.metrics.append(record)

    def evaluate_and_save(self, state: Callable[[], ResumeState]) -> None:
        """Validate, keep the model if it is the best so far, save the resume file (every rank
        calls), then record, sample and plot on rank 0."""
        started = self.clock.now()
        val = math.nan
        validated = None
        if self.ctx.is_main:  # the raw weights and, with --ema, their average
            validated = read_both(self.validation.run, self.stepper.average)
            val = validated.best.nats_per_char
        val_seconds = self.clock.now() - started
        val = distributed.broadcast_float(val, self.ctx)
        step = self.stepper.step
        improved = self.progress.record(step, val)
        if improved and validated is not None:
            self.save_model(validated.weights)
        times = self.validation.times
        mark = self.clock.now()
        times.add(mark - started)  # before the resume file, which counts this one
        self.save_resume(state())
        if validated is None:
            times.extend(self.clock.now() - mark)
            return
        result = validated.raw
        record: dict[str, Any] = {
            "kind": "eval",
            "step": step,
            "time": round(self.stepper.train_seconds, 3),
            "val_nats": result.nats_per_char,  # the raw weights'; the average's in ema_val_nats
            "val_bpc": result.bits_per_char,
            "val_chars": result.num_chars,
            "is_best": improved,
            "lr": self.stepper.lr,
            **validated.figures(),
        }
        sample = self.sample(validated.weights)
        if self.metrics is not None:
            try:
                records = [*self.metrics.records(), record]
                draw_plot(records, plot_path(self.out or self.metrics.path))
            except Exception as exc:  # a plot must never stop training
                logger.warning("could not draw the loss plot: %s", exc)
        times.extend(self.clock.now() - mark)
        record.update(
            val_seconds=round(val_seconds, 4),  # the validation reading alone
            eval_seconds=round(times.estimate, 4),  # reading, sample, files and plot
            **times.totals(self.clock.elapsed),
        )
        self.reporter.evaluation(record, sample)
        self.append(record)

    def sample(self, weights: str) -> str | None:
        """The validation's sample, drawn from the weights this validation found better."""
        average = self.stepper.average
        with average.swapped_in() if weights == "ema" and average else contextlib.nullcontext():
            return self.validation.sample()

    def summary(self) -> dict[str, Any]:
        """The run so far, as the checkpoint's ``training`` metadata records it."""
        progress = self.progress
        best = progress.best_val if progress.best_step >= 0 else None
        return {
            "step": self.stepper.step,
            "train_seconds": round(self.stepper.train_seconds, 3),
            "wall_seconds": round(self.clock.elapsed, 3),
            "eval_seconds": round(self.validation.times.total, 3),
            "num_evals": self.validation.times.count,
            "best_step": progress.best_step,
            "best_val_nats_per_char": best,
            "best_val_bits_per_char": None if best is None else bits_per_char(best),
            "corpus_fingerprint": self.corpus.fingerprint,
            "train_chars": len(self.corpus.train_ids),
            "val_chars": self.corpus.num_val_chars,
            "world_size": self.ctx.world_size,
        }

    def save_model(self, weights: str = "raw") -> None:
        """The model with its raw weights, or with their average (``weights="ema"``)."""
        if self.out is None:
            return
        average = self.stepper.average
        with average.swapped_in() if weights == "ema" and average else contextlib.nullcontext():
            save_checkpoint(
                self.out,
                self.stepper.model,
                self.corpus.vocab,
                train_config=self.config.to_dict(),
                training={**self.summary(), **checkpoint_info(weights, average)},
            )

    def save_resume(self, state: ResumeState) -> None:
        """The resume file, written by rank 0."""
        if self.out is not None and self.ctx.is_main:
            save_resume(resume_path(self.out), state)
