"""``POST /v1/score``: log-probabilities of texts."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ServicesDep
from app.errors import ErrorResponse
from app.schemas.score import ScoreRequest, ScoreResponse, ScoreUsage, TextScoreResult

router = APIRouter(prefix="/v1", tags=["score"])

_ERRORS = {code: {"model": ErrorResponse} for code in (401, 404, 413, 422, 429, 503)}


@router.post("/score", responses=_ERRORS)  # type: ignore[arg-type]
async def score(request: ScoreRequest, services: ServicesDep) -> ScoreResponse:
    """Score each text from the start of a document (after ``<bos>`` and ``context``)."""
    request.check_limits(services.limits)
    entry = services.store.resolve(request.model)
    assert entry.engine is not None and entry.checkpoint is not None
    scores = await entry.engine.score(request.texts, request.context, request.top_k)
    vocab = entry.checkpoint.vocab
    results = [
        TextScoreResult.build(text, s, request.per_char, vocab)
        for text, s in zip(request.texts, scores, strict=True)
    ]
    chars = sum(r.num_chars for r in results)
    services.metrics.chars_scored.labels(entry.id).inc(chars)
    usage = ScoreUsage(chars_scored=chars, context_chars=len(request.context))
    return ScoreResponse(model=entry.id, results=results, usage=usage)
