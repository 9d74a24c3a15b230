"""``GET /v1/models`` and ``GET /v1/models/{model_id}``."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep
from app.api.errors import ErrorResponse
from app.api.schemas.models import ModelCard, ModelDetails, ModelList

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", responses={401: {"model": ErrorResponse}})
async def list_models(services: ServicesDep) -> ModelList:
    """Every checkpoint of the models folder, ready or unavailable (OpenAI's list shape)."""
    entries = services.store.entries.values()
    return ModelList(data=[ModelCard.of(e) for e in entries])


@router.get("/models/{model_id}", responses={c: {"model": ErrorResponse} for c in (401, 404)})
async def get_model(model_id: str, services: ServicesDep) -> ModelDetails:
    """Architecture, sizes, parameter count, vocabulary size and training summary."""
    return ModelDetails.of(services.store.find(model_id))
