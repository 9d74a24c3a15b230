"""The training run around the step (``training.step``): budgets, the schedule of validations,
early stopping, resume state, stop requests and the run's result.

What a validation does, and the files the run keeps beside ``--out`` (best model, resume file,
metrics, plot), are ``training.run_files``. Without ``--eval-interval``, the measured time of the
validations decides when the next one comes (``training.budget``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import distributed
from training.budget import RunClock, TimeBudget
from training.config import TrainConfig
from training.data import Corpus
from training.distributed import DistContext
from training.evaluate import EvalResult
from training.progress import Progress
from training.report import Reporter
from training.resume import ResumeError, ResumeState, check_same_run, load_resume, resume_path
from training.run_files import RunFiles
from training.signals import StopRequest
from training.step import Stepper
from training.validation import Validation

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    step: int
    train_seconds: float
    best_val_nats: float
    best_step: int
    stop_reason: str  # "max_steps", "max_time", "early_stop", "interrupted"
    chars_per_sec: float
    wall_seconds: float = 0.0  # evaluations, files and everything else included
    eval_seconds: float = 0.0  # all validations with their samples and files
    num_evals: int = 0


class Trainer:
    """Trains one model on one corpus; ``run()`` to the end, or ``advance(seconds)`` in slices.

    ``state_dict()`` / ``load_state_dict()`` hold everything needed to continue the run exactly:
    the step's state (``training.step.Stepper``) and the run's own (best validation, early-stopping
    counter, clocks, the data and layout it must be resumed with). ``clock`` is the wall clock
    the time budget reads (tests give their own).
    """

    def __init__(
        self,
        config: TrainConfig,
        corpus: Corpus,
        out: Path | None,
        *,
        context: DistContext | None = None,
        reporter: Reporter | None = None,
        resume: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.corpus = corpus
        self.out = out
        self.ctx = context or DistContext(device=distributed.choose_device(config.device))
        self.reporter = reporter or Reporter()
        if self.ctx.enabled and config.algorithm != "bptt":
            # they update the weights without DistributedDataParallel's gradient averaging
            raise ValueError(f"--algorithm {config.algorithm} trains in one process only")
        self.stepper = Stepper(config, len(corpus.vocab), corpus.train_ids, self.ctx)
        self.model = self.stepper.model
        self.optimizer = self.stepper.optimizer
        self.autocast_dtype = self.stepper.autocast_dtype
        self.clock = RunClock(clock)
        self.validation = Validation(config, corpus, self.model, self.clock.now)
        self.budget = TimeBudget(config.max_time, self.clock, self.validation.times)
        self._time_progress = 0.0  # rank 0's, shared each step when there is a time budget
        self.progress = Progress()
        self.stop = StopRequest()
        self.files = RunFiles(
            config,
            corpus,
            out,
            self.ctx,
            self.stepper,
            self.validation,
            self.progress,
            self.clock,
            self.reporter,
        )
        self.finished: str | None = None
        if resume:
            self._resume()
        elif self.files.metrics is not None and self.ctx.is_main:
            self.files.metrics.reset()

    @property
    def step(self) -> int:
        return self.stepper.step

    @property
    def train_seconds(self) -> float:
        return self.stepper.train_seconds

    # ------------------------------------------------------------------ running
    def run(self) -> TrainResult:
        """Train until a budget, early stopping or a signal ends the run; save and report."""
        self.stop.install()
        self.reporter.start(self.step, self.config.max_steps)
        try:
            while self.finished is None:
                self.advance(None)
            return self.finish()
        finally:
            self.reporter.close()
            self.stop.restore()

    def advance(self, seconds: float | None) -> None:
        """Train (evaluating on schedule) for about ``seconds`` of training time, or to the end."""
        cfg = self.config
        until = None if seconds is None else self.train_seconds + seconds
        with self.clock.running():
            if not self.validation.prepared and self.ctx.is_main:
                self.validation.prepare()
            while self.finished is None and (until is None or self.train_seconds < until):
                started = self.clock.now()
                reason = self._stop_reason()
                if distributed.any_rank(reason is not None, self.ctx):
                    self.finished = reason or "interrupted"
                    break
                self.stepper.take_step(self._time_progress)
                if self.step % cfg.log_interval == 0:
                    self._log_train()
                due = bool(self.validation.docs) and self._evaluation_due()
                self.budget.step_seconds = self.clock.now() - started  # the next one's guess
                if due:
                    self.files.evaluate_and_save(self.state_dict)

    def _stop_reason(self) -> str | None:
        cfg = self.config
        if cfg.max_time is not None:
            # ranks must agree on the schedule and the budget, so rank 0's clock rules
            self._time_progress = distributed.broadcast_float(self.budget.progress(), self.ctx)
        if self.stop.requested:
            return "interrupted"
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_time is not None and self._time_progress >= 1:
            return "max_time"
        if self.progress.patience_spent(cfg.patience):
            return "early_stop"
        return None

    def _evaluation_due(self) -> bool:
        cfg = self.config
        due = self.validation.due(self.step, self.clock.elapsed)
        if cfg.eval_interval is not None or self.step % cfg.log_interval:
            return due  # decided by the step alone, alike on every rank
        return distributed.broadcast_float(float(due), self.ctx) > 0.5  # rank 0's clock decides

    def _log_train(self) -> None:
        figures = self.stepper.take_interval()
        if figures is None:
            return
        record = {
            "kind": "train",
            "step": self.step,
            "time": round(self.train_seconds, 3),
            "wall_seconds": round(self.clock.elapsed, 3),
        }
        record.update(figures)
        if self.ctx.is_main:
            self.reporter.train(record)
            self.files.append(record)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> EvalResult:
        """The exact figure of the validation text (``charlm-eval``'s reading, one stream per
        document); the run's own validations read it as parallel streams (``Validation.run``)."""
        return self.validation.exact()

    def summary(self) -> dict[str, Any]:
        """The run so far, as the checkpoint's ``training`` metadata records it."""
        return self.files.summary()

    # ------------------------------------------------------------------ resume state
    def state_dict(self) -> ResumeState:
        """Everything needed to continue this run exactly; every rank must call (see Stepper)."""
        saved = self.stepper.state_dict()
        saved.info.update(
            {
                "train_config": self.config.to_dict(),
                **self.progress.state_dict(),
                "wall_seconds": self.clock.elapsed,
                **self.validation.state_dict(),
                "world_size": self.ctx.world_size,
                "corpus_fingerprint": self.corpus.fingerprint,
                "vocab": self.corpus.vocab.to_dict(),
            }
        )
        return saved

    def load_state_dict(self, saved: ResumeState) -> None:
        """Continue from ``saved``, after checking it is a state of this run (``ResumeError``)."""
        info = saved.info
        check_same_run(
            info,
            self.corpus.fingerprint,
            self.corpus.vocab.to_dict(),
            self.config.batch_size,
            self.ctx.world_size,
        )
        self.stepper.load_state_dict(saved)
        self.progress.load_state_dict(info)
        # files from before the wall clock was kept: their training time stands in
        self.clock.before = float(info.get("wall_seconds", info["train_seconds"]))
        self.validation.load_state_dict(info)

    def _save_resume(self) -> None:
        self.files.save_resume(self.state_dict())  # on every rank: the streams' states are gathered

    def _resume(self) -> None:
        if self.out is None:
            raise ResumeError("resuming needs the checkpoint path (--out)")
        self.load_state_dict(load_resume(resume_path(self.out)))
        if self.files.metrics is not None and self.ctx.is_main:
            self.files.metrics.truncate_after(self.step)
        logger.info("resumed at step %d", self.step)

    def finish(self) -> TrainResult:
        """Final evaluation (unless interrupted or just done), final files, the result; a
        ``summary`` record ends the metrics."""
        reason = self.finished or "max_steps"
        with self.clock.running():
            self._log_train()
            if (
                reason != "interrupted"
                and self.validation.docs
                and self.progress.last_eval_step != self.step
            ):
                self.files.evaluate_and_save(self.state_dict)
            else:
                self._save_resume()
            if not self.validation.docs and self.ctx.is_main:
                self.files.save_model()  # no validation text: the last model is the one kept
            if self.ctx.is_main:
                self.files.append(
                    {
                        "kind": "summary",
                        "step": self.step,
                        "stop_reason": reason,
                        "time": round(self.train_seconds, 3),
                        **self.validation.times.totals(self.clock.elapsed),
                    }
                )
        total_chars = self.step * self.stepper.chars_per_step
        return TrainResult(
            step=self.step,
            train_seconds=self.train_seconds,
            best_val_nats=self.progress.best_val,
            best_step=self.progress.best_step,
            stop_reason=reason,
            chars_per_sec=total_chars / max(self.train_seconds, 1e-9),
            wall_seconds=self.clock.elapsed,
            eval_seconds=self.validation.times.total,
            num_evals=self.validation.times.count,
        )
