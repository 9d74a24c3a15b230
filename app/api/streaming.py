"""Run several completions of one request side by side and merge their chunks.

``CompletionStreams.open`` asks the engine for each completion and waits for the first chunk of
every one before returning, so errors the engine raises at admission (queue full, model cannot
generate, shutting down) become a proper HTTP status instead of an error inside a 200 stream.
Closing the stream (client gone, error) cancels every completion still running; a reply that is
not streamed is cancelled as soon as the server sees its client disconnect
(``cancel_on_disconnect``), instead of running to ``max_chars`` for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

from fastapi import Request

from app.api.errors import APIError
from app.engine.engine import GenerationChunk, ModelEngine
from app.metrics import Metrics
from models.sampling import SamplingParams

logger = logging.getLogger(__name__)

T = TypeVar("T")

# nginx's convention for "client closed the request"; only the access log and metrics see it
CLIENT_CLOSED = 499

FinishReason = Literal["length", "stop", "timeout", "abort"]


@dataclass
class FinishedCompletion:
    text: str
    finish_reason: FinishReason
    num_chars: int
    seed: int


_END = object()


class CompletionStreams:
    """Chunks of ``len(seeds)`` completions of one prompt, as ``(index, chunk)`` pairs."""

    def __init__(
        self, model_id: str, iterators: list[AsyncIterator[GenerationChunk]], metrics: Metrics
    ) -> None:
        self.model_id = model_id
        self._iterators = iterators
        # the metric children of this model, looked up once rather than per chunk
        self._chars_generated = metrics.chars_generated.labels(model_id)
        self._generations_active = metrics.generations_active.labels(model_id)
        self._first: list[GenerationChunk] = []
        self._pumps: list[asyncio.Task[None]] = []
        self._active = 0
        self._closed = False

    @classmethod
    async def open(
        cls,
        engine: ModelEngine,
        model_id: str,
        metrics: Metrics,
        prompt: str,
        max_chars: int,
        params: SamplingParams,
        seeds: Sequence[int],
        stop: Sequence[str],
    ) -> CompletionStreams:
        iterators = [engine.generate(prompt, max_chars, params, seed, stop) for seed in seeds]
        self = cls(model_id, iterators, metrics)
        self._active = len(iterators)
        self._generations_active.inc(len(iterators))
        firsts = [asyncio.ensure_future(anext(it)) for it in iterators]
        try:
            self._first = list(await asyncio.gather(*firsts))
        except BaseException:
            # stop the siblings before closing their iterators (a running one cannot be closed)
            for task in firsts:
                task.cancel()
            for task in firsts:
                with contextlib.suppress(BaseException):
                    await task
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

    async def _pump(self, index: int, queue: asyncio.Queue[object]) -> None:
        try:
            async for chunk in self._iterators[index]:
                await queue.put((index, chunk))
                if chunk.finish_reason is not None:
                    break
        except Exception as exc:  # handed to the consumer, which raises it in the request
            await queue.put(exc)
        finally:
            await queue.put(_END)

    async def chunks(self) -> AsyncIterator[tuple[int, GenerationChunk]]:
        """Every chunk as it arrives; the last chunk of each completion has its finish reason."""
        try:
            pending = []
            for index, chunk in enumerate(self._first):
                self._count(chunk)
                yield index, chunk
                if chunk.finish_reason is None:
                    pending.append(index)
            if not pending:
                return
            if len(pending) == 1:
                # one completion left: read it directly, without a pump task and a queue (a
                # task switch per chunk on the event loop)
                index = pending[0]
                async for chunk in self._iterators[index]:
                    self._count(chunk)
                    yield index, chunk
                    if chunk.finish_reason is not None:
                        break
                return
            queue: asyncio.Queue[object] = asyncio.Queue()
            self._pumps = [asyncio.create_task(self._pump(i, queue)) for i in pending]
            running = len(self._pumps)
            while running:
                item = await queue.get()
                if item is _END:
                    running -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    index, chunk = item  # type: ignore[misc]
                    self._count(chunk)
                    yield index, chunk
        finally:
            await self.aclose()

    async def collect(self) -> list[FinishedCompletion]:
        """Run every completion to its end."""
        texts = [""] * len(self._iterators)
        done: list[FinishedCompletion | None] = [None] * len(self._iterators)
        async for index, chunk in self.chunks():
            texts[index] += chunk.text
            if chunk.finish_reason is not None:
                if chunk.finish_reason not in ("length", "stop", "timeout", "abort"):
                    raise RuntimeError(f"unknown finish reason {chunk.finish_reason!r}")
                reason = cast(FinishReason, chunk.finish_reason)
                done[index] = FinishedCompletion(texts[index], reason, chunk.num_chars, chunk.seed)
        result = [d for d in done if d is not None]
        if len(result) != len(done):
            raise RuntimeError("the engine ended a completion without a finish reason")
        return result

    async def aclose(self) -> None:
        """Cancel whatever still runs: the pump tasks first, then the engine's iterators."""
        if self._closed:
            return
        self._closed = True
        for task in self._pumps:
            task.cancel()
        for task in self._pumps:
            with contextlib.suppress(BaseException):
                await task
        for iterator in self._iterators:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
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
