"""The scheduler: one worker thread per model runs every forward pass (continuous batching).

Each round of the worker loop:

1. admits queued completions while the batch has free rows (``max_batch_size`` counts rows reading
   their prompt and rows generating);
2. advances every text being scored by one chunk (``app.engine.scoring``): scoring is batched the
   same way, texts joining and leaving between rounds; and runs the next queued call whole (a
   function of the model that reads whole texts: pseudo-log-likelihood scoring, infilling);
3. advances the rows still reading their prompt by up to ``prompt_chunk`` ids, in one staircase
   forward (``app.engine.batching.advance_prompts``); rows that finish join the decode batch;
4. runs one decode step: every row draws its next character with its own settings and generator,
   rows that finished (length, stop, timeout) or were cancelled leave, the rest read their
   character in one forward of batch size R.

torch releases the GIL inside its kernels, so the event loop keeps serving HTTP meanwhile. Text
reaches the event loop through each request's ``Mailbox``, coalesced into few chunks
(``app.engine.publisher``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import torch

from app.engine.batching import DecodeBatch, advance_prompts, use_onednn
from app.engine.errors import EngineClosedError, EngineError, QueueFullError
from app.engine.params import FinishReason
from app.engine.publisher import Publisher, settle
from app.engine.requests import GenerationRequest, Phase, Request, RequestQueue
from app.engine.scoring import ScoreRounds, fail_scorings
from app.engine.stats import EngineCounters
from models.base import CharLM
from models.vocab import CharVocab

logger = logging.getLogger(__name__)


class Scheduler:
    """Owns the queues and the worker thread of one model."""

    def __init__(
        self,
        model: CharLM,
        vocab: CharVocab,
        counters: EngineCounters,
        *,
        max_batch_size: int,
        max_queue: int,
        prompt_chunk: int = 256,
        stream_interval_s: float = 0.02,
    ) -> None:
        self.model, self.vocab, self.counters = model, vocab, counters
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.prompt_chunk = prompt_chunk
        self._cond = threading.Condition()
        self._queue = RequestQueue(max_queue)
        self._closed = True
        self._abort = False
        self._thread: threading.Thread | None = None
        # worker-only state
        self._prompting: list[GenerationRequest] = []
        self._batch = DecodeBatch([])
        self._scoring = ScoreRounds(model, vocab, counters, max_rows=max_batch_size)
        self._publisher = Publisher(stream_interval_s)
        self._tokens = [vocab.token(i) for i in range(len(vocab))]  # id -> character
        self._onednn_default = True  # the process's setting, read when the thread starts

    # ------------------------------------------------------------------ event-loop side
    def start(self, name: str) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._closed, self._abort = False, False
            self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Take no new requests; those admitted go on."""
        with self._cond:
            self._closed = True

    def abort(self) -> None:
        """End everything now: running completions with ``"abort"``, the rest with
        ``EngineClosedError``."""
        with self._cond:
            self._closed, self._abort = True, True
            self._cond.notify()

    def join(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()
        self._thread = None

    def _free_rows(self) -> int:
        return self.max_batch_size - len(self._batch.rows) - len(self._prompting)

    def room(self) -> int:
        """Requests that could be taken now (``RequestQueue.room``)."""
        return self._queue.room(self._free_rows())

    def queue_full(self, pending: int = 0) -> QueueFullError | None:
        """The refusal one more request would get now (not counted), or None while ``room()``
        exceeds ``pending``, the requests already on their way in. Requests that free rows will
        take at the next round do not count against ``max_queue``: a burst that arrives while a
        round runs fills the free rows and the queue, not the queue alone."""
        if self.room() > pending:
            return None
        waiting = len(self._queue) + pending
        busy = waiting / self.max_batch_size + 1
        retry = min(60.0, max(1.0, busy * self.counters.mean_request_s))
        return QueueFullError(retry, f"{waiting} requests are waiting; retry later")

    def submit(self, requests: Sequence[Request]) -> None:
        """Queue requests (the completions of one request, or a single one): all of them, or
        none, refused with ``EngineClosedError`` or ``QueueFullError``."""
        with self._cond:
            for i, request in enumerate(requests):
                if self._closed:
                    self.counters.reject("closed")
                    error: EngineError = EngineClosedError("the model is shutting down")
                else:
                    refusal = self.queue_full()
                    if refusal is None:
                        self._queue.add(request)
                        continue
                    self.counters.reject("queue_full")
                    error = refusal
                for queued in requests[:i]:
                    self._queue.withdraw(queued)
                raise error
            self._cond.notify()

    def cancel(self, request: Request) -> None:
        """Forget a request (its client is gone): out of the queue, or out of the batch at the
        next step."""
        with self._cond:
            request.cancelled = True
            self._queue.withdraw(request)

    def withdraw(self, request: Request) -> bool:
        """Take a request out of the queue if it is still there (True); one already running is
        left alone (False)."""
        with self._cond:
            return self._queue.withdraw(request)

    def counts(self) -> tuple[int, int, int, int]:
        """Queued completions, scoring requests and calls; rows generating or reading a prompt."""
        with self._cond:
            queue = self._queue
            running = len(self._batch.rows) + len(self._prompting)
            return len(queue.generations), len(queue.scorings), len(queue.calls), running

    def busy(self) -> bool:
        with self._cond:
            return bool(self._queue or self._batch.rows or self._prompting or self._scoring.busy())

    # ------------------------------------------------------------------ worker thread
    def _run(self) -> None:
        self._onednn_default = bool(torch.backends.mkldnn.enabled)
        try:
            with torch.inference_mode():
                while self._next_round():
                    try:
                        self._round()
                    except Exception as exc:  # keep serving: fail what was running
                        logger.exception("engine round failed")
                        self._end_running(error=exc)
                    self._publish()
                self._end_running(error=None)
                self._end_queued()
                self._publish(force=True)
        finally:
            use_onednn(self._onednn_default)

    def _next_round(self) -> bool:
        """Wait for work and take what fits; False when the engine is aborting."""
        with self._cond:
            while True:
                if self._abort:
                    return False
                free = self._free_rows()
                while free > 0 and self._queue.generations:
                    request = self._queue.generations.popleft()
                    request.phase = Phase.RUNNING
                    self._prompting.append(request)
                    free -= 1
                self._scoring.take(self._queue.scorings)
                calls = self._queue.calls
                busy = bool(self._batch.rows or self._prompting or self._scoring.busy() or calls)
                if busy:
                    return True
                self._publish(force=True)
                use_onednn(self._onednn_default)  # idle: the rest of the process gets its setting
                self._cond.wait()

    def _round(self) -> None:
        self._scoring.start()
        if self._scoring.has_rows():
            use_onednn(self._onednn_default)
            self._scoring.advance()
        if self._queue.calls:
            use_onednn(self._onednn_default)
            self._call()
        if self._prompting:
            use_onednn(self._onednn_default)
            now = time.monotonic()
            for request in [r for r in self._prompting if r.cancelled or r.expired(now)]:
                self._prompting.remove(request)
                self._finish(request, None if request.cancelled else FinishReason.TIMEOUT, now)
            joined = advance_prompts(self.model, self._prompting, self.prompt_chunk)
            if joined:
                self._prompting = [r for r in self._prompting if r.prompt_pos < len(r.ids)]
                with self._cond:  # ``counts`` reads the batch from the event loop
                    self._batch.join(joined)
        if self._batch.rows:
            self._step()

    def _step(self) -> None:
        """One character for every row of the decode batch."""
        batch, now = self._batch, time.monotonic()
        if any(r.cancelled or r.expired(now) for r in batch.rows):
            self._drop_ended(now)
            if not batch.rows:
                return
        rows = batch.rows
        next_ids = batch.choose()
        keep = []
        generated = 0
        first_chars: list[float] = []
        tokens = self._tokens
        for i, (request, index) in enumerate(zip(rows, next_ids.tolist(), strict=True)):
            shown = request.text.append(tokens[index])
            generated += len(shown)
            request.last_char_at = now
            if request.first_char_at is None:
                request.first_char_at = now
                first_chars.append(now - request.admitted_at)
                self._publisher.urgent = True
            if request.text.stopped:
                self._finish(request, FinishReason.STOP, now, shown)
            elif len(request.text.chars) >= request.params.max_chars:
                self._finish(request, FinishReason.LENGTH, now, shown)
            else:
                keep.append(i)
                if shown:
                    self._publisher.deliver(request, shown)
        self.counters.step_done(len(rows), generated, first_chars)
        if len(keep) < len(rows):
            with self._cond:
                batch.keep(keep)
            if not keep:
                return
            next_ids = next_ids[keep]
        batch.read(self.model, next_ids)

    def _call(self) -> None:
        """Run the next queued call whole; its error goes to its caller, not to the round."""
        with self._cond:
            if not self._queue.calls:
                return
            request = self._queue.calls.popleft()
            request.phase = Phase.RUNNING
        try:
            result = request.fn(self.model, self.vocab)
        except Exception as exc:
            settle(request, error=exc)
        else:
            settle(request, result)
        with self.counters.lock:
            self.counters.request_done(time.monotonic() - request.admitted_at)

    def _drop_ended(self, now: float) -> None:
        """Take the rows cancelled or past their deadline out of the decode batch."""
        batch = self._batch
        keep = []
        for i, request in enumerate(batch.rows):
            if request.cancelled or request.expired(now):
                self._finish(request, None if request.cancelled else FinishReason.TIMEOUT, now)
            else:
                keep.append(i)
        with self._cond:
            batch.keep(keep)

    def _finish(
        self, request: GenerationRequest, reason: FinishReason | None, now: float, shown: str = ""
    ) -> None:
        """End one completion: send ``shown`` (new text not yet delivered), the text held back
        and the finish reason; count it. ``reason`` None: cancelled (nobody is listening)."""
        request.phase = Phase.DONE
        text = shown + request.text.release()
        if reason is not None:
            self._publisher.deliver(request, text, reason)
            self._publisher.urgent = True
        per_char = None
        chars = len(request.text.chars)
        if request.first_char_at is not None and chars > 1:
            per_char = (request.last_char_at - request.first_char_at) / (chars - 1)
        self.counters.completion_done(
            "cancelled" if reason is None else reason.value,
            len(text) - len(shown),
            now - request.admitted_at,
            per_char,
        )

    def _publish(self, force: bool = False) -> None:
        """Hand what is ready to the event loops (see ``app.engine.publisher``)."""
        self._publisher.publish(len(self._batch.rows), force)

    def _end_running(self, error: BaseException | None) -> None:
        """End the work in progress: completions with ``"abort"`` (or ``error``, raised in their
        stream), scoring requests with ``error``."""
        now = time.monotonic()
        with self._cond:
            running = self._prompting + self._batch.rows
            self._prompting = []
            self._batch = DecodeBatch([])
        for request in running:
            if request.cancelled:
                continue
            if error is None:
                self._finish(request, FinishReason.ABORT, now)
            else:
                request.phase = Phase.DONE
                self._publisher.fail(request, error, request.text.shown)
        self._scoring.fail_all(error or EngineClosedError("the model is shutting down"))

    def _end_queued(self) -> None:
        """Refuse what never started: the engine is closing (``EngineClosedError``)."""
        with self._cond:
            generations, scorings, calls = self._queue.drain()
        closed = EngineClosedError("the model shut down before the request started")
        for request in generations:
            request.phase = Phase.DONE
            self._publisher.fail(request, closed, 0)
        fail_scorings(scorings, closed)
        for call in calls:
            settle(call, error=closed)
