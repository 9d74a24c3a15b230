"""What a validation costs, told ahead: a timed read of a few characters scaled to the whole
reading (``estimate_seconds``), and the leading part of the validation text that a validation
with its sample reads within a time (``fit_to_time``). The readings are ``training.evaluate``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from models.base import CharLM
from models.vocab import CharVocab
from training.evaluate import (
    MIN_STREAM_CHARS,
    Reading,
    evaluate_docs,
    limit_docs,
    read_batch,
    sample_text,
)

#: characters per stream that ``estimate_seconds`` reads to time a validation
PROBE_CHARS = 64
#: the fewest validation characters ``fit_to_time`` cuts a text to
MIN_FIT_CHARS = 16 * MIN_STREAM_CHARS


def estimate_seconds(
    model: CharLM,
    docs: Sequence[np.ndarray],
    reading: Reading,
    now: Callable[[], float] = time.perf_counter,
) -> float:
    """The seconds ``evaluate_docs(model, docs, reading)`` should take, from a timed read of
    ``PROBE_CHARS`` characters of its widest batch (the first forward's set-up makes the figure
    high, not low)."""
    arrays = [np.asarray(doc, dtype=np.int64) for doc in docs if len(doc)]
    if not arrays:
        return 0.0
    was_training = model.training
    model.eval()
    try:
        if not model.can_generate:  # one forward over each whole document: time a slice
            part = arrays[0][: 64 * PROBE_CHARS]
            started = now()
            evaluate_docs(model, [part])
            return (now() - started) * sum(len(a) for a in arrays) / len(part)
        steps = 0  # time steps of the whole reading: a batch runs as long as its longest row
        first: list[np.ndarray] = []
        for texts, contexts in reading.batches(arrays):
            steps += 1 + max(len(t) + len(c) for t, c in zip(texts, contexts, strict=True))
            first = first or [t[:PROBE_CHARS] for t in texts]
        none = [np.zeros(0, dtype=np.int64) for _ in first]  # no contexts
        read_batch(model, [t[:4] for t in first], none)  # the set-up of these shapes
        started = now()
        read_batch(model, first, none)
        return (now() - started) * steps / (1 + max(len(t) for t in first))
    finally:
        model.train(was_training)


def fit_to_time(
    model: CharLM,
    vocab: CharVocab,
    docs: Sequence[np.ndarray],
    reading: Reading,
    sample_chars: int,
    seconds: float | None,
    now: Callable[[], float] = time.perf_counter,
) -> tuple[list[np.ndarray], float]:
    """The leading part of ``docs`` that a validation with a sample of ``sample_chars`` reads in
    at most ``seconds`` (``None``: all of them; never under ``MIN_FIT_CHARS`` characters), and
    the estimated seconds of that validation and sample."""
    sample = 0.0
    probe = min(sample_chars, 16)
    if probe and model.can_generate:  # a few characters of the sample, scaled
        sample_text(model, vocab, 1)  # the set-up of the first call
        started = now()
        sample_text(model, vocab, probe)
        sample = (now() - started) * sample_chars / probe
    reading_seconds = estimate_seconds(model, docs, reading, now)
    chars = sum(len(d) for d in docs)
    if seconds is None or reading_seconds + sample <= seconds or chars <= MIN_FIT_CHARS:
        return list(docs), reading_seconds + sample
    keep = max(MIN_FIT_CHARS, int(chars * max(0.0, seconds - sample) / reading_seconds))
    return limit_docs(docs, keep), reading_seconds * keep / chars + sample
