"""The scheduler's scoring rounds: the scoring requests in hand and the texts they are cut into.

Requests are taken from the scheduler's queue while fewer texts than a batch are in hand; each
round turns the requests just taken into rows (``app.score_rows``), advances up to a batch of rows
by one chunk and completes the requests whose texts are all scored. Used by the worker thread only,
except ``busy``, which the scheduler reads under its own lock.
"""

from __future__ import annotations

import time
from collections import deque

from app.engine_requests import Phase, ScoreRequest
from app.engine_stats import EngineCounters
from app.publisher import resolve_all
from app.score_rows import ScoreRow, advance_scoring, make_rows, steps_per_round
from models.base import CharLM
from models.vocab import CharVocab


def fail_scorings(scorings: list[ScoreRequest], error: BaseException) -> None:
    """End scoring requests with ``error``, raised on their event loops."""
    for scoring in scorings:
        scoring.phase = Phase.DONE
    resolve_all(scorings, error)


class ScoreRounds:
    """Scoring requests taken from the queue, texts being scored and texts waiting for a row."""

    def __init__(
        self, model: CharLM, vocab: CharVocab, counters: EngineCounters, *, max_rows: int
    ) -> None:
        self.model, self.vocab, self.counters = model, vocab, counters
        self.max_rows = max_rows  # texts scored in one round
        self._taken: list[ScoreRequest] = []  # taken from the queue, not yet rows
        self._rows: list[ScoreRow] = []  # texts being scored
        self._backlog: deque[ScoreRow] = deque()  # texts taken, waiting for a row

    def take(self, queue: deque[ScoreRequest]) -> None:
        """Take requests from ``queue`` while fewer texts than a batch are in hand, so the queue
        (bounded) holds the rest, not an unbounded backlog."""
        in_hand = len(self._rows) + len(self._backlog)
        while queue and in_hand < self.max_rows:
            request = queue.popleft()
            request.phase = Phase.RUNNING
            self._taken.append(request)
            in_hand += len(request.texts)

    def busy(self) -> bool:
        """Whether any request taken is not yet complete."""
        return bool(self._taken or self._rows or self._backlog)

    def has_rows(self) -> bool:
        """Whether a round has texts to read (after ``start``)."""
        return bool(self._rows or self._backlog)

    def start(self) -> None:
        """Turn the requests just taken into rows (texts without characters: done)."""
        if not self._taken:
            return
        taken, self._taken = self._taken, []
        vocab_size = self.model.config.vocab_size
        for request in taken:
            request.results = [None] * len(request.texts)
            request.remaining = len(request.texts)
            self._backlog.extend(make_rows(request, self.vocab, vocab_size))
        empty = [r for r in taken if not r.texts]
        for request in empty:
            request.phase = Phase.DONE
        resolve_all(empty)

    def advance(self) -> None:
        """Advance every text being scored by one chunk; complete the requests all done."""
        rows = [r for r in self._rows if not r.request.cancelled]
        while self._backlog and len(rows) < self.max_rows:
            row = self._backlog.popleft()
            if not row.request.cancelled:
                rows.append(row)
        read = advance_scoring(self.model, rows, steps_per_round(len(rows)))
        done: list[ScoreRequest] = []
        for row in rows:
            if row.done:
                request = row.request
                request.results[row.index] = row.result()
                request.remaining -= 1
                if request.remaining == 0:
                    request.phase = Phase.DONE
                    done.append(request)
        self._rows = [r for r in rows if not r.done]
        now = time.monotonic()
        with self.counters.lock:
            self.counters.chars_scored += read
            self.counters.score_rounds += 1
            self.counters.scored_requests += len(done)
            for request in done:
                self.counters.request_done(now - request.admitted_at)
        resolve_all(done)

    def fail_all(self, error: BaseException) -> None:
        """End every request in hand with ``error`` and forget its rows."""
        rows = self._rows + list(self._backlog)
        self._rows, self._backlog = [], deque()
        scorings = {id(r.request): r.request for r in rows if r.request.phase is not Phase.DONE}
        scorings.update({id(r): r for r in self._taken})
        self._taken = []
        fail_scorings(list(scorings.values()), error)
