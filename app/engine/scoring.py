"""Scoring by continuous batching: the scheduler's scoring rounds and the rows they advance.

Every text is a row that reads ``BOS``, its context and itself, a chunk of up to ``max_steps`` ids
per round, beside every other text being scored. Rows join and leave between rounds as completions
do, so a request never waits for a batch to form and a long text never holds back short ones (nor
the completions' steps) for more than one round. The figures are those of
``models.scoring.score_id_sequences`` for the same text alone: the same state is carried from chunk
to chunk, and no row ever reads padding.

Requests are taken from the scheduler's queue while fewer texts than a batch are in hand; each
round turns the requests just taken into rows, advances up to a batch of rows by one chunk and
completes the requests whose texts are all scored (``ScoreRounds``). Used by the worker thread
only, except ``ScoreRounds.busy``, which the scheduler reads under its own lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from app.engine.batching import staircase
from app.engine.publisher import resolve_all
from app.engine.requests import Phase, ScoreRequest
from app.engine.stats import EngineCounters
from models.base import CharLM, State
from models.scoring import TextScore
from models.vocab import BOS_ID, UNK_ID, CharVocab


@dataclass(eq=False)
class ScoreRow:
    """One text of a scoring request: ids are ``BOS, context, text``; every id after ``BOS`` is a
    target, the text's targets start at ``first``."""

    request: ScoreRequest
    index: int  # of the text in its request
    ids: np.ndarray  # (T,)
    first: int
    logprobs: Tensor  # (T - 1,) float32, filled as the row advances
    top_ids: Tensor | None = None  # (T - 1, k) long
    top_logprobs: Tensor | None = None  # (T - 1, k) float32
    pos: int = 0  # ids read so far
    state: State | None = None  # after ``ids[:pos]``; None: the initial state

    @property
    def done(self) -> bool:
        return self.pos >= len(self.ids) - 1

    def result(self) -> TextScore:
        text = self.ids[1 + self.first :]
        return TextScore(
            logprobs=self.logprobs[self.first :].clone(),
            num_unknown=int(np.count_nonzero(text == UNK_ID)),
            top_ids=None if self.top_ids is None else self.top_ids[self.first :].clone(),
            top_logprobs=(
                None if self.top_logprobs is None else self.top_logprobs[self.first :].clone()
            ),
        )


def make_rows(request: ScoreRequest, vocab: CharVocab, vocab_size: int) -> list[ScoreRow]:
    """One row per text; a text with no characters is done at once (its context unread)."""
    context = vocab.encode_array(request.context)
    k = min(request.top_k, vocab_size)
    rows = []
    for index, text in enumerate(request.texts):
        ids = np.concatenate([[BOS_ID], context, vocab.encode_array(text)]).astype(np.int64)
        targets = len(ids) - 1
        row = ScoreRow(request, index, ids, len(context), torch.zeros(targets))
        if k:
            row.top_ids = torch.zeros(targets, k, dtype=torch.long)
            row.top_logprobs = torch.zeros(targets, k)
        if not text:
            row.pos = targets
        rows.append(row)
    return rows


def steps_per_round(rows: int, budget: int = 4096) -> int:
    """Ids each row reads in one round: about ``budget`` row-steps, 16 to 64 per row (short
    rounds let texts that arrive meanwhile join soon, and keep completions' steps flowing); a
    row's last chunk may be a quarter longer (``chunk_end``)."""
    return max(16, min(64, budget // max(1, rows)))


def chunk_end(row: ScoreRow, max_steps: int) -> int:
    """Where the row's next chunk ends (ids read by then): ``max_steps`` further, or the end of
    the row when at most a quarter of ``max_steps`` would be left after that. A round of its own
    for a short remainder costs a forward and its bookkeeping for a few steps, and a burst of
    texts that share their rounds then ends with a round of just those few steps (200 characters
    at 64 per round: 64, 64, 72 instead of 64, 64, 64, 8)."""
    last = len(row.ids) - 1  # the last id is only a target
    end = row.pos + max_steps
    return last if last - end <= max_steps // 4 else end


def advance_scoring(model: CharLM, rows: Sequence[ScoreRow], max_steps: int) -> int:
    """Read the next chunk of every row (``chunk_end``); returns the ids read in all."""
    rows = [r for r in rows if not r.done]
    if not rows:
        return 0
    segments = [r.ids[r.pos : chunk_end(r, max_steps)] for r in rows]
    results = staircase(model, segments, [r.state for r in rows])
    # all rows' positions at once: (sum t, V) log-probabilities, targets are the next ids
    logprobs = torch.log_softmax(torch.cat([lg for _, lg in results]).float(), dim=-1)
    targets = np.concatenate(
        [r.ids[r.pos + 1 : r.pos + 1 + len(s)] for r, s in zip(rows, segments, strict=True)]
    )
    picked = logprobs.gather(-1, torch.from_numpy(targets).to(logprobs.device).unsqueeze(-1))
    picked = picked.squeeze(-1).cpu()
    k_max = max((r.top_ids.shape[1] for r in rows if r.top_ids is not None), default=0)
    top = logprobs.topk(k_max, dim=-1) if k_max else None
    offset = 0
    for row, segment, (state, _) in zip(rows, segments, results, strict=True):
        t = len(segment)
        row.logprobs[row.pos : row.pos + t] = picked[offset : offset + t]
        if top is not None and row.top_ids is not None and row.top_logprobs is not None:
            k = row.top_ids.shape[1]
            row.top_logprobs[row.pos : row.pos + t] = top.values[offset : offset + t, :k].cpu()
            row.top_ids[row.pos : row.pos + t] = top.indices[offset : offset + t, :k].cpu()
        row.pos += t
        row.state = None if row.done else state
        offset += t
    return offset


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
