"""Counters and latency histograms an engine keeps about itself, readable from any thread.

The engine knows nothing of Prometheus: ``app.metrics`` turns these into metric families.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass

# seconds from admission to the first generated character
TTFC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# seconds per generated character after the first, per request
TPOC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# rows in one decode step
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# why an engine refuses a request
REJECT_REASONS = ("queue_full", "closed", "timeout")


@dataclass(frozen=True)
class HistogramSnapshot:
    """Cumulative counts per upper bound (Prometheus' ``le``), with the sum and count."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    total: float
    count: int


class Histogram:
    """A fixed-bucket histogram; ``observe`` is cheap enough for the scheduler's hot loop."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self._total += value
        self._count += 1

    def snapshot(self) -> HistogramSnapshot:
        cumulative = []
        running = 0
        for c in self._counts[:-1]:
            running += c
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), self._total, self._count)


class EngineCounters:
    """Everything an engine counts. Writers hold ``lock``; readers take ``snapshot``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chars_generated = 0
        self.chars_scored = 0
        self.score_rounds = 0  # scoring rounds (one chunk of every text being scored)
        self.steps = 0
        self.finished: Counter[str] = Counter()  # completions by finish reason
        self.scored_requests = 0
        self.rejected: Counter[str] = Counter()  # by reason: queue_full, closed, timeout
        self.ttfc = Histogram(TTFC_BUCKETS)
        self.time_per_char = Histogram(TPOC_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        # mean seconds a request spends in the engine, for Retry-After (exponential average)
        self.mean_request_s = 1.0

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejected[reason] += 1

    def request_done(self, seconds: float) -> None:
        """Called under ``lock``."""
        self.mean_request_s += 0.1 * (seconds - self.mean_request_s)

    def step_done(self, rows: int, chars: int, first_chars: list[float]) -> None:
        """A decode step of ``rows`` rows showed ``chars`` new characters; ``first_chars``: the
        seconds to their first character of the rows that began."""
        with self.lock:
            self.steps += 1
            self.chars_generated += chars
            self.batch_size.observe(rows)
            for seconds in first_chars:
                self.ttfc.observe(seconds)

    def completion_done(
        self, reason: str, chars: int, seconds: float, per_char: float | None
    ) -> None:
        """A completion ended (``reason``: its finish reason, or ``cancelled``) after
        ``seconds`` in the engine, showing ``chars`` more characters at its end;
        ``per_char``: seconds per character after its first, when it has more than one."""
        with self.lock:
            self.finished[reason] += 1
            self.chars_generated += chars
            self.request_done(seconds)
            if per_char is not None:
                self.time_per_char.observe(per_char)

    def stats(
        self, queued: dict[str, int], running: int, limits: dict[str, int]
    ) -> dict[str, float]:
        """Plain figures: requests queued by kind (``queued_<kind>`` and their sum,
        ``queue_depth``), ``running_rows``, the engine's ``limits`` and every counter."""
        with self.lock:
            stats: dict[str, float] = {
                "queue_depth": sum(queued.values()),
                **{f"queued_{kind}": count for kind, count in queued.items()},
                "running_rows": running,
                **limits,
                "steps": self.steps,
                "chars_generated": self.chars_generated,
                "chars_scored": self.chars_scored,
                "completions": sum(self.finished.values()),
                "scored_requests": self.scored_requests,
                "score_rounds": self.score_rounds,
            }
            for reason in REJECT_REASONS:
                stats[f"rejected_{reason}"] = self.rejected[reason]
            for reason, count in self.finished.items():
                stats[f"finished_{reason}"] = count
        return stats

    def histograms(self) -> dict[str, HistogramSnapshot]:
        """Time to first character, time per output character and rows per decode step."""
        with self.lock:
            return {
                "time_to_first_char_seconds": self.ttfc.snapshot(),
                "time_per_output_char_seconds": self.time_per_char.snapshot(),
                "decode_batch_rows": self.batch_size.snapshot(),
            }
