"""Request dependencies: the app's services (built in the lifespan) and the API-key check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.api.errors import AUTHENTICATION, APIError
from app.api.schemas.common import Limits
from app.metrics import Metrics
from app.settings import Settings
from app.store import ModelStore


@dataclass
class Services:
    """Everything routes need, kept in ``app.state.services`` for the app's lifetime."""

    settings: Settings
    metrics: Metrics
    store: ModelStore
    api_keys: list[bytes]
    limits: Limits


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool (a thread hop per request)
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def key_matches(candidate: bytes, keys: list[bytes]) -> bool:
    """Constant-time comparison against every key (no early exit that timing could reveal)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


def authorization_error(header: str, keys: list[bytes]) -> APIError | None:
    """The 401 for an ``Authorization`` header value; None when keys are off or it holds one."""
    if not keys:
        return None
    scheme, _, token = header.partition(" ")
    if not header:
        message, code = "missing API key: send 'Authorization: Bearer <key>'", "missing_api_key"
    elif scheme.lower() != "bearer" or not token.strip():
        message, code = "the Authorization header must be 'Bearer <key>'", "invalid_api_key"
    elif not key_matches(token.strip().encode("utf-8", "surrogateescape"), keys):
        message, code = "invalid API key", "invalid_api_key"
    else:
        return None
    return APIError(
        401, message, type=AUTHENTICATION, code=code, headers={"WWW-Authenticate": "Bearer"}
    )


async def require_api_key(request: Request, services: ServicesDep) -> None:
    """401 unless API keys are off or the request carries ``Authorization: Bearer <a key>``."""
    error = authorization_error(request.headers.get("authorization", ""), services.api_keys)
    if error is not None:
        raise error
