"""OpenAI completions on top of the engine: generation, then scoring for ``logprobs``.

Log-probabilities come from ``/v1/score``'s scoring, not from the sampler: the prompt and
completion are read after ``<bos>`` exactly as ``/v1/score`` reads them, so ``echo`` with
``max_tokens=0`` gives the same numbers as ``/v1/score`` (and a real value for the first
character, where other servers return null). They are those of the model's distribution,
before temperature, top-k and top-p. A bidirectional model has no left-to-right distribution:
asking it for ``logprobs`` is a 400 that points to ``/v1/score``, where its own measure, the
pseudo-log-likelihood, is given under that name.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from app.api.errors import APIError
from app.api.schemas.completions import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
)
from app.api.streaming import CompletionStreams, FinishedCompletion
from app.engine.engine import ModelEngine
from app.engine.params import FinishReason, GenerationParams
from app.metrics import Metrics
from app.store import ModelEntry
from models.scoring import TextScore
from models.vocab import CharVocab


def completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex


def build_logprobs(
    text: str, score: TextScore, first_offset: int, vocab: CharVocab, top: int
) -> CompletionLogprobs:
    top_logprobs: list[dict[str, float]] | None = None
    if top and score.top_ids is not None and score.top_logprobs is not None:
        top_logprobs = [
            {vocab.token(i): lp for i, lp in zip(ids, lps, strict=True)}
            for ids, lps in zip(score.top_ids.tolist(), score.top_logprobs.tolist(), strict=True)
        ]
    return CompletionLogprobs(
        tokens=list(text),
        token_logprobs=score.logprobs.tolist(),
        top_logprobs=top_logprobs,
        text_offset=[first_offset + i for i in range(len(text))],
    )


async def _open_streams(
    entry: ModelEntry, metrics: Metrics, request: CompletionRequest, params: GenerationParams
) -> list[CompletionStreams | None]:
    """One set of streams per prompt (None where nothing is to be generated)."""
    assert entry.engine is not None
    if params.max_chars == 0:
        return [None for _ in request.prompts()]
    opened: list[CompletionStreams | None] = []
    try:
        for prompt in request.prompts():
            opened.append(
                await CompletionStreams.open(entry.engine, entry.id, metrics, prompt, params)
            )
    except BaseException:
        for streams in opened:
            if streams is not None:
                await streams.aclose()
        raise
    return opened


async def _prompt_choices(
    engine: ModelEngine,
    vocab: CharVocab,
    prompt: str,
    first_index: int,
    streams: CompletionStreams | None,
    request: CompletionRequest,
    params: GenerationParams,
) -> list[CompletionChoice]:
    if streams is not None:
        finished = await streams.collect()
    else:
        finished = [FinishedCompletion("", FinishReason.LENGTH, 0, seed) for seed in params.seeds()]
    texts = [(prompt if request.echo else "") + f.text for f in finished]
    logprobs: list[CompletionLogprobs | None] = [None] * len(finished)
    if request.logprobs is not None:
        top = request.logprobs
        if request.echo:
            scores = await engine.score(texts, "", top)
            offset = 0
        else:
            scores = await engine.score(texts, prompt, top)
            offset = len(prompt)
        logprobs = [
            build_logprobs(text, s, offset, vocab, top)
            for text, s in zip(texts, scores, strict=True)
        ]
    return [
        CompletionChoice(
            text=text,
            index=first_index + i,
            logprobs=lp,
            finish_reason=f.finish_reason,
        )
        for i, (text, f, lp) in enumerate(zip(texts, finished, logprobs, strict=True))
    ]


def _usage(request: CompletionRequest, choices: int) -> CompletionUsage:
    prompt_tokens = sum(len(p) for p in request.prompts())
    return CompletionUsage(
        prompt_tokens=prompt_tokens, completion_tokens=choices, total_tokens=prompt_tokens + choices
    )


async def complete(
    entry: ModelEntry, metrics: Metrics, request: CompletionRequest
) -> CompletionResponse:
    """The whole response: every prompt's ``n`` choices (choice index = prompt * n + i)."""
    assert entry.engine is not None and entry.checkpoint is not None
    model = entry.checkpoint.model
    if request.logprobs is not None and not model.can_generate:
        raise APIError(
            400,
            f"model {entry.id!r} ({model.config.arch}) is bidirectional: it predicts each"
            " character from both sides and has no left-to-right log-probabilities to give;"
            " score the text with /v1/score (mode 'pll', its pseudo-log-likelihood)",
            param="logprobs",
            code="bidirectional_model",
        )
    params = request.to_params()
    opened = await _open_streams(entry, metrics, request, params)
    vocab = entry.checkpoint.vocab
    tasks = [
        asyncio.ensure_future(
            _prompt_choices(entry.engine, vocab, prompt, p * request.n, streams, request, params)
        )
        for p, (prompt, streams) in enumerate(zip(request.prompts(), opened, strict=True))
    ]
    try:
        per_prompt = await asyncio.gather(*tasks)
    finally:
        # on an error or a disconnect, no prompt keeps generating for nobody
        for task in tasks:
            task.cancel()
        for streams in opened:
            if streams is not None:
                await streams.aclose()
    choices = [c for group in per_prompt for c in group]
    if request.logprobs is not None:
        metrics.chars_scored.labels(entry.id).inc(sum(len(c.text) for c in choices))
    generated = sum(
        len(c.text) - (len(request.prompts()[c.index // request.n]) if request.echo else 0)
        for c in choices
    )
    return CompletionResponse(
        id=completion_id(),
        created=int(time.time()),
        model=entry.id,
        choices=choices,
        usage=_usage(request, generated),
    )


async def open_completion_stream(
    entry: ModelEntry, metrics: Metrics, request: CompletionRequest
) -> AsyncIterator[dict[str, Any]]:
    """Start generating (errors raise here, before any byte is sent) and return the chunks."""
    opened = await _open_streams(entry, metrics, request, request.to_params())
    return _stream_chunks(entry.id, request, opened)


async def _stream_chunks(
    model_id: str, request: CompletionRequest, opened: list[CompletionStreams | None]
) -> AsyncIterator[dict[str, Any]]:
    ident, created = completion_id(), int(time.time())

    def chunk(index: int, text: str, finish: FinishReason | None) -> dict[str, Any]:
        choice = CompletionChoice(text=text, index=index, finish_reason=finish)
        return CompletionResponse(
            id=ident, created=created, model=model_id, choices=[choice]
        ).model_dump()

    generated = 0
    try:
        for p, (prompt, streams) in enumerate(zip(request.prompts(), opened, strict=True)):
            base = p * request.n
            if request.echo:
                for i in range(request.n):
                    yield chunk(base + i, prompt, None)
            if streams is None:
                for i in range(request.n):
                    yield chunk(base + i, "", FinishReason.LENGTH)
                continue
            async for piece in streams.chunks():
                if piece.finish_reason is not None:
                    generated += piece.num_chars
                yield chunk(base + piece.index, piece.text, piece.finish_reason)
    finally:
        for streams in opened:
            if streams is not None:
                await streams.aclose()
    if request.stream_options is not None and request.stream_options.include_usage:
        yield CompletionResponse(
            id=ident, created=created, model=model_id, choices=[], usage=_usage(request, generated)
        ).model_dump()
