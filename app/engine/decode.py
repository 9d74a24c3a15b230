"""The decode step: every generating row draws its next character and reads it, as whole-batch
tensor work (``app.engine.decode_batch``); what happens to a row only now and then is handled
apart, for the rows concerned.

Per step, in Python, there is no loop over rows: ids go into the batch's id buffer. Rows are
decoded into text (``_settle``) when they draw their first character (shown at once), when one of
them may have reached ``max_chars`` (the batch knows at which step), when the buffer is full,
and otherwise every ``Publisher.interval(rows)`` (a few ms, longer for many rows): then stop
strings are looked for (only in rows that have some, only over the new characters and what was
held back), finished rows leave with their ``FinishReason`` and the text goes to the publisher.
A cancelled request or a deadline is noticed by one flag and the batch's earliest deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from app.engine.decode_batch import BLOCK, DecodeBatch
from app.engine.params import FinishReason
from app.engine.publisher import Publisher
from app.engine.requests import GenerationRequest, Phase
from app.engine.stats import EngineCounters
from models.base import CharLM, State
from models.vocab import CharVocab


class Decoder:
    """The decode batch of one model's worker thread, and how its rows end.

    ``lock`` is the scheduler's: rows join and leave under it, so that the event loop reads a
    consistent count. ``ended`` is set (under it) when a running request is cancelled.
    """

    def __init__(
        self,
        model: CharLM,
        vocab: CharVocab,
        counters: EngineCounters,
        publisher: Publisher,
        lock: threading.Condition,
        block: int = BLOCK,
    ) -> None:
        self.model, self.vocab, self.counters = model, vocab, counters
        self.publisher, self.lock, self.block = publisher, lock, block
        self.batch = DecodeBatch(vocab, model.device, block)
        self.ended = False
        self._decoded_at = 0.0  # when every row's text was last decoded

    @property
    def rows(self) -> list[GenerationRequest]:
        return self.batch.rows

    def join(self, joined: Sequence[tuple[GenerationRequest, State, Tensor]]) -> None:
        """Rows that have read their prompt join (``advance_prompts``' results)."""
        with self.lock:
            self.batch.join(joined)

    def step(self) -> None:
        """One character for every row."""
        batch, now = self.batch, time.monotonic()
        if self.ended or now >= batch.deadline:
            self._drop_ended(now)
            if not batch.rows:
                return
        rows = len(batch)
        batch.choose()
        chars, first_chars = 0, []
        if batch.any_fresh:  # rows at their first character: shown at once
            fresh = batch.take_fresh()
            for i in fresh.tolist():
                request = batch.rows[i]
                request.first_char_at = now
                first_chars.append(now - request.admitted_at)
            chars += self._settle(fresh, now)
        if batch.col >= batch.length_due:
            chars += self._settle(batch.reached_length(), now)
        if batch.full or now - self._decoded_at >= self.publisher.interval(rows):
            chars += self._settle(np.arange(len(batch)), now)
            self._decoded_at = now
            if batch.full:
                batch.renew()
        self.counters.step_done(rows, chars, first_chars)
        if batch.rows:
            batch.read(self.model)

    def finish(
        self, request: GenerationRequest, reason: FinishReason | None, now: float, shown: str = ""
    ) -> None:
        """End one completion: send ``shown`` (new text not yet delivered), the text held back
        and the finish reason; count it. ``reason`` None: cancelled (nobody is listening)."""
        request.phase = Phase.DONE
        text = shown + request.text.release()
        if reason is not None:
            self.publisher.deliver(request, text, reason)
        per_char = None
        chars = request.text.length
        if request.first_char_at is not None and chars > 1:
            per_char = (now - request.first_char_at) / (chars - 1)
        self.counters.completion_done(
            "cancelled" if reason is None else reason.value,
            len(text) if reason is not None else 0,
            now - request.admitted_at,
            per_char,
        )

    def end_all(self, error: BaseException | None) -> None:
        """End every row: with ``"abort"`` and the text generated until now, or with ``error``
        (raised in its stream; the batch may be broken, so nothing more is decoded)."""
        if error is None:
            now = time.monotonic()
            self._drop_ended(now, expire=False)
            self._settle(np.arange(len(self.batch)), now, FinishReason.ABORT)
            return
        with self.lock:
            running = self.batch.rows
            self.batch = DecodeBatch(self.vocab, self.model.device, self.block)
        for request in running:
            if not request.cancelled:
                request.phase = Phase.DONE
                self.publisher.fail(request, error, request.text.shown)

    # ------------------------------------------------------------------ rare, per row
    def _settle(self, index: np.ndarray, now: float, reason: FinishReason | None = None) -> int:
        """Decode rows ``index`` and deliver their new text; the rows that generated a stop
        string or reached ``max_chars`` end (and, given ``reason``, every one of them) and leave.
        Returns the characters delivered to rows that go on."""
        batch = self.batch
        if not len(index):
            return 0
        delivered, ended = 0, []
        produced = batch.produced()[index].tolist()
        for i, new, made in zip(index.tolist(), batch.texts(index), produced, strict=True):
            request = batch.rows[i]
            shown = request.text.extend(new)
            end = reason
            if request.text.stopped:
                end = FinishReason.STOP
            elif made >= request.params.max_chars:
                end = FinishReason.LENGTH
            if end is None:
                if shown:
                    self.publisher.deliver(request, shown)
                    delivered += len(shown)
            else:
                ended.append(i)
                self.finish(request, end, now, shown)
        if ended:
            with self.lock:
                batch.keep(np.setdiff1d(np.arange(len(batch)), ended))
        return delivered

    def _drop_ended(self, now: float, expire: bool = True) -> None:
        """Take the rows cancelled (and, with ``expire``, those past their deadline) out."""
        batch = self.batch
        with self.lock:
            self.ended = False
            cancelled = [i for i, request in enumerate(batch.rows) if request.cancelled]
            gone = [batch.rows[i] for i in cancelled]
            if cancelled:
                batch.keep(np.setdiff1d(np.arange(len(batch)), cancelled))
        for request in gone:
            self.finish(request, None, now)
        if expire:
            self._settle(np.flatnonzero(batch.deadlines <= now), now, FinishReason.TIMEOUT)
