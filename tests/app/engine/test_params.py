"""A generation's settings: checked once on construction, bounds shared with the API's schemas,
seeds per completion."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.schemas.completions import CompletionRequest
from app.api.schemas.generate import GenerateRequest
from app.engine.params import (
    DEFAULT_TEMPERATURE,
    MAX_N,
    MAX_SEED,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    FinishReason,
    GenerationParams,
)
from models.sampling import MAX_SEED as GENERATOR_MAX_SEED


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"max_chars": -1}, "max_chars"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": MAX_TEMPERATURE + 1}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"n": MAX_N + 1}, "n"),
        ({"seed": -1}, "seed"),
        ({"seed": MAX_SEED + 1}, "seed"),
        ({"stop": ("a", "b", "c", "d", "e")}, "stop"),
        ({"stop": ("",)}, "stop"),
    ],
)
def test_out_of_range_settings_are_refused_naming_the_field(
    fields: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        GenerationParams(**{"max_chars": 10, **fields})


def test_seeds_follow_the_base_and_a_random_base_stays_reproducible() -> None:
    assert GenerationParams(5, seed=40, n=3).seeds() == [40, 41, 42]
    for _ in range(20):
        seeds = GenerationParams(5, n=MAX_N).seeds()
        assert seeds == list(range(seeds[0], seeds[0] + MAX_N))
        assert seeds[0] >= 0 and seeds[-1] <= MAX_SEED  # each one can be sent back
    assert MAX_SEED + MAX_N <= GENERATOR_MAX_SEED  # and each one seeds a torch generator


def test_both_request_schemas_publish_the_params_bounds_and_default() -> None:
    for schema in (GenerateRequest, CompletionRequest):
        properties = schema.model_json_schema()["properties"]

        def bound(name: str, key: str, props: dict[str, Any] = properties) -> Any:
            prop = props[name]
            variants = [prop, *prop.get("anyOf", [])]
            return next(v[key] for v in variants if key in v)

        assert bound("temperature", "maximum") == MAX_TEMPERATURE
        assert bound("top_k", "maximum") == MAX_TOP_K
        assert bound("n", "maximum") == MAX_N
        assert bound("seed", "maximum") == MAX_SEED
    generate = GenerateRequest().to_params()
    completions = CompletionRequest().to_params()
    assert generate.temperature == completions.temperature == DEFAULT_TEMPERATURE


def test_each_schema_builds_one_params_object() -> None:
    body = {"prompt": "ab", "temperature": 0.5, "top_k": 3, "top_p": 0.9, "seed": 7, "n": 2}
    generate = GenerateRequest(**body, max_chars=12, stop=["x", "yz"]).to_params()
    completions = CompletionRequest(**body, max_tokens=12, stop=["x", "yz"]).to_params()
    assert generate == completions == GenerationParams(12, 0.5, 3, 0.9, ("x", "yz"), 7, 2)
    assert CompletionRequest(stop="x").to_params().stop == ("x",)


def test_finish_reasons_are_the_wire_values() -> None:
    assert [r.value for r in FinishReason] == ["length", "stop", "timeout", "abort"]
    assert FinishReason.STOP == "stop"
