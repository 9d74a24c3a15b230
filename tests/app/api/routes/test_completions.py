"""POST /v1/completions: OpenAI's legacy shapes, scoring by echo + logprobs, streaming chunks."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.app.api.routes.test_generate import parse_sse


def complete(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_response_shape(client: Any) -> None:
    body = complete(client, prompt="alpha ", max_tokens=10, temperature=0)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "tiny" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] == "length" and len(choice["text"]) == 10
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 10, "total_tokens": 16}
    generated = client.post(
        "/v1/generate", json={"prompt": "alpha ", "max_chars": 10, "temperature": 0}
    ).json()
    assert choice["text"] == generated["completions"][0]["text"]


def test_echo_logprobs_max_tokens_zero_equals_score(client: Any) -> None:
    text = "gamma 2 ammag."
    body = complete(client, prompt=text, max_tokens=0, echo=True, logprobs=3)
    (choice,) = body["choices"]
    assert choice["text"] == text
    lp = choice["logprobs"]
    assert lp["tokens"] == list(text)
    assert lp["text_offset"] == list(range(len(text)))
    first = lp["token_logprobs"][0]  # the first character is scored too (others send null)
    assert isinstance(first, float) and first < 0
    scored = client.post("/v1/score", json={"texts": [text], "per_char": True, "top_k": 3}).json()
    per_char = scored["results"][0]["per_char"]
    for got, want in zip(lp["token_logprobs"], per_char, strict=True):
        assert math.isclose(got, want["logprob"], abs_tol=1e-6)
    for got_top, want in zip(lp["top_logprobs"], per_char, strict=True):
        assert list(got_top) == [t["char"] for t in want["top"]]
    assert math.isclose(sum(lp["token_logprobs"]), scored["results"][0]["logprob"], abs_tol=1e-5)
    assert body["usage"]["completion_tokens"] == 0


def test_logprobs_of_a_completion_are_conditioned_on_the_prompt(client: Any) -> None:
    body = complete(client, prompt="beta ", max_tokens=6, temperature=0, logprobs=1)
    (choice,) = body["choices"]
    lp = choice["logprobs"]
    assert lp["tokens"] == list(choice["text"])
    assert lp["text_offset"] == [5 + i for i in range(6)]  # offsets into prompt + completion
    scored = client.post("/v1/score", json={"texts": [choice["text"]], "context": "beta "}).json()
    assert math.isclose(sum(lp["token_logprobs"]), scored["results"][0]["logprob"], abs_tol=1e-5)
    # greedy: each chosen character is the single top alternative
    for token, top in zip(lp["tokens"], lp["top_logprobs"], strict=True):
        assert list(top) == [token]


def test_logprobs_zero_gives_no_alternatives(client: Any) -> None:
    lp = complete(client, prompt="a", max_tokens=3, logprobs=0)["choices"][0]["logprobs"]
    assert lp["top_logprobs"] is None and len(lp["token_logprobs"]) == 3


def test_prompt_list_and_n_give_prompt_major_choices(client: Any) -> None:
    body = complete(client, prompt=["alpha", "delta"], n=2, max_tokens=4, seed=9, echo=True)
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert [c["text"][:5] for c in choices] == ["alpha", "alpha", "delta", "delta"]
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 16, "total_tokens": 26}
    again = complete(client, prompt=["alpha", "delta"], n=2, max_tokens=4, seed=9, echo=True)
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in choices]


def test_stop_as_a_string(client: Any) -> None:
    greedy = complete(client, prompt="alpha ", max_tokens=20, temperature=0)["choices"][0]["text"]
    stop = greedy[2:4]
    choice = complete(client, prompt="alpha ", max_tokens=20, temperature=0, stop=stop)["choices"][
        0
    ]
    assert choice["text"] == greedy[: greedy.index(stop)] and choice["finish_reason"] == "stop"


def test_stream_chunks_have_the_completion_shape(client: Any) -> None:
    request = {"prompt": "beta", "max_tokens": 12, "temperature": 0, "echo": True}
    whole = complete(client, **request)["choices"][0]["text"]
    body = {**request, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        events = parse_sse("".join(response.iter_text()))
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 4, "completion_tokens": 12, "total_tokens": 16}
    chunks = events[:-2]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in events[:-1]}) == 1
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[0]["choices"][0]["text"] == "beta"  # the echo comes first
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["usage"] is None for c in chunks)


@pytest.mark.parametrize(
    "body",
    [
        {"stream": True, "logprobs": 1},
        {"logprobs": 6},
        {"presence_penalty": 0.5},
        {"stream_options": {"include_usage": True}},
        {"prompt": []},
        {"prompt": ["a"] * 17},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"best_of": 2},
        {"prompt": [1, 2, 3]},
    ],
)
def test_unsupported_or_invalid_fields_are_422(client: Any, body: dict[str, Any]) -> None:
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_zero_penalties_and_user_are_accepted(client: Any) -> None:
    body = {"max_tokens": 1, "presence_penalty": 0, "frequency_penalty": 0.0, "user": "u1"}
    assert len(complete(client, **body)["choices"]) == 1
