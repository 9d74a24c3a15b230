"""Pre-serialised responses of hot routes: the same JSON FastAPI would send, written once."""

from __future__ import annotations

import inspect
import json

from app.api import deps
from app.api.responses import model_response
from app.api.schemas.score import ScoreResponse, ScoreUsage, TextScoreResult


def _response(logprob: float) -> ScoreResponse:
    result = TextScoreResult(
        logprob=logprob, bits_per_char=1.5, perplexity=2.0, num_chars=3, num_unknown=0
    )
    usage = ScoreUsage(chars_scored=3, context_chars=0)
    return ScoreResponse(model="m", mode="causal", results=[result], usage=usage)


def test_model_response_is_the_models_json() -> None:
    model = _response(-2.5)
    response = model_response(model)
    assert response.status_code == 200
    assert response.media_type == "application/json"
    body = json.loads(bytes(response.body))
    assert body == model.model_dump(mode="json")
    assert ScoreResponse.model_validate(body) == model


def test_non_finite_floats_become_null_rather_than_failing() -> None:
    body = json.loads(bytes(model_response(_response(float("-inf"))).body))
    assert body["results"][0]["logprob"] is None


def test_dependencies_run_on_the_event_loop() -> None:
    """A plain ``def`` dependency is run in FastAPI's thread pool: a thread hop per request."""
    assert inspect.iscoroutinefunction(deps.get_services)
    assert inspect.iscoroutinefunction(deps.require_api_key)
