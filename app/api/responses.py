"""Responses written by the routes themselves: Server-Sent Events and pre-serialised JSON.

Server-Sent Events: ``data: {json}\\n\\n`` per event, ``data: [DONE]\\n\\n`` at the end. An error
after the stream started cannot change the status any more; it becomes an event
``data: {"error": {...}}`` followed by ``[DONE]``.

JSON: a route that returns a pydantic model has FastAPI validate it again against the route's
response model, turn it into Python objects and encode those with the standard ``json`` module;
for a model built by the route itself that is all repeated work (about a third of a scoring
request's time on the event loop). ``model_response`` encodes the model with pydantic's own
serialiser and hands FastAPI a ready ``Response``, which it passes through untouched; the route
still declares its ``response_model`` for the OpenAPI schema.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.api.errors import MODEL_ROUTE_ERRORS, as_api_error, error_responses

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse_responses(description: str, *events: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a model route (``MODEL_ROUTE_ERRORS``) whose 200 may also be an event
    stream of ``events``.

    OpenAPI 3.1 describes a stream by one event: its ``data`` is ``[DONE]`` or JSON matching one
    of ``events`` or the error shape. Nested models are referenced in ``#/components/schemas``,
    where FastAPI puts every model a route names as a body or response (a test checks that every
    reference resolves).
    """
    template = "#/components/schemas/{model}"
    payloads: list[dict[str, Any]] = []
    for model in events:
        schema = model.model_json_schema(ref_template=template)
        schema.pop("$defs", None)
        payloads.append(schema)
    payloads.append({"$ref": template.format(model="ErrorResponse")})
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "else": {
                    "contentMediaType": "application/json",
                    "contentSchema": {"anyOf": payloads},
                },
            }
        },
    }
    stream = {"content": {"text/event-stream": {"schema": event}}, "description": description}
    return {**error_responses(*MODEL_ROUTE_ERRORS), 200: stream}


def sse_event(payload: Any) -> bytes:
    """One event; JSON escapes newlines, so a payload is always a single ``data:`` line."""
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def sse_body(events: AsyncIterator[Any]) -> AsyncGenerator[bytes, None]:
    """Frame ``events`` (JSON-able objects), then ``[DONE]``; errors become an error event."""
    try:
        async for payload in events:
            yield sse_event(payload)
    except Exception as exc:
        error = as_api_error(exc)
        logger.warning("stream ended by an error: %s", error.message)
        yield sse_event(error.body())
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
    yield DONE


class SSEResponse(StreamingResponse):
    """A streaming response that always closes its body iterator, so a client that disconnects
    cancels the generation behind it at once rather than when the garbage collector runs."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[Any], headers: dict[str, str] | None = None) -> None:
        self._body = sse_body(events)
        super().__init__(
            self._body,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._body.aclose()


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as an ``application/json`` response (non-finite floats become ``null``)."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")
