"""The scoring job on one machine: records in, batched scoring, score lines out, in input order.

Records are taken a window at a time (``take_windows``: at most ``window_records`` records or
``window_chars`` characters), so memory stays bounded whatever the input's size. Within a window
the texts are sorted by length and cut into batches of similar lengths (``plan_batches``: at most
``batch_size`` rows and ``batch_chars`` padded positions), each scored in one padded forward by
``models.scoring.score_id_sequences``; so little is spent on padding, and the scores are those of
``models.scoring.score_texts`` for each text alone. The window's lines are then written in input
order, its bad records first (see ``training.score_output`` for why that order makes ``--resume``
exact).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.base import CharLM
from models.scoring import TextScore, score_id_sequences
from models.vocab import CharVocab
from training.records import BadRecord, Record
from training.score_output import LineSink, error_line, score_line

logger = logging.getLogger(__name__)

Item = Record | BadRecord
Lines = list[dict[str, Any]]


@dataclass(frozen=True)
class ScoreSettings:
    """How records are grouped: windows bound memory, batches are what one forward reads."""

    batch_size: int = 64
    batch_chars: int = 1 << 20  # rows x longest text in a batch
    window_records: int = 4096
    window_chars: int = 4 << 20
    keep_text: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "batch_chars", "window_records", "window_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class ScoreTotals:
    """What a job has done so far."""

    records: int = 0  # scored
    errors: int = 0  # bad records
    chars: int = 0  # characters scored
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def chars_per_s(self) -> float:
        return self.chars / max(self.seconds, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        seconds = round(self.seconds, 3)
        rate = round(self.chars_per_s, 1)
        return {
            "records": self.records,
            "errors": self.errors,
            "chars": self.chars,
            "seconds": seconds,
            "chars_per_s": rate,
        }


def check_scorable(model: CharLM) -> None:
    """The job scores left to right; a model that sees the future has no such probability."""
    if not model.can_generate:
        raise ValueError(
            f"architecture {model.config.arch!r} reads both directions and has no left-to-right"
            " probability to score; use a causal model"
        )


def take_windows(items: Iterable[Item], settings: ScoreSettings) -> Iterator[list[Item]]:
    """Consecutive windows of ``items``; none is read before the previous window is handed on."""
    window: list[Item] = []
    chars = 0
    for item in items:
        window.append(item)
        if isinstance(item, Record):
            chars += len(item.text)
        if len(window) >= settings.window_records or chars >= settings.window_chars:
            yield window
            window, chars = [], 0
    if window:
        yield window


def plan_batches(lengths: Sequence[int], settings: ScoreSettings) -> list[list[int]]:
    """Indices of ``lengths`` in batches of similar lengths, longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            longest = lengths[current[0]] + 1  # BOS is read too
            full = len(current) >= settings.batch_size
            if full or (len(current) + 1) * longest > settings.batch_chars:
                batches.append(current)
                current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def score_window(
    model: CharLM,
    vocab: CharVocab,
    records: Sequence[Record],
    settings: ScoreSettings,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[TextScore]:
    """Scores of ``records`` in their order; ``on_batch(records, chars)`` after each batch."""
    ids = [vocab.encode_array(r.text) for r in records]
    scores: list[TextScore | None] = [None] * len(records)
    for batch in plan_batches([len(x) for x in ids], settings):
        results = score_id_sequences(model, [ids[i] for i in batch])
        for i, result in zip(batch, results, strict=True):
            scores[i] = result
        if on_batch is not None:
            on_batch(len(batch), sum(len(ids[i]) for i in batch))
    assert all(s is not None for s in scores)
    return [s for s in scores if s is not None]


def score_lines(
    model: CharLM,
    vocab: CharVocab,
    items: Iterable[Item],
    position_key: str,
    settings: ScoreSettings,
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Lines, Lines]]:
    """``(score lines, error lines)`` of each window of ``items``, in input order."""
    for window in take_windows(items, settings):
        records = [x for x in window if isinstance(x, Record)]
        errors = [error_line(x, position_key) for x in window if isinstance(x, BadRecord)]
        scores = score_window(model, vocab, records, settings, on_batch)
        lines = [
            score_line(r, s, position_key, settings.keep_text)
            for r, s in zip(records, scores, strict=True)
        ]
        yield lines, errors


def run_local(
    model: CharLM,
    vocab: CharVocab,
    items: Iterable[Item],
    output: LineSink,
    errors: LineSink,
    position_key: str,
    settings: ScoreSettings,
    progress: Any = None,
) -> ScoreTotals:
    """Score ``items`` into ``output`` (bad records into ``errors``); ``progress`` is a
    ``training.score_progress.Progress`` or None."""
    check_scorable(model)
    totals = ScoreTotals()

    def on_batch(records: int, chars: int) -> None:
        totals.records += records
        totals.chars += chars
        if progress is not None:
            progress.update(totals)

    for lines, bad in score_lines(model, vocab, items, position_key, settings, on_batch):
        errors.write(bad)  # first: see training.score_output on resuming
        output.write(lines)
        totals.errors += len(bad)
        if progress is not None:
            progress.update(totals, window_done=True)
    logger.info(
        "scored %d records (%d characters), %d bad", totals.records, totals.chars, totals.errors
    )
    return totals
