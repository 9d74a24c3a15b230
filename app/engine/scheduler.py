"""The scheduler: one worker thread per model runs every forward pass (continuous batching).

Each round of the worker loop:

1. admits queued completions while the batch has free rows (``max_batch_size`` counts rows reading
   their prompt and rows generating);
2. advances every text being scored by one chunk (``app.engine.scoring``): scoring is batched the
   same way, texts joining and leaving between rounds; and runs the next queued call whole (a
   function of the model that reads whole texts: pseudo-log-likelihood scoring, infilling);
3. advances the rows still reading their prompt by up to ``prompt_chunk`` ids, in one staircase
   forward (``app.engine.batching.advance_prompts``); rows that finish join the decode batch;
4. runs one decode step (``app.engine.decode``): every row draws its next character with its own
   settings and seed, and reads it, in whole-batch tensor work; now and then the new characters
   become text, and rows that finished (length, stop, timeout) or were cancelled leave.

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

from app.engine.batching import advance_prompts, use_onednn
from app.engine.decode import Decoder
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
        stream_interval_s: float = 0.004,
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
        self._scoring = ScoreRounds(model, vocab, counters, max_rows=max_batch_size)
        self._publisher = Publisher(stream_interval_s)
        self._decoder = Decoder(model, vocab, counters, self._publisher, self._cond)
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
        return self.max_batch_size - len(self._decoder.rows) - len(self._prompting)

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
            self._decoder.ended = True
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
            running = len(self._decoder.rows) + len(self._prompting)
            return len(queue.generations), len(queue.scorings), len(queue.calls), running

    def busy(self) -> bool:
        with self._cond:
            return bool(
                self._queue or self._decoder.rows or self._prompting or self._scoring.busy()
            )

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
                    self._publisher.publish()
                self._end_running(error=None)
                self._end_queued()
                self._publisher.publish()
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
                busy = bool(self._decoder.rows or self._prompting or self._scoring.busy() or calls)
                if busy:
                    return True
                self._publisher.publish()
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
                reason = None if request.cancelled else FinishReason.TIMEOUT
                self._decoder.finish(request, reason, now)
            joined = advance_prompts(self.model, self._prompting, self.prompt_chunk)
            if joined:
                self._prompting = [r for r in self._prompting if r.prompt_pos < len(r.ids)]
                self._decoder.join(joined)
        if self._decoder.rows:
            self._decoder.step()

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

    def _end_running(self, error: BaseException | None) -> None:
        """End the work in progress: completions with ``"abort"`` (or ``error``, raised in their
        stream), scoring requests with ``error``."""
        self._decoder.end_all(error)
        now = time.monotonic()
        with self._cond:
            prompting, self._prompting = self._prompting, []
        for request in prompting:
            if request.cancelled:
                continue
            if error is None:
                self._decoder.finish(request, FinishReason.ABORT, now)
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
