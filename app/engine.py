"""The per-model inference engine: the only place where the server touches tensors.

Routes call ``ModelEngine.score`` and ``ModelEngine.generate``; the engine runs the model on a
worker thread so the event loop stays free. This first version runs one request at a time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import torch

from models.checkpoint import LoadedCheckpoint
from models.sampling import SamplingParams, StopMatcher, choose_next, make_generator, prime
from models.scoring import TextScore, score_texts


class EngineError(Exception):
    """Base class of the engine's errors."""


class QueueFullError(EngineError):
    """Too many requests are waiting; the client should retry later."""

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__("the server is at capacity; retry later")
        self.retry_after = retry_after


class EngineClosedError(EngineError):
    """The engine is shutting down and takes no new work."""


class CannotGenerateError(EngineError):
    """The model's architecture cannot generate left to right."""


@dataclass
class GenerationChunk:
    """New text for one completion; the last chunk carries ``finish_reason``."""

    text: str
    finish_reason: str | None = None  # None while running, then "length" or "stop"
    num_chars: int = 0  # characters generated so far, stop string excluded
    seed: int = 0


class ModelEngine:
    """Serves one loaded checkpoint."""

    def __init__(self, name: str, checkpoint: LoadedCheckpoint, max_queue: int = 256) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._waiting = 0
        self._closed = False

    @property
    def can_generate(self) -> bool:
        return self.checkpoint.model.can_generate

    async def start(self) -> None:
        self._closed = False

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._closed = True

    def _admit(self) -> None:
        if self._closed:
            raise EngineClosedError(f"model {self.name!r} is shutting down")
        if self._waiting >= self.max_queue:
            raise QueueFullError()

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        self._admit()
        self._waiting += 1
        try:
            return await asyncio.to_thread(self._locked, fn, *args)
        finally:
            self._waiting -= 1

    def _locked(self, fn, *args):  # type: ignore[no-untyped-def]
        with self._lock, torch.inference_mode():
            return fn(*args)

    async def score(
        self, texts: Sequence[str], context: str = "", top_k: int = 0
    ) -> list[TextScore]:
        ckpt = self.checkpoint
        result: list[TextScore] = await self._run(
            score_texts, ckpt.model, ckpt.vocab, list(texts), context, top_k
        )
        return result

    async def generate(
        self,
        prompt: str,
        max_chars: int,
        params: SamplingParams,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> AsyncIterator[GenerationChunk]:
        """Yield the completion as it grows; stop iterating (``aclose``) to cancel it."""
        if not self.can_generate:
            raise CannotGenerateError(
                f"model {self.name!r} ({self.checkpoint.config.arch}) cannot generate text"
            )
        model, vocab = self.checkpoint.model, self.checkpoint.vocab
        generator, used_seed = make_generator(seed)
        matcher = StopMatcher(stop)
        logits, state = await self._run(prime, model, vocab, prompt, 1)
        text = ""
        emitted = 0
        for _ in range(max_chars):
            next_id = choose_next(logits, [params], [generator])
            text += vocab.token(int(next_id[0]))
            cut = matcher.find(text)
            if cut is not None:
                text = text[:cut]
                safe = text[emitted:]
                yield GenerationChunk(safe, "stop", len(text), used_seed)
                return
            # hold back characters that may be the start of a stop string
            hold = max(0, matcher.longest - 1)
            ready = len(text) - hold
            if ready > emitted:
                yield GenerationChunk(text[emitted:ready], None, ready, used_seed)
                emitted = ready
            out, state = await self._run(model, next_id.unsqueeze(-1), state)
            logits = out[:, -1]
        yield GenerationChunk(text[emitted:], "length", len(text), used_seed)
