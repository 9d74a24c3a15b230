"""The run's validation: its text, how it is read, what it has cost and when the next one comes.

The run (``training.loop``, with ``training.run_files``) decides what a validation's figure
means (best model, early stopping, files); this module holds the rest. The text is the
validation documents' first ``--eval-max-chars`` characters, cut further under a time budget so
that one validation takes at most ``VALIDATION_SHARE`` of it; every validation of a run reads
the same characters, so their figures compare. Their reading is parallel
(``training.evaluate.Reading``); their cost, validation, sample, checkpoint, resume file and plot
together, is kept in ``times``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from models.base import CharLM
from training.budget import FILES_SECONDS, VALIDATION_SHARE, EvalTimes, evaluation_due
from training.config import TrainConfig
from training.data import Corpus
from training.eval_timing import fit_to_time
from training.evaluate import EvalResult, Reading, evaluate_docs, limit_docs
from training.evaluate import sample_text as _sample_text

logger = logging.getLogger(__name__)


class Validation:
    """Validation of ``model`` on ``corpus``'s validation text, timed by ``now``."""

    def __init__(
        self, config: TrainConfig, corpus: Corpus, model: CharLM, now: Callable[[], float]
    ) -> None:
        self.config = config
        self.corpus = corpus
        self.model = model
        self.now = now
        self.docs = limit_docs(corpus.val_docs, config.eval_max_chars)
        if config.eval_max_chars is not None and corpus.num_val_chars > config.eval_max_chars:
            logger.warning(
                "evaluating on the first %d of %d validation characters during training",
                config.eval_max_chars,
                corpus.num_val_chars,
            )
        self.reading = Reading(config.eval_streams, config.eval_warmup)
        self.times = EvalTimes()
        self.prepared = False

    @property
    def num_chars(self) -> int:
        return sum(len(d) for d in self.docs)

    def run(self) -> EvalResult:
        """The validation figure (``--eval-streams``, ``--eval-warmup``)."""
        return evaluate_docs(self.model, self.docs, self.reading)

    def exact(self) -> EvalResult:
        """The exact figure of the same text: one stream per document, as ``charlm-eval``."""
        return evaluate_docs(self.model, self.docs)

    def sample(self) -> str | None:
        return _sample_text(self.model, self.corpus.vocab, self.config.sample_chars)

    def due(self, step: int, elapsed: float) -> bool:
        """Is a validation due after ``step``? With ``--eval-interval``, every so many steps;
        without, at ``--log-interval`` steps when it keeps to ``--eval-share`` of ``elapsed``."""
        cfg = self.config
        if cfg.eval_interval is not None:
            return step % cfg.eval_interval == 0
        return step % cfg.log_interval == 0 and evaluation_due(cfg.eval_share, self.times, elapsed)

    def prepare(self) -> None:
        """Before the first validation: time slices of one, so that the time budget can keep
        the final one's time back and the schedule can space them (``training.budget``); with
        a time budget, cut the text to what reads in its ``VALIDATION_SHARE``."""
        self.prepared = True
        cfg = self.config
        if self.times.count:
            return
        if cfg.max_time is None and (cfg.eval_interval is not None or not self.docs):
            return
        started = self.now()
        # with a weight average the text is read twice (training.averaging): each reading gets
        # half the time, and the estimate counts both (the sample twice, an estimate on the safe
        # side until the first validation is timed)
        readings = 2 if cfg.ema else 1
        fits = (
            None
            if cfg.max_time is None
            else (VALIDATION_SHARE * cfg.max_time - FILES_SECONDS) / readings
        )
        sample_chars = cfg.sample_chars if self.docs else 0
        docs, estimate = fit_to_time(
            self.model, self.corpus.vocab, self.docs, self.reading, sample_chars, fits, self.now
        )
        kept = sum(len(d) for d in docs)
        if kept < self.num_chars:
            logger.warning(
                "validating on the first %d characters: a validation of more would take over"
                " %.0f%% of --max-time",
                kept,
                100 * VALIDATION_SHARE,
            )
            self.docs = docs
        self.times.estimate = FILES_SECONDS + readings * estimate
        self.times.total += self.now() - started  # time spent for validation, too

    def state_dict(self) -> dict[str, Any]:
        return {
            "eval_seconds": self.times.total,
            "num_evals": self.times.count,
            "eval_estimate": self.times.estimate,
            "eval_chars": self.num_chars,
        }

    def load_state_dict(self, info: dict[str, Any]) -> None:
        """From a resume file's info (files from before these keys leave the defaults)."""
        self.times.total = float(info.get("eval_seconds", 0.0))
        self.times.count = int(info.get("num_evals", 0))
        self.times.estimate = float(info.get("eval_estimate", FILES_SECONDS))
        self.docs = limit_docs(self.docs, info.get("eval_chars"))  # the run's own cut
