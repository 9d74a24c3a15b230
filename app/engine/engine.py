"""The per-model inference engine: the only place where the server touches tensors.

Routes call ``ModelEngine.score`` and ``ModelEngine.generate(prompt, params)`` (the settings of a
generation in one ``app.engine.params.GenerationParams``); a scheduler thread per model runs
every forward pass (``app.engine.scheduler``): completions join the running batch at the next step
and leave it when done; texts to score are read a chunk per round beside each other, joining and
leaving between rounds the same way (``app.engine.scoring``). On the event loop's side,
``generate`` follows a request's completions through ``app.engine.generation``.

Limits: ``max_batch_size`` rows per step (completions generating or reading their prompt; and,
separately, texts being scored), ``max_queue`` requests waiting (beyond it ``QueueFullError``
at once, with a ``retry_after`` estimate), ``request_timeout_s`` per request (a request still
queued then raises ``RequestTimeoutError``; a completion already running ends with
``finish_reason == "timeout"``).

A completion ends with a ``FinishReason``: ``length``, ``stop``, ``timeout`` (see above) or
``abort`` (the engine stopped before the completion ended; the text is what was generated until
then). A request still queued when the engine stops raises ``EngineClosedError``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from functools import partial
from typing import Any, TypeVar, cast

import numpy as np

from app.engine.errors import (
    CannotAdaptError,
    CannotGenerateError,
    EngineClosedError,
    EngineError,
    QueueFullError,
    RequestTimeoutError,
)
from app.engine.generation import Generation, GenerationChunk
from app.engine.params import FinishReason, GenerationParams
from app.engine.requests import CallRequest, Phase, ScoreRequest
from app.engine.scheduler import Scheduler
from app.engine.stats import EngineCounters, HistogramSnapshot
from models.adapt import AdaptSettings, adapt_refusal, adaptive_score_texts
from models.base import CharLM
from models.checkpoint import LoadedCheckpoint
from models.infill import InfillResult, infill_text, pll_score_texts
from models.scoring import TextScore
from models.vocab import BOS_ID, CharVocab

__all__ = [
    "CannotAdaptError",
    "CannotGenerateError",
    "EngineClosedError",
    "EngineError",
    "GenerationChunk",
    "ModelEngine",
    "QueueFullError",
    "RequestTimeoutError",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ModelEngine:
    """Serves one loaded checkpoint: continuous batching of completions, micro-batched scoring.

    ``on_submitted``, when given, is called on the event loop once each request is queued or
    refused (the server's admission control counts requests until they reach their engine).
    """

    def __init__(
        self,
        name: str,
        checkpoint: LoadedCheckpoint,
        max_queue: int = 256,
        *,
        max_batch_size: int = 32,
        request_timeout_s: float = 120.0,
        prompt_chunk: int = 256,
        stream_interval_s: float = 0.004,
        gil_switch_interval_s: float | None = 0.0005,
        on_submitted: Callable[[], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1")
        if request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")
        self.name = name
        self.checkpoint = checkpoint
        self.max_queue = max_queue
        self.max_batch_size = max_batch_size
        self.request_timeout_s = request_timeout_s
        self.gil_switch_interval_s = gil_switch_interval_s
        self.on_submitted = on_submitted
        self._counters = EngineCounters()
        self._scheduler = Scheduler(
            checkpoint.model,
            checkpoint.vocab,
            self._counters,
            max_batch_size=max_batch_size,
            max_queue=max_queue,
            prompt_chunk=prompt_chunk,
            stream_interval_s=stream_interval_s,
        )

    @property
    def can_generate(self) -> bool:
        return self.checkpoint.model.can_generate

    async def start(self) -> None:
        """Start the scheduler thread; requests are accepted from now on.

        Lowers the interpreter's thread switch interval to ``gil_switch_interval_s`` (process
        wide, never raises it): the scheduler thread gives up the GIL inside every torch call
        and must win it back from the event loop after each; with CPython's default of 5 ms, a
        busy event loop slows the steps down several times (measured: 185 vs 270 steps/s at
        0.5 ms, batch 32, beside a busy thread).
        """
        interval = self.gil_switch_interval_s
        if interval is not None and sys.getswitchinterval() > interval:
            sys.setswitchinterval(interval)
        self.checkpoint.model.eval()
        self._scheduler.start(self.name)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Refuse new requests, let admitted ones run for up to ``grace_seconds``, then end the
        rest and stop the thread: running completions end with ``finish_reason == "abort"``,
        requests that never started and scoring in progress raise ``EngineClosedError``.
        Calling it again (or concurrently) is harmless."""
        self._scheduler.close()
        deadline = time.monotonic() + max(0.0, grace_seconds)
        while self._scheduler.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._scheduler.busy():
            logger.warning("model %s: grace period over, aborting running requests", self.name)
        self._scheduler.abort()
        await asyncio.to_thread(self._scheduler.join)

    # ------------------------------------------------------------------ scoring, calls
    async def score(
        self, texts: Sequence[str], context: str = "", top_k: int = 0
    ) -> list[TextScore]:
        """Score each text after ``context`` (see ``models.scoring``), batched with others."""
        loop = asyncio.get_running_loop()
        request = ScoreRequest(list(texts), context, top_k, loop, loop.create_future())
        return await self._outcome(request, "scoring")

    async def score_pll(
        self, texts: Sequence[str], context: str = "", top_k: int = 0
    ) -> list[TextScore]:
        """The pseudo-log-likelihood of each text after ``context`` (a bidirectional model's own
        score, ``models.infill.pll_score_texts``), queued like every other request."""
        return await self.run(
            partial(pll_score_texts, texts=list(texts), context=context, top_k=top_k)
        )

    async def score_adaptive(
        self, texts: Sequence[str], settings: AdaptSettings, context: str = "", top_k: int = 0
    ) -> list[TextScore]:
        """Score each text after ``context`` adapting a private copy of the weights to it as it
        is read (``models.adapt``), queued like every other request; the served weights never
        change. ``CannotAdaptError`` (before queueing) when the model cannot adapt."""
        reason = adapt_refusal(self.checkpoint.model)
        if reason is not None:
            raise CannotAdaptError(
                f"model {self.name!r} ({self.checkpoint.config.arch}) cannot be scored"
                f" adaptively: {reason}; score it without adapt"
            )
        return await self.run(
            partial(
                adaptive_score_texts,
                texts=list(texts),
                context=context,
                top_k=top_k,
                settings=settings,
            )
        )

    async def infill(self, text: str, mask: str, top_k: int = 0) -> InfillResult:
        """Fill the ``mask`` characters of ``text`` (``models.infill.infill_text``), queued like
        every other request; ``InfillError`` says why a text cannot be filled."""
        return await self.run(partial(infill_text, text=text, mask=mask, top_k=top_k))

    async def run(self, fn: Callable[[CharLM, CharVocab], T]) -> T:
        """``fn(model, vocab)`` run whole on the worker thread between two rounds, queued (and
        refused when the queue is full) like every other request; its errors raise here."""
        loop = asyncio.get_running_loop()
        request = CallRequest(fn, loop, loop.create_future())
        return cast(T, await self._outcome(request, "the request"))

    async def _outcome(self, request: ScoreRequest | CallRequest, what: str) -> Any:
        """Queue ``request`` and wait for its result, at most ``request_timeout_s``."""
        try:
            self._scheduler.submit([request])
        finally:
            self._submitted()
        future = request.future
        try:
            async with asyncio.timeout(self.request_timeout_s):
                return await future
        except TimeoutError:
            self._counters.reject("timeout")
            raise RequestTimeoutError(
                f"{what} took longer than {self.request_timeout_s:g} s"
            ) from None
        finally:
            if not future.done() or request.phase is not Phase.DONE:
                self._scheduler.cancel(request)

    # ------------------------------------------------------------------ generation
    async def generate(
        self, prompt: str, params: GenerationParams
    ) -> AsyncGenerator[GenerationChunk, None]:
        """Yield the ``params.n`` completions of ``prompt`` as they grow, as chunks that name
        their completion (``index``); stop iterating (``aclose``) to cancel them all.

        Ready characters are coalesced into one chunk; characters that could begin a stop string
        are held back until they cannot. The same seed gives the same text whatever runs beside
        it. Nothing is yielded before every completion has started, so ``CannotGenerateError``,
        ``QueueFullError``, ``EngineClosedError`` and ``RequestTimeoutError`` (still queued at
        the deadline) are raised before the first chunk.
        """
        if not self.can_generate:
            raise CannotGenerateError(
                f"model {self.name!r} ({self.checkpoint.config.arch}) cannot generate text:"
                " it predicts each character from both sides, so it has no left-to-right"
                " distribution to sample; use it with /v1/infill or /v1/score (mode 'pll')"
            )
        seeds = params.seeds()
        if params.max_chars < 1:
            for index, seed in enumerate(seeds):
                yield GenerationChunk("", FinishReason.LENGTH, 0, seed, index)
            return
        ids = np.concatenate([[BOS_ID], self.checkpoint.vocab.encode_array(prompt)])
        ids = ids.astype(np.int64)  # (T,) read by every completion, written by none
        generation = Generation(
            ids, params, seeds, self._scheduler, self._counters, self.request_timeout_s
        )
        try:
            self._scheduler.submit(generation.requests)
        finally:
            self._submitted()
        try:
            while generation.running:
                await generation.wait()
                for chunk in generation.take():
                    yield chunk
        finally:
            generation.cancel()

    def _submitted(self) -> None:
        """The request is queued or refused: tell whoever counts requests on their way in."""
        if self.on_submitted is not None:
            self.on_submitted()

    # ------------------------------------------------------------------ admission
    def queue_full(self, pending: int = 0) -> QueueFullError | None:
        """The error a new request would get now because the queue is full, else None (a cheap
        check for refusing early; ``score`` and ``generate`` check again). ``pending``: requests
        already let through on their way to this engine (``app.api.middleware``)."""
        return self._scheduler.queue_full(pending)

    def count_rejection(self, reason: str) -> None:
        """Count a request refused on the engine's behalf (``queue_full``, ...)."""
        self._counters.reject(reason)

    # ------------------------------------------------------------------ observability
    def stats(self) -> dict[str, float]:
        """A snapshot for ``/metrics`` and benchmarks: queue, running rows, counters."""
        generations, scorings, calls, running = self._scheduler.counts()
        queued = {"generations": generations, "scorings": scorings, "calls": calls}
        limits = {"max_batch_size": self.max_batch_size, "max_queue": self.max_queue}
        return self._counters.stats(queued, running, limits)

    def histograms(self) -> dict[str, HistogramSnapshot]:
        """Time to first character, time per output character and rows per decode step."""
        return self._counters.histograms()

    def rejections(self) -> dict[str, int]:
        """Requests refused, by reason: ``queue_full``, ``closed``, ``timeout``."""
        with self._counters.lock:
            return dict(self._counters.rejected)
