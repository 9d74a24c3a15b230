"""The completions of one prompt as the routes read them, and the end of work for a client that has
gone.

``CompletionStreams.open`` asks the engine for the request's ``n`` completions and waits for the
first chunk before returning (the engine yields none before every completion has started), so
errors the engine raises at admission (queue full, model cannot generate, shutting down) become a
proper HTTP status instead of an error inside a 200 stream. Closing the stream (client gone,
error) cancels every completion still running; a reply that is not streamed is cancelled as soon
as the server sees its client disconnect (``cancel_on_disconnect``), instead of running to
``max_chars`` for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request

from app.api.errors import APIError
from app.engine.engine import ModelEngine
from app.engine.generation import GenerationChunk
from app.engine.params import FinishReason, GenerationParams
from app.metrics import Metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

# nginx's convention for "client closed the request"; only the access log and metrics see it
CLIENT_CLOSED = 499


@dataclass
class FinishedCompletion:
    text: str
    finish_reason: FinishReason
    num_chars: int
    seed: int


class CompletionStreams:
    """The chunks of the ``n`` completions of one prompt (each names its completion), counted
    in the app's metrics as they pass."""

    def __init__(
        self,
        model_id: str,
        chunks: AsyncGenerator[GenerationChunk, None],
        params: GenerationParams,
        metrics: Metrics,
    ) -> None:
        self.model_id = model_id
        self.params = params
        self._chunks = chunks
        # the metric children of this model, looked up once rather than per chunk
        self._chars_generated = metrics.chars_generated.labels(model_id)
        self._generations_active = metrics.generations_active.labels(model_id)
        self._first: GenerationChunk | None = None
        self._active = 0
        self._closed = False

    @classmethod
    async def open(
        cls,
        engine: ModelEngine,
        model_id: str,
        metrics: Metrics,
        prompt: str,
        params: GenerationParams,
    ) -> CompletionStreams:
        self = cls(model_id, engine.generate(prompt, params), params, metrics)
        self._active = params.n
        self._generations_active.inc(params.n)
        try:
            self._first = await anext(self._chunks)
        except BaseException:
            await self.aclose()
            raise
        return self

    def _count(self, chunk: GenerationChunk) -> None:
        if chunk.text:
            self._chars_generated.inc(len(chunk.text))
        if chunk.finish_reason is not None:
            self._finish(1)

    def _finish(self, count: int) -> None:
        count = min(count, self._active)
        if count:
            self._active -= count
            self._generations_active.dec(count)

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        """Every chunk as it arrives; the last chunk of each completion has its finish reason."""
        try:
            if self._first is not None:
                first, self._first = self._first, None
                self._count(first)
                yield first
            async for chunk in self._chunks:
                self._count(chunk)
                yield chunk
        finally:
            await self.aclose()

    async def collect(self) -> list[FinishedCompletion]:
        """Run every completion to its end."""
        texts = [""] * self.params.n
        done: list[FinishedCompletion | None] = [None] * self.params.n
        async for chunk in self.chunks():
            texts[chunk.index] += chunk.text
            if chunk.finish_reason is not None:
                done[chunk.index] = FinishedCompletion(
                    texts[chunk.index], chunk.finish_reason, chunk.num_chars, chunk.seed
                )
        result = [d for d in done if d is not None]
        if len(result) != len(done):
            raise RuntimeError("the engine ended a completion without a finish reason")
        return result

    async def aclose(self) -> None:
        """Cancel whatever still runs."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._chunks.aclose()
        self._finish(self._active)


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise a 499 ``APIError``."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # the body has been read: the next message is the disconnect (or the end of the response)
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if not watcher.done() or watcher.cancelled():
            raise  # cancelled from outside, not by the disconnect
        logger.info("client disconnected: generation cancelled")
        raise APIError(
            CLIENT_CLOSED, "the client closed the request", code="client_closed"
        ) from None
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
