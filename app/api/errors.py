"""One error shape for every failure, OpenAI's: ``{"error": {"message", "type", "param", "code"}}``.

Routes and dependencies raise ``APIError`` or let the domain errors through (the engine's, the model
store's, a request over the operator's limits); the handlers installed by ``install_error_handlers``
turn those, FastAPI's own 404/405/422 and anything unexpected into that shape (``as_api_error``
maps each domain error to its status). Nothing else in the app builds error responses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas.common import LimitExceededError
from app.engine.errors import (
    CannotAdaptError,
    CannotGenerateError,
    EngineClosedError,
    EngineError,
    QueueFullError,
)
from app.store import (
    ModelNotFoundError,
    ModelRequiredError,
    ModelUnavailableError,
    NoModelError,
    StoreError,
)

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
OVERLOADED = "overloaded_error"
UNAVAILABLE = "service_unavailable_error"
SERVER = "server_error"


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx response."""

    error: ErrorBody


class APIError(Exception):
    """An error a client should see, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def body(self) -> dict[str, Any]:
        """The error shape (``ErrorResponse``) as JSON-ready data."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": error}


#: what a route that calls a model may answer besides 200
MODEL_ROUTE_ERRORS = (400, 401, 404, 413, 422, 429, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer each of ``statuses`` with the error shape."""
    return {status: {"model": ErrorResponse} for status in statuses}


# domain errors -> (status, type, code, param); the message is the error's own
_MAPPED: tuple[tuple[type[Exception], int, str, str, str | None], ...] = (
    (CannotGenerateError, 400, INVALID_REQUEST, "cannot_generate", "model"),
    (CannotAdaptError, 400, INVALID_REQUEST, "cannot_adapt", "adapt"),
    (ModelRequiredError, 400, INVALID_REQUEST, "model_required", "model"),
    (ModelNotFoundError, 404, INVALID_REQUEST, "model_not_found", "model"),
    (ModelUnavailableError, 404, INVALID_REQUEST, "model_unavailable", "model"),
    (NoModelError, 503, UNAVAILABLE, "no_model", None),
    (EngineClosedError, 503, UNAVAILABLE, "engine_closed", None),
)
#: every error class the handlers map (``install_error_handlers`` registers each)
DOMAIN_ERRORS: tuple[type[Exception], ...] = (
    EngineError,
    StoreError,
    LimitExceededError,
    TimeoutError,
)


def as_api_error(exc: Exception) -> APIError:
    """The client-facing error for any exception (also used for errors inside a stream)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFullError):
        retry = max(1, round(exc.retry_after))
        return APIError(
            429,
            str(exc),
            type=OVERLOADED,
            code="queue_full",
            headers={"Retry-After": str(retry)},
        )
    if isinstance(exc, LimitExceededError):
        return APIError(413, str(exc), param=exc.param, code=exc.code)
    for error_class, status, kind, code, param in _MAPPED:
        if isinstance(exc, error_class):
            return APIError(status, str(exc), type=kind, param=param, code=code)
    if isinstance(exc, TimeoutError):
        return APIError(
            503, "the request took longer than the server allows", type=UNAVAILABLE, code="timeout"
        )
    logger.exception("unexpected error", exc_info=exc)
    return APIError(500, "internal server error", type=SERVER, code="internal_error")


# ---------------------------------------------------------------------------- validation messages
def _loc_to_param(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else "body"


def _bounds_of(model: type[BaseModel] | None, name: str) -> str | None:
    """``"0 <= temperature <= 10"`` from the field's published JSON schema, for messages."""
    if model is None:
        return None
    prop = model.model_json_schema().get("properties", {}).get(name)
    if not isinstance(prop, dict):
        return None
    for variant in [prop, *prop.get("anyOf", [])]:
        lower = upper = ""
        if "minimum" in variant:
            lower = f"{variant['minimum']} <= "
        elif "exclusiveMinimum" in variant:
            lower = f"{variant['exclusiveMinimum']} < "
        if "maximum" in variant:
            upper = f" <= {variant['maximum']}"
        elif "exclusiveMaximum" in variant:
            upper = f" < {variant['exclusiveMaximum']}"
        if lower or upper:
            return f"{lower}{name}{upper}"
    return None


def describe_validation_errors(
    errors: Sequence[Any], model: type[BaseModel] | None = None
) -> tuple[str, str | None]:
    """A readable message naming each bad field (and its allowed range) and the first field."""
    messages: list[str] = []
    first: str | None = None
    for err in errors:
        loc = tuple(err.get("loc", ()))
        param = _loc_to_param(loc)
        kind = err.get("type", "")
        if kind == "json_invalid":
            text = f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
            param = "body"
        elif kind == "extra_forbidden":
            allowed = ", ".join(model.model_fields) if model else ""
            text = f"unknown field {param!r}" + (f" (allowed: {allowed})" if allowed else "")
        elif kind == "missing":
            text = f"{param}: field required"
        else:
            text = f"{param}: {err.get('msg', 'invalid value')}"
            field = str(loc[1]) if len(loc) > 1 and loc[0] == "body" else ""
            bounds = _bounds_of(model, field) if len(loc) == 2 else None
            if bounds and kind in {
                "greater_than",
                "greater_than_equal",
                "less_than",
                "less_than_equal",
            }:
                text += f" (allowed: {bounds})"
        if first is None:
            first = param
        messages.append(text)
    return "; ".join(messages) or "invalid request", first


def _body_model(request: Request) -> type[BaseModel] | None:
    route = request.scope.get("route")
    model = getattr(route, "body_field", None)
    annotation = getattr(getattr(model, "field_info", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception the app can meet to the one error shape."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return exc.response()

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = describe_validation_errors(exc.errors(), _body_model(request))
        return APIError(422, message, param=param, code="invalid_parameter").response()

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        if status == 404:
            message = f"no route {request.method} {request.url.path}"
        elif status == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        kind = SERVER if status >= 500 else INVALID_REQUEST
        code = _STATUS_CODES.get(status, f"http_{status}")
        return APIError(status, message, type=kind, code=code, headers=exc.headers).response()

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        return as_api_error(exc).response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for error in DOMAIN_ERRORS:
        app.add_exception_handler(error, domain_error)
    app.add_exception_handler(Exception, domain_error)
