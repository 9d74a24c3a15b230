"""``GET /v1/models``, ``GET /v1/models/{model_id}`` and ``POST /v1/models/reload``."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep
from app.api.errors import UNAVAILABLE, APIError, error_responses
from app.api.schemas.models import (
    ModelCard,
    ModelChangeInfo,
    ModelDetails,
    ModelList,
    ModelUpdate,
    ReloadResponse,
)
from app.store import ModelEntry, ModelStore

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", responses=error_responses(401))
async def list_models(services: ServicesDep) -> ModelList:
    """Every checkpoint of the models folder, ready or unavailable (OpenAI's list shape)."""
    return ModelList(data=model_cards(services.store))


# before /models/{model_id}: a wrong method on /models/reload is answered with Allow: POST
@router.post("/models/reload", responses=error_responses(401, 503))
async def reload_models(services: ServicesDep) -> ReloadResponse:
    """Check the models folder now (the server also does every ``CHARLM_RELOAD_INTERVAL_S``),
    retrying files that failed; returns once every new version serves, with what changed."""
    store = services.store
    if store.draining:
        raise APIError(503, "the server is shutting down", type=UNAVAILABLE, code="draining")
    changes = await store.reload()
    return ReloadResponse(
        changes=[
            ModelChangeInfo(id=c.id, change=c.change, sha256=c.sha256, error=c.error)
            for c in changes
        ],
        data=model_cards(store),
    )


@router.get("/models/{model_id}", responses=error_responses(401, 404))
async def get_model(model_id: str, services: ServicesDep) -> ModelDetails:
    """Architecture, sizes, parameter count, vocabulary size and training summary."""
    store = services.store
    return model_details(store.find(model_id), store.draining_versions(model_id))


def model_cards(store: ModelStore) -> list[ModelCard]:
    return [model_card(e, store.draining_versions(e.id)) for e in store.entries.values()]


def model_card(entry: ModelEntry, draining: int = 0) -> ModelCard:
    identity, update = entry.identity, entry.update
    return ModelCard(
        id=entry.id,
        created=entry.created,
        status=entry.status,
        error=entry.error,
        sha256=entry.sha256,
        size_bytes=identity.size if identity is not None else None,
        loaded_at=int(entry.loaded_at) if entry.loaded_at is not None else None,
        draining=draining,
        update=None
        if update is None
        else ModelUpdate(
            status=update.status,
            error=update.error,
            sha256=update.sha256,
            size_bytes=update.identity.size,
            created=update.identity.modified,
        ),
    )


def model_details(entry: ModelEntry, draining: int = 0) -> ModelDetails:
    """The card plus what the checkpoint says about the model (nothing more when unavailable)."""
    card = model_card(entry, draining).model_dump()
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
