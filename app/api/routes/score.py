"""``POST /v1/score``: log-probabilities of texts."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.errors import MODEL_ROUTE_ERRORS, APIError, error_responses
from app.api.responses import model_response
from app.api.schemas.score import (
    AdaptUsed,
    CharScore,
    ScoreMode,
    ScoreRequest,
    ScoreResponse,
    ScoreUsage,
    TextScoreResult,
    TopChar,
)
from models.adapt import AdaptSettings
from models.base import CharLM
from models.scoring import TextScore, bits_per_char, perplexity
from models.vocab import CharVocab

router = APIRouter(prefix="/v1", tags=["score"])


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses=error_responses(*MODEL_ROUTE_ERRORS),
)
async def score(request: ScoreRequest, services: ServicesDep) -> Response:
    """Score each text from the start of a document (after ``<bos>`` and ``context``)."""
    request.check_limits(services.limits)
    entry = services.store.resolve(request.model)
    assert entry.engine is not None and entry.checkpoint is not None
    vocab = entry.checkpoint.vocab
    mode = score_mode(request.mode, entry.id, entry.checkpoint.model)
    adapt = adapt_settings(request)
    if adapt is not None:
        scores = await entry.engine.score_adaptive(
            request.texts, adapt, request.context, request.top_k
        )
    else:
        score_with = entry.engine.score_pll if mode == "pll" else entry.engine.score
        scores = await score_with(request.texts, request.context, request.top_k)
    results = [
        text_score_result(text, s, request.per_char, vocab)
        for text, s in zip(request.texts, scores, strict=True)
    ]
    chars = sum(r.num_chars for r in results)
    services.metrics.chars_scored.labels(entry.id).inc(chars)
    usage = ScoreUsage(chars_scored=chars, context_chars=len(request.context))
    used = (
        AdaptUsed(rate=adapt.rate, segment=adapt.segment, method=adapt.method)
        if adapt is not None
        else None
    )
    return model_response(
        ScoreResponse(model=entry.id, mode=mode, adapt=used, results=results, usage=usage)
    )


def adapt_settings(request: ScoreRequest) -> AdaptSettings | None:
    """The adaptive-scoring settings of the request (the defaults where it names none), or None
    when it does not adapt."""
    if not request.adapt:
        return None
    defaults = AdaptSettings()
    return dataclasses.replace(
        defaults,
        rate=request.adapt_rate if request.adapt_rate is not None else defaults.rate,
        segment=request.adapt_segment if request.adapt_segment is not None else defaults.segment,
    )


def score_mode(requested: ScoreMode | None, model_id: str, model: CharLM) -> ScoreMode:
    """The requested mode, or the model's own; 400 when the model cannot score that way."""
    if requested is None:
        return "causal" if model.can_generate else "pll"
    if requested == "pll" and model.can_generate:
        raise APIError(
            400,
            f"mode 'pll' needs a bidirectional model; {model_id!r} ({model.config.arch})"
            " reads left to right: use mode 'causal'",
            param="mode",
            code="not_bidirectional",
        )
    if requested == "causal" and not model.can_generate:
        raise APIError(
            400,
            f"model {model_id!r} ({model.config.arch}) is bidirectional: it predicts each"
            " character from both sides and has no left-to-right probability; use mode 'pll'",
            param="mode",
            code="bidirectional_model",
        )
    return requested


def text_score_result(
    text: str, score: TextScore, per_char: bool, vocab: CharVocab
) -> TextScoreResult:
    """The engine's figures for one text as the response shows them."""
    chars: list[CharScore] | None = None
    if per_char:
        values = score.logprobs.tolist()
        tops: list[list[TopChar]] | None = None
        if score.top_ids is not None and score.top_logprobs is not None:
            tops = [
                [TopChar(char=vocab.token(i), logprob=lp) for i, lp in zip(ids, lps, strict=True)]
                for ids, lps in zip(
                    score.top_ids.tolist(), score.top_logprobs.tolist(), strict=True
                )
            ]
        chars = [
            CharScore(char=ch, offset=i, logprob=values[i], top=tops[i] if tops else None)
            for i, ch in enumerate(text)
        ]
    nats = score.nats_per_char
    return TextScoreResult(
        logprob=score.logprob,
        bits_per_char=bits_per_char(nats),
        perplexity=perplexity(nats),
        num_chars=score.num_chars,
        num_unknown=score.num_unknown,
        per_char=chars,
    )
