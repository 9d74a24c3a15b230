"""Liveness, readiness and Prometheus metrics; open even when API keys are required."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from app.api.deps import ServicesDep
from app.api.errors import UNAVAILABLE, APIError, error_responses

router = APIRouter(tags=["health"])


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    models: list[str]
    unavailable: list[str]


@router.get("/health")
async def health() -> HealthResponse:
    """The process is up and answering."""
    return HealthResponse(status="ok")


@router.get("/ready", responses=error_responses(503))
async def ready(services: ServicesDep) -> ReadyResponse:
    """200 once at least one model is loaded; 503 before (or when none could be), and
    ``draining`` from the moment the server is asked to stop."""
    store = services.store
    if store.draining:
        raise APIError(503, "the server is shutting down", type=UNAVAILABLE, code="draining")
    ready_ids = store.ready_ids()
    if not ready_ids:
        raise APIError(503, "no model is loaded yet", type=UNAVAILABLE, code="not_ready")
    unavailable = [e.id for e in store.entries.values() if not e.ready]
    return ReadyResponse(status="ready", models=ready_ids, unavailable=unavailable)


@router.get("/metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text format."""
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
