"""``POST /v1/generate``: continue a prompt, whole or as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from app.api.deps import ServicesDep
from app.api.responses import SSEResponse, sse_responses
from app.api.schemas.generate import (
    Completion,
    GenerateRequest,
    GenerateResponse,
    GenerateStreamEnd,
    GenerateStreamEvent,
    GenerateUsage,
)
from app.api.streaming import CompletionStreams, cancel_on_disconnect

router = APIRouter(prefix="/v1", tags=["generate"])


def _usage(prompt: str, completion_chars: int) -> GenerateUsage:
    return GenerateUsage(
        prompt_chars=len(prompt),
        completion_chars=completion_chars,
        total_chars=len(prompt) + completion_chars,
    )


async def _events(
    streams: CompletionStreams, request: GenerateRequest
) -> AsyncIterator[dict[str, Any]]:
    generated = 0
    async for chunk in streams.chunks():
        event = GenerateStreamEvent(index=chunk.index, text=chunk.text)
        if chunk.finish_reason is not None:
            generated += chunk.num_chars
            event.finish_reason = chunk.finish_reason
            event.num_chars = chunk.num_chars
            event.seed = chunk.seed
        yield event.model_dump(exclude_none=True)
    yield GenerateStreamEnd(
        model=streams.model_id, usage=_usage(request.prompt, generated)
    ).model_dump()


@router.post(
    "/generate",
    responses=sse_responses(
        "JSON, or with stream: true Server-Sent Events", GenerateStreamEvent, GenerateStreamEnd
    ),
    response_model=GenerateResponse,
)
async def generate(
    request: GenerateRequest, services: ServicesDep, http_request: Request
) -> GenerateResponse | SSEResponse:
    """Generate ``n`` completions; the same seed gives the same text."""
    request.check_limits(services.limits)
    entry = services.store.resolve(request.model)
    assert entry.engine is not None
    streams = await CompletionStreams.open(
        entry.engine, entry.id, services.metrics, request.prompt, request.to_params()
    )
    if request.stream:
        return SSEResponse(_events(streams, request))
    finished = await cancel_on_disconnect(http_request, streams.collect())
    completions = [
        Completion(
            index=i,
            text=c.text,
            finish_reason=c.finish_reason,
            num_chars=c.num_chars,
            seed=c.seed,
        )
        for i, c in enumerate(finished)
    ]
    usage = _usage(request.prompt, sum(c.num_chars for c in completions))
    return GenerateResponse(model=entry.id, completions=completions, usage=usage)
