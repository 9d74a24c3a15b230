"""Types and limits shared by the request schemas.

Fixed bounds (list sizes, temperature range, ...) are ``Field`` bounds; those of a generation's
settings come from ``app.engine.params``, the ones ``GenerationParams`` checks. Bounds set by the
operator (``CHARLM_MAX_TEXT_CHARS``, ``CHARLM_MAX_NEW_CHARS``, ``CHARLM_MAX_ADAPT_CHARS``) are
marked with ``x-charlm-limit`` in the JSON schema; ``apply_limits_to_openapi`` writes their
configured values into the published OpenAPI document (a flag whose work a limit bounds, such as
``adapt``, gets it as ``x-charlm-limit-value``), and ``check_text``, ``check_new_chars`` and
``check_adapt_chars`` enforce them (``LimitExceededError``, answered with a 413).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict
from pydantic.json_schema import JsonDict

from app.engine.params import MAX_SEED, MAX_STOP_CHARS
from app.settings import MODEL_ID_PATTERN

MAX_TEXTS = 64  # texts in one score request
MAX_PROMPTS = 16  # prompts in one completions request
MAX_SCORE_TOP_K = 20  # alternatives per character in /v1/score
MAX_LOGPROBS = 5  # alternatives per character in /v1/completions (OpenAI's limit)
# per-character output (a logprob and its alternatives per character) of one response, at most:
# about 50 bytes of JSON each, so responses stay in the tens of megabytes
MAX_PER_CHAR_ENTRIES = 250_000

TEXT_LIMIT: JsonDict = {"x-charlm-limit": "max_text_chars"}
NEW_CHARS_LIMIT: JsonDict = {"x-charlm-limit": "max_new_chars"}
ADAPT_CHARS_LIMIT: JsonDict = {"x-charlm-limit": "max_adapt_chars"}


def _valid_unicode(text: str) -> str:
    """Reject lone surrogates (JSON's ``\\ud800`` escapes): they are not characters.

    Encoding finds the first one in C (a Python loop over a long text costs milliseconds)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        offset = error.start
        raise ValueError(
            f"text holds a lone surrogate U+{ord(text[offset]):04X} at offset {offset};"
            " send valid Unicode"
        ) from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
# true or false only: the schema says boolean, so 0, 1 or "yes" are refused, not coerced
Flag = Annotated[bool, Strict()]
ModelId = Annotated[
    str, Field(pattern=MODEL_ID_PATTERN, description="model id; the default model when omitted")
]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
StopString = Annotated[Text, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class LimitExceededError(ValueError):
    """A request over one of the operator's limits or the size of reply a request may ask for
    (the API answers 413 naming ``param``)."""

    def __init__(self, message: str, param: str, code: str) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class StrictModel(BaseModel):
    """Requests: unknown fields are an error (a typo must fail, not be ignored)."""

    model_config = ConfigDict(extra="forbid")


class Limits(BaseModel):
    """The operator's limits a request is checked against (from Settings)."""

    max_text_chars: int
    max_new_chars: int
    max_adapt_chars: int


def check_text(text: str, param: str, limits: Limits) -> None:
    if len(text) > limits.max_text_chars:
        raise LimitExceededError(
            f"{param} has {len(text)} characters; this server accepts at most"
            f" {limits.max_text_chars} (CHARLM_MAX_TEXT_CHARS)",
            param,
            "text_too_long",
        )


def check_new_chars(value: int, param: str, limits: Limits) -> None:
    if value > limits.max_new_chars:
        raise LimitExceededError(
            f"{param} is {value}; this server generates at most {limits.max_new_chars}"
            " characters per completion (CHARLM_MAX_NEW_CHARS)",
            param,
            "max_new_chars_exceeded",
        )


def check_adapt_chars(chars: int, param: str, limits: Limits) -> None:
    """413 when a request to score adaptively holds more characters than the operator allows."""
    if chars > limits.max_adapt_chars:
        raise LimitExceededError(
            f"adaptive scoring of {chars} characters (texts and context together); this server"
            f" adapts to at most {limits.max_adapt_chars} per request (CHARLM_MAX_ADAPT_CHARS):"
            " send fewer or shorter texts, or score without adapt",
            param,
            "adapt_text_too_long",
        )


def check_per_char_entries(chars: int, alternatives: int, param: str) -> None:
    """413 when ``chars`` characters with ``alternatives`` each would make too large a reply."""
    entries = chars * (1 + alternatives)
    if entries > MAX_PER_CHAR_ENTRIES:
        raise LimitExceededError(
            f"per-character output of {chars} characters with {alternatives} alternatives each"
            f" is {entries} entries; a request may ask for at most {MAX_PER_CHAR_ENTRIES}"
            " (score fewer characters or ask for fewer alternatives)",
            param,
            "per_char_output_too_large",
        )


def _set_limit(node: dict[str, Any], value: int) -> None:
    kind = node.get("type")
    if kind == "string":
        node["maxLength"] = value
    elif kind == "integer":
        node["maximum"] = value
    elif kind == "array" and isinstance(node.get("items"), dict):
        _set_limit(node["items"], value)
    elif kind == "boolean":  # a flag whose work the limit bounds
        node["x-charlm-limit-value"] = value
    for variant in node.get("anyOf", []):
        _set_limit(variant, value)


def apply_limits_to_openapi(schema: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Write the configured limits into every schema property marked ``x-charlm-limit``."""
    values = limits.model_dump()
    for component in schema.get("components", {}).get("schemas", {}).values():
        for prop in component.get("properties", {}).values():
            name = prop.get("x-charlm-limit")
            if name in values:
                _set_limit(prop, values[name])
    return schema
