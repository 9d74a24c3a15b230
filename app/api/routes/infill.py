"""``POST /v1/infill``: fill the gaps of a text with a bidirectional model."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep
from app.api.errors import MODEL_ROUTE_ERRORS, APIError, error_responses
from app.api.schemas.infill import (
    MAX_INFILL_WORK,
    MAX_MASKED_CHARS,
    Alternative,
    Candidate,
    Gap,
    InfillRequest,
    InfillResponse,
    infill_work,
)
from models.infill import InfillError
from models.scoring import bits_per_char

router = APIRouter(prefix="/v1", tags=["infill"])


@router.post("/infill", responses=error_responses(*MODEL_ROUTE_ERRORS))
async def infill(request: InfillRequest, services: ServicesDep) -> InfillResponse:
    """Replace each ``mask`` character by the likeliest character given both sides."""
    request.check_limits(services.limits)
    entry = services.store.resolve(request.model)
    assert entry.engine is not None and entry.checkpoint is not None
    if entry.checkpoint.model.can_generate:
        raise APIError(
            400,
            f"model {entry.id!r} ({entry.checkpoint.config.arch}) reads left to right only;"
            " infilling needs a bidirectional model (bilstm or bigru)",
            param="model",
            code="not_bidirectional",
        )
    masked = request.text.count(request.mask)
    if masked > MAX_MASKED_CHARS:
        raise APIError(
            413,
            f"text has {masked} masked characters; at most {MAX_MASKED_CHARS} per request",
            param="text",
            code="too_many_masked_chars",
        )
    if infill_work(len(request.text), masked, request.top_k) > MAX_INFILL_WORK:
        factor = 64 if request.top_k else 4
        raise APIError(
            413,
            f"{masked} masked characters in a text of {len(request.text)} is too much work for"
            f" one request (masked x length x {factor} must stay under {MAX_INFILL_WORK:,});"
            " send a shorter text around the gaps",
            param="text",
            code="infill_too_large",
        )
    try:
        result = await entry.engine.infill(request.text, request.mask, request.top_k)
    except InfillError as exc:
        raise APIError(400, str(exc), param="text", code="invalid_infill") from None
    gaps = [
        Gap(
            start=g.start,
            text=g.text,
            candidates=[[Candidate(char=c, prob=p) for c, p in pos] for pos in g.candidates]
            if request.top_k
            else None,
            alternatives=[Alternative(text=t, pll=p) for t, p in g.alternatives]
            if request.top_k
            else None,
        )
        for g in result.gaps
    ]
    return InfillResponse(
        model=entry.id,
        text=result.text,
        gaps=gaps,
        pll=result.pll,
        pll_bits_per_char=bits_per_char(-result.pll / result.num_chars),
        num_masked=masked,
    )
