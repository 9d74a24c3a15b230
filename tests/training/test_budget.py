"""The run's wall clock, the time budget's reserve and the automatic validation schedule, on
clocks the tests set by hand."""

from __future__ import annotations

import time

import pytest

from training.budget import (
    MAX_RESERVE_FRACTION,
    RESERVE_MARGIN,
    EvalTimes,
    RunClock,
    TimeBudget,
    evaluation_due,
    process_seconds,
    startup_seconds,
)


class Hand:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_clock_counts_only_time_inside_running_blocks() -> None:
    hand = Hand()
    clock = RunClock(hand)
    with clock.running():
        hand.t += 3
        with clock.running():  # nested blocks count once
            hand.t += 1
        assert clock.elapsed == 4
    hand.t += 50  # between calls: another trainer's turn
    with clock.running():
        hand.t += 2
    assert clock.elapsed == 6
    clock.before = 10  # a resumed run starts from the saved figure
    assert clock.elapsed == 10


def test_the_budget_keeps_the_final_evaluation_back_and_never_goes_back() -> None:
    hand = Hand()
    clock = RunClock(hand)
    evals = EvalTimes(estimate=2.0)
    budget = TimeBudget(100.0, clock, evals)
    assert budget.reserve == RESERVE_MARGIN * 2.0
    with clock.running():
        hand.t += 100 - budget.reserve
        assert budget.progress() == pytest.approx(1.0)
        evals.add(0.5)  # cheaper than expected: the reserve shrinks, progress stays
        assert budget.reserve == RESERVE_MARGIN * 0.5
        assert budget.progress() == pytest.approx(1.0)
    evals.add(1000.0)  # slower than the budget: at most a fixed fraction is kept back
    assert budget.reserve == MAX_RESERVE_FRACTION * 100
    assert TimeBudget(None, clock, evals).progress() == 0.0


def test_without_an_interval_validation_waits_until_it_fits_its_share() -> None:
    evals = EvalTimes(estimate=1.0)
    # the first validation (1 s expected) fits 5% of the time once 19 s have passed
    assert not evaluation_due(0.05, evals, 18.9)
    assert evaluation_due(0.05, evals, 19.0)
    evals.add(2.0)  # it took 2 s: the next one waits until 4 s are 5% of the time
    assert evals.totals(21.0) == {
        "wall_seconds": 21.0,
        "eval_total_seconds": 2.0,
        "num_evals": 1,
        "eval_share": round(2 / 21, 4),
    }
    assert not evaluation_due(0.05, evals, 77.9)
    assert evaluation_due(0.05, evals, 78.0)
    assert not evaluation_due(0.0, EvalTimes(estimate=0.0), 1e9)  # 0: only the final one


def test_the_process_age_counts_the_start_up() -> None:
    first = process_seconds()
    assert first > 0.0  # pytest's own start-up came before this test
    time.sleep(0.05)
    assert process_seconds() >= first + 0.04


def test_an_in_process_call_counts_from_its_entry_and_a_command_from_the_start() -> None:
    entered = time.perf_counter() - 2.0
    assert 2.0 <= startup_seconds(entered, whole_process=False) < 2.0 + 60.0
    assert startup_seconds(time.perf_counter(), whole_process=True) >= process_seconds() - 0.1
