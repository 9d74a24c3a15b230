"""The run's wall clock and what it governs: the time budget, with the final evaluation's time
kept back, and when to validate.

``--max-time`` is wall time: training steps, validations, samples, checkpoints and plots all
count. The clock runs while the trainer works (``Trainer.advance`` and ``Trainer.finish``), not
between those calls, so a caller that interleaves two trainers charges each only its own time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: the final evaluation may take this much longer than the estimate before the budget overruns
RESERVE_MARGIN = 1.5
#: never keep back more than this fraction of the budget, however slow evaluation is
MAX_RESERVE_FRACTION = 0.5
#: what checkpoint, resume file and plot are assumed to take before one has been timed
FILES_SECONDS = 0.5
#: with a time budget, one validation (sample and files included) should take at most this
#: share of it: the validation text is cut to fit (``training.eval_timing.fit_to_time``)
VALIDATION_SHARE = 0.05


class RunClock:
    """Seconds of wall time spent inside ``running()`` blocks, across resumes (``elapsed``)."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self.before = 0.0  # seconds counted by earlier blocks (and earlier processes)
        self._started: float | None = None
        self._depth = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        if self._depth == 0:
            self._started = self.now()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._started is not None:
                self.before += self.now() - self._started
                self._started = None

    @property
    def elapsed(self) -> float:
        running = 0.0 if self._started is None else self.now() - self._started
        return self.before + running


@dataclass
class EvalTimes:
    """What the run's evaluations have cost: each one's validation, sample and files."""

    total: float = 0.0  # seconds, all evaluations so far
    count: int = 0
    estimate: float = FILES_SECONDS  # seconds the next one is expected to take

    def add(self, seconds: float) -> None:
        """One more evaluation, ``seconds`` long so far (``extend`` adds the rest)."""
        self.total += seconds
        self.count += 1
        self.estimate = seconds  # the next one reads the same text and writes the same files

    def extend(self, seconds: float) -> None:
        self.total += seconds
        self.estimate += seconds

    def totals(self, elapsed: float) -> dict[str, float]:
        """The figures a metrics record carries, at ``elapsed`` seconds of wall time."""
        return {
            "wall_seconds": round(elapsed, 3),
            "eval_total_seconds": round(self.total, 4),
            "num_evals": self.count,
            "eval_share": round(self.total / elapsed, 4) if elapsed > 0 else 0.0,
        }


class TimeBudget:
    """How far the run will be through ``max_time`` seconds of wall time at the end of the next
    step (``progress``; 1 = stop), if it lasts as long as the last one (``step_seconds``).

    The budget keeps back ``RESERVE_MARGIN`` times the expected cost of the final evaluation, so
    that training stops early enough for it and the run ends within ``max_time``; the
    learning-rate schedule ends with the last step. Progress never goes back, even when a
    cheaper evaluation than expected shrinks the reserve.
    """

    def __init__(self, max_time: float | None, clock: RunClock, evals: EvalTimes) -> None:
        self.max_time = max_time
        self.clock = clock
        self.evals = evals
        self.step_seconds = 0.0
        self._reached = 0.0

    @property
    def reserve(self) -> float:
        if self.max_time is None:
            return 0.0
        return min(RESERVE_MARGIN * self.evals.estimate, MAX_RESERVE_FRACTION * self.max_time)

    def progress(self) -> float:
        if self.max_time is None:
            return 0.0
        now = (self.clock.elapsed + self.step_seconds) / (self.max_time - self.reserve)
        self._reached = max(self._reached, now)
        return self._reached


def evaluation_due(share: float, evals: EvalTimes, elapsed: float) -> bool:
    """Without a fixed interval: validate now if that keeps the evaluations' time within
    ``share`` of the wall time (0: only the final validation)."""
    if share <= 0:
        return False
    return evals.total + evals.estimate <= share * (elapsed + evals.estimate)


def process_seconds() -> float:
    """Seconds since this process started (Linux: from ``/proc``), 0.0 where that is unknown.

    ``charlm-train`` starts a new run's clock at this figure, so ``--max-time`` bounds the whole
    process: importing, reading the corpus and the ``auto`` preset's speed probe count too.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            # the command name (field 2) may hold spaces; the fields after it are plain numbers
            fields = stat.read().rpartition(")")[2].split()
        with open("/proc/uptime", encoding="ascii") as uptime:
            since_boot = float(uptime.read().split()[0])
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in ticks
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, since_boot - started)


def startup_seconds(entered: float, whole_process: bool) -> float:
    """What a new run's clock starts at: the process's age when ``charlm-train`` is the
    process's command (``whole_process``), else the seconds since ``entered`` (a
    ``time.perf_counter()`` reading taken when the entry point was called in-process)."""
    since_entry = time.perf_counter() - entered
    return max(process_seconds(), since_entry) if whole_process else since_entry
