"""The record of a run's validations: best figure, its step, and early stopping's count."""

from __future__ import annotations

import math

from training.progress import EARLY_STOP_MIN_DELTA, Progress


def test_the_best_figure_and_its_step_are_kept() -> None:
    progress = Progress()
    assert progress.best_step == -1 and math.isinf(progress.best_val)
    assert progress.record(10, 2.0)
    assert not progress.record(20, 2.5)
    assert progress.record(30, 1.5)
    assert (progress.best_val, progress.best_step, progress.last_eval_step) == (1.5, 30, 30)


def test_patience_counts_validations_that_gain_too_little() -> None:
    progress = Progress()
    progress.record(1, 2.0)
    # better, but by less than the margin: kept as the best model, yet counted against patience
    assert progress.record(2, 2.0 - EARLY_STOP_MIN_DELTA / 2)
    assert progress.bad_evals == 1 and not progress.patience_spent(2)
    progress.record(3, 3.0)
    assert progress.bad_evals == 2 and progress.patience_spent(2)
    assert not progress.patience_spent(0)  # 0: early stopping is off
    progress.record(4, 1.0)  # a real gain resets the count
    assert progress.bad_evals == 0


def test_state_round_trips() -> None:
    fresh = Progress()
    assert fresh.state_dict()["best_val"] is None  # inf is not written: no validation yet
    progress = Progress()
    progress.record(5, 1.25)
    progress.record(9, 1.5)
    again = Progress()
    again.load_state_dict(progress.state_dict())
    assert again == progress
    restored = Progress()
    restored.load_state_dict(fresh.state_dict())
    assert restored == fresh
