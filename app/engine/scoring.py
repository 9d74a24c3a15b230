"""Scoring by continuous batching: the scheduler's scoring rounds and the rows they advance.

Every text is a row that reads ``BOS``, its context and itself, a chunk of up to ``max_steps`` ids
per round, beside every other text being scored. Rows join and leave between rounds as completions
do, so a request never waits for a batch to form and a long text never holds back short ones (nor
the completions' steps) for more than one round. A round is one forward of the padded batch
(``round_ends``). The figures are those of ``models.scoring.score_id_sequences`` for the same text
alone: the same state is carried from chunk to chunk, and no row whose state is kept reads
padding.

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

from app.engine.publisher import resolve_all
from app.engine.requests import Phase, ScoreRequest
from app.engine.stats import EngineCounters
from models.base import CharLM, State
from models.scoring import TextScore, target_logprobs
from models.vocab import BOS_ID, UNK_ID, CharVocab


@dataclass(eq=False)
class ScoreRow:
    """One text of a scoring request: ids are ``BOS, context, text``; every id after ``BOS`` is a
    target, the text's targets start at ``first``."""

    request: ScoreRequest
    index: int  # of the text in its request
    ids: np.ndarray  # (T,)
    first: int
    logprobs: np.ndarray  # (T - 1,) float32, filled as the row advances
    top_ids: np.ndarray | None = None  # (T - 1, k) int64
    top_logprobs: np.ndarray | None = None  # (T - 1, k) float32
    pos: int = 0  # ids read so far
    state: State | None = None  # after ``ids[:pos]``, without the batch dim; None: initial

    @property
    def done(self) -> bool:
        return self.pos >= len(self.ids) - 1

    def result(self) -> TextScore:
        text = self.ids[1 + self.first :]
        return TextScore(
            logprobs=torch.from_numpy(self.logprobs[self.first :]),
            num_unknown=int(np.count_nonzero(text == UNK_ID)),
            top_ids=None if self.top_ids is None else torch.from_numpy(self.top_ids[self.first :]),
            top_logprobs=(
                None
                if self.top_logprobs is None
                else torch.from_numpy(self.top_logprobs[self.first :])
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
        row = ScoreRow(request, index, ids, len(context), np.zeros(targets, np.float32))
        if k:
            row.top_ids = np.zeros((targets, k), np.int64)
            row.top_logprobs = np.zeros((targets, k), np.float32)
        if not text:
            row.pos = targets
        rows.append(row)
    return rows


def steps_per_round(rows: int, budget: int = 4096) -> int:
    """Ids each row reads in one round: about ``budget`` row-steps, 16 to 64 per row (short
    rounds let texts that arrive meanwhile join soon, and keep completions' steps flowing); a
    round may be a quarter longer (``chunk_end``, ``round_ends``)."""
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


def round_ends(rows: Sequence[ScoreRow], max_steps: int) -> list[int]:
    """Where each row's chunk ends this round. A row that finishes reads the rest of its text
    (``chunk_end``); every other row reads the round's width, its longest chunk. So every row
    whose state is kept reads the same number of ids, and one padded forward serves the round:
    only rows that finish read padding, and their state is dropped. (A row that goes on has
    more than ``max_steps + max_steps // 4`` ids left, at least the width: it does not finish.)"""
    ends = [chunk_end(r, max_steps) for r in rows]
    width = max(end - r.pos for r, end in zip(rows, ends, strict=True))
    return [
        end if end == len(r.ids) - 1 else r.pos + width for r, end in zip(rows, ends, strict=True)
    ]


def advance_scoring(model: CharLM, rows: Sequence[ScoreRow], max_steps: int) -> int:
    """Read the next chunk of every row (``round_ends``) in one forward of the padded batch;
    returns the ids read in all.

    The round's tensor work is a fixed number of operations whatever the number of rows: the
    rows' states are stacked and split once (a row keeps a view of the round's state), and the
    figures are copied into the rows' arrays by numpy. Slicing and copying tensors row by row
    cost about 2 ms of the model thread's 75 ms for 64 texts of 200 characters (``tiny``)."""
    rows = [r for r in rows if not r.done]
    if not rows:
        return 0
    ends = round_ends(rows, max_steps)
    lengths = [end - r.pos for r, end in zip(rows, ends, strict=True)]
    width = max(lengths)
    inputs = np.full((len(rows), width), BOS_ID, dtype=np.int64)  # (R, W), padding trails
    targets = np.zeros((len(rows), width), dtype=np.int64)  # the next ids; 0 under padding
    for i, (row, end) in enumerate(zip(rows, ends, strict=True)):
        inputs[i, : end - row.pos] = row.ids[row.pos : end]
        targets[i, : end - row.pos] = row.ids[row.pos + 1 : end + 1]
    device = model.device
    logits, state = model(torch.from_numpy(inputs).to(device), stack_states(model, rows))
    k_max = max((r.top_ids.shape[1] for r in rows if r.top_ids is not None), default=0)
    picked_t, top_ids_t, top_logprobs_t = target_logprobs(
        logits, torch.from_numpy(targets).to(device), k_max
    )
    picked = picked_t.cpu().numpy()  # (R, W)
    top_ids = None if top_ids_t is None else top_ids_t.cpu().numpy()  # (R, W, k_max)
    top_logprobs = None if top_logprobs_t is None else top_logprobs_t.cpu().numpy()
    row_states = list(zip(*(s.unbind(0) for s in state), strict=True))  # R tuples of views
    for i, (row, end, t) in enumerate(zip(rows, ends, lengths, strict=True)):
        row.logprobs[row.pos : end] = picked[i, :t]
        if top_ids is not None and row.top_ids is not None and row.top_logprobs is not None:
            assert top_logprobs is not None
            k = row.top_ids.shape[1]
            row.top_ids[row.pos : end] = top_ids[i, :t, :k]
            row.top_logprobs[row.pos : end] = top_logprobs[i, :t, :k]
        row.pos = end
        row.state = None if row.done else row_states[i]
    return sum(lengths)


def stack_states(model: CharLM, rows: Sequence[ScoreRow]) -> State:
    """The batch state of ``rows`` (the initial state where a row has none), one stack per
    tensor of the state."""
    fresh = tuple(s[0] for s in model.initial_state(1, model.device))
    per_row = [r.state if r.state is not None else fresh for r in rows]
    return tuple(torch.stack(parts) for parts in zip(*per_row, strict=True))


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
