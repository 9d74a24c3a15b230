"""``POST /v1/completions``: OpenAI's legacy completions (characters are tokens)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import ServicesDep
from app.api.openai import complete, open_completion_stream
from app.api.responses import SSEResponse, sse_responses
from app.api.schemas.completions import CompletionRequest, CompletionResponse
from app.api.streaming import cancel_on_disconnect

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post(
    "/completions",
    responses=sse_responses(
        "JSON, or with stream: true Server-Sent Events of the same shape", CompletionResponse
    ),
    response_model=CompletionResponse,
)
async def completions(
    request: CompletionRequest, services: ServicesDep, http_request: Request
) -> CompletionResponse | SSEResponse:
    """Complete each prompt ``n`` times; ``echo`` + ``logprobs`` + ``max_tokens: 0`` scores."""
    request.check_limits(services.limits)
    entry = services.store.resolve(request.model)
    if request.stream:
        return SSEResponse(await open_completion_stream(entry, services.metrics, request))
    return await cancel_on_disconnect(http_request, complete(entry, services.metrics, request))
