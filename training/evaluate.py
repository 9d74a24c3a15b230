"""Validation loss with the scoring convention the server uses.

Each document is scored as one text, as ``/v1/score`` scores it: the model starts from
``initial_state``, reads ``BOS_ID`` first and then every character, carrying the state through the
whole document (``models.scoring``). A bidirectional model gives the pseudo-log-likelihood of the
whole document, each character seen with its full left and right context (``models.infill``).
``charlm-eval`` and the training loop both call :func:`evaluate_docs`, so the two report the same
figure for the same text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.base import CharLM
from models.infill import pll_score_id_sequences
from models.scoring import PerCharFigures, score_id_sequences
from models.vocab import UNK_ID


@dataclass(frozen=True)
class EvalResult(PerCharFigures):
    """Summed negative log-likelihood over ``num_chars`` characters."""

    total_nats: float
    num_chars: int
    num_unknown: int

    @property
    def nats_per_char(self) -> float:
        return self.total_nats / self.num_chars if self.num_chars else math.nan

    def to_dict(self) -> dict[str, float | int]:
        return {
            "nats_per_char": self.nats_per_char,
            "bits_per_char": self.bits_per_char,
            "perplexity": self.perplexity,
            "num_chars": self.num_chars,
            "num_unknown": self.num_unknown,
        }


def limit_docs(docs: Sequence[np.ndarray], max_chars: int | None) -> list[np.ndarray]:
    """The leading documents (the last one cut) holding at most ``max_chars`` characters."""
    if max_chars is None:
        return list(docs)
    kept: list[np.ndarray] = []
    left = max_chars
    for doc in docs:
        if left <= 0:
            break
        kept.append(doc[:left])
        left -= len(kept[-1])
    return kept


def evaluate_docs(model: CharLM, docs: Sequence[np.ndarray]) -> EvalResult:
    """Score every document on its own, one stream each, and sum (eval mode is restored after)."""
    score_ids = score_id_sequences if model.can_generate else pll_score_id_sequences
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        chars = 0
        unknown = 0
        for doc in docs:
            if len(doc) == 0:
                continue
            ids = np.asarray(doc, dtype=np.int64)
            (score,) = score_ids(model, [ids])
            total -= score.logprob
            chars += score.num_chars
            unknown += int(np.count_nonzero(ids == UNK_ID))
    finally:
        model.train(was_training)
    return EvalResult(total, chars, unknown)
