"""A validation's time can be told ahead, and a time limit cuts the validation text to what
reads in it."""

from __future__ import annotations

import itertools

import pytest

from tests.support import make_corpus, train_tiny_model
from training.eval_timing import MIN_FIT_CHARS, PROBE_CHARS, estimate_seconds, fit_to_time
from training.evaluate import Reading


def test_the_estimate_scales_a_timed_slice_to_the_whole_reading() -> None:
    model, vocab = train_tiny_model(make_corpus(50), steps=1)
    docs = [vocab.encode_array(make_corpus(400))[:5000]]
    ticks = itertools.count()
    # one tick for the probe of 1 + PROBE_CHARS steps; the reading's longest row is a piece of
    # 1,250 characters after 10 of warm-up, read after BOS
    seconds = estimate_seconds(model, docs, Reading(4, 10), now=lambda: float(next(ticks)))
    assert seconds == pytest.approx((1 + 1260) / (1 + PROBE_CHARS))


def test_a_time_limit_cuts_the_validation_text_to_what_reads_in_it() -> None:
    model, vocab = train_tiny_model(make_corpus(50), steps=1)
    text = vocab.encode_array(make_corpus(3000))[:40_000]
    reading = Reading(4, 10)  # 4 pieces of 10,000: the reading takes 10,011 steps

    def fit(seconds: float | None) -> tuple[int, float]:
        ticks = itertools.count()
        docs, estimate = fit_to_time(
            model, vocab, [text], reading, 0, seconds, now=lambda: float(next(ticks))
        )
        return sum(len(d) for d in docs), estimate

    whole = 10_011 / (1 + PROBE_CHARS)  # seconds: the probe takes one tick
    assert fit(None) == (40_000, pytest.approx(whole))
    assert fit(whole) == (40_000, pytest.approx(whole))
    kept, estimate = fit(whole / 2)
    assert kept == 20_000 and estimate == pytest.approx(whole / 2)
    assert fit(1.0)[0] == MIN_FIT_CHARS  # never less than enough for a figure
