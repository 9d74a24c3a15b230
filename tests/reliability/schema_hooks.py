"""Schemathesis checks of charlm's own promises, loaded with ``SCHEMATHESIS_HOOKS``.

The built-in ``positive_data_acceptance`` check treats every 4xx answer to a schema-valid request
as a failure. A few refusals of a schema-valid request are right, and the schema cannot express
them; ``schema_valid_request_accepted`` replaces that check and allows exactly those:

- 400 with a code saying that the named model cannot do what was asked (a left-to-right model
  asked to infill, a bidirectional one asked to generate), or that several models are loaded and
  the request names none;
- 404 for a model id that matches the id pattern but names no loaded model;
- 413 for a masked-character count or for per-character output (texts x characters x
  alternatives) over the server's bound: products of sizes are not schema properties;
- 422 for a rule between fields (``param == "body"``: ``stream_options`` without ``stream``,
  ``top_k`` without ``per_char``, ``logprobs`` with ``stream``), each stated in the field docs.

A 422 that names a field is a failure: the schema allowed a value the server refused.

``CHARLM_FUZZ_AUTH`` says what the run sends: ``off`` (the server has no keys), ``with-key``
(every request carries a valid key: a 401 is a failure) or ``without-key`` (no key is sent: every
``/v1`` operation must answer 401 and nothing else must).
"""

from __future__ import annotations

import os
import re
import zlib
from typing import Any

import schemathesis

from app.settings import MODEL_ID_PATTERN

SEMANTIC_400 = {
    "not_bidirectional",
    "bidirectional_model",
    "cannot_generate",
    "cannot_adapt",
    "model_required",
    "invalid_infill",
}
SEMANTIC_404 = {"model_not_found", "model_unavailable"}
SEMANTIC_413 = {"too_many_masked_chars", "per_char_output_too_large", "adapt_text_too_long"}
OPEN_PATHS = {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc", "/"}


def _error(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except Exception:
        raise AssertionError(
            f"{response.status_code} answer is not JSON: {response.text[:200]!r}"
        ) from None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not {"message", "type", "param", "code"} <= set(error):
        raise AssertionError(f"{response.status_code} answer is not the error shape: {body!r}")
    return error


def _path(case: Any) -> str:
    return str(case.operation.path)


@schemathesis.check
def error_shape(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx and 5xx answer is ``{"error": {"message", "type", "param", "code"}}``."""
    if response.status_code >= 400:
        _error(response)


@schemathesis.check
def api_key_enforced(ctx: Any, response: Any, case: Any) -> None:
    """401 exactly where the run's ``CHARLM_FUZZ_AUTH`` says it must be."""
    mode = os.environ.get("CHARLM_FUZZ_AUTH", "off")
    # a method the operation does not have is refused (405) by routing, before any key check
    documented = str(case.method).upper() == str(case.operation.method).upper()
    secured = _path(case).startswith("/v1/") and documented
    if mode == "without-key" and secured:
        if response.status_code != 401:
            raise AssertionError(
                f"{case.method} {_path(case)} answered {response.status_code} without an API key"
            )
        if _error(response)["code"] not in {"missing_api_key", "invalid_api_key"}:
            raise AssertionError(f"401 with an unexpected code: {_error(response)}")
    elif response.status_code == 401:
        raise AssertionError(f"{case.method} {_path(case)} answered 401 ({mode})")


@schemathesis.check
def schema_valid_request_accepted(ctx: Any, response: Any, case: Any) -> None:
    """A schema-valid request is served, or refused only for a reason the schema cannot state."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return
    status = response.status_code
    if status < 400 or status in (401, 429) or status >= 500:
        return  # 5xx is not_a_server_error's business; 401 api_key_enforced's
    error = _error(response)
    code = error["code"]
    if status == 400 and code in SEMANTIC_400:
        return
    if status == 404 and code in SEMANTIC_404:
        return
    if status == 413 and code in SEMANTIC_413:
        return
    if status == 422 and error["param"] == "body":
        return
    raise AssertionError(
        f"schema-valid request refused with {status} ({code}, param {error['param']!r}):"
        f" {error['message']}"
    )


# ---------------------------------------------------------------------------- test data
_MODEL_ID = re.compile(MODEL_ID_PATTERN)


def _loaded_models() -> list[str]:
    return [m for m in os.environ.get("CHARLM_FUZZ_MODELS", "").split(",") if m]


def _pick_model(value: str) -> str:
    """Two times in three, a loaded model instead of a random id (a stable choice per value),
    so requests reach the models; the third keeps the random id, which tests the 404."""
    models = _loaded_models()
    choice = zlib.crc32(value.encode("utf-8", "surrogatepass")) % (len(models) + 1)
    return models[choice] if choice < len(models) else value


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    """Only a ``model`` that is already a valid id is replaced: a request generated to break
    the schema elsewhere stays broken."""
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and _MODEL_ID.match(model):
        return {**body, "model": _pick_model(model)}
    return body


@schemathesis.hook
def map_path_parameters(context: Any, path_parameters: Any) -> Any:
    model = path_parameters.get("model_id") if isinstance(path_parameters, dict) else None
    if isinstance(model, str) and model:
        return {**path_parameters, "model_id": _pick_model(model)}
    return path_parameters
