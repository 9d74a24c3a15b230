"""``GET /v1/models`` and ``GET /v1/models/{model_id}``."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep
from app.api.errors import error_responses
from app.api.schemas.models import ModelCard, ModelDetails, ModelList
from app.store import ModelEntry

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", responses=error_responses(401))
async def list_models(services: ServicesDep) -> ModelList:
    """Every checkpoint of the models folder, ready or unavailable (OpenAI's list shape)."""
    entries = services.store.entries.values()
    return ModelList(data=[model_card(e) for e in entries])


@router.get("/models/{model_id}", responses=error_responses(401, 404))
async def get_model(model_id: str, services: ServicesDep) -> ModelDetails:
    """Architecture, sizes, parameter count, vocabulary size and training summary."""
    return model_details(services.store.find(model_id))


def model_card(entry: ModelEntry) -> ModelCard:
    return ModelCard(id=entry.id, created=entry.created, status=entry.status, error=entry.error)


def model_details(entry: ModelEntry) -> ModelDetails:
    """The card plus what the checkpoint says about the model (nothing more when unavailable)."""
    card = model_card(entry).model_dump()
    ckpt = entry.checkpoint
    if ckpt is None or not entry.ready:
        return ModelDetails(**card, file=entry.file_name)
    config = ckpt.config
    return ModelDetails(
        **card,
        file=entry.file_name,
        arch=config.arch,
        can_generate=ckpt.model.can_generate,
        vocab_size=config.vocab_size,
        embed_size=config.embed_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_parameters=ckpt.model.num_parameters(),
        options=dict(config.options),
        training=dict(ckpt.training),
        checkpoint_created=ckpt.created or None,
    )
