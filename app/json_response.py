"""Responses of hot routes, serialised once.

A route that returns a pydantic model has FastAPI validate it again against the route's response
model, turn it into Python objects and encode those with the standard ``json`` module; for a
model built by the route itself that is all repeated work (about a third of a scoring request's
time on the event loop). ``model_response`` encodes the model with pydantic's own serialiser and
hands FastAPI a ready ``Response``, which it passes through untouched; the route still declares
its ``response_model`` for the OpenAPI schema.
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import Response


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as an ``application/json`` response (non-finite floats become ``null``)."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")
