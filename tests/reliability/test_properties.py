"""Property tests: any Unicode text and any allowed sampling setting, through the real app.

Scoring never fails and its invariants hold (per-character logprobs sum to the total, perplexity
is exp(-logprob / num_chars), every code point is scored once); generation respects ``max_chars``
and stop strings; a lone surrogate sent as a JSON escape is a 422 naming it; nothing is a 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.main import create_app
from app.settings import Settings
from models.checkpoint import load_checkpoint
from models.vocab import UNK, UNK_ID, CharVocab
from tests.reliability.conftest import ModelsFolder

MAX_TEXT = 600
MAX_NEW = 80

# characters a tokenizer-free model meets in the wild: controls, NUL, combining marks, emoji
# (with joiners and skin tones), CJK, right-to-left scripts, bidi controls, BOM, noncharacters
SPECIAL = [
    "\x00", "\x07", "\x1b", "\x7f", "\r\n", "\t", "\u0301", "e\u0301", "\u200d", "\u200f",
    "\u202e", "\ufeff", "\ufffd", "\uffff", "🙂", "👩🏽‍💻", "🇫🇷", "日本語", "한국어", "שלום",
    "مرحبا", "\U0010ffff", "\U0001d54f", "ﷺ", " ", "",
]  # fmt: skip
unicode_text = st.lists(
    st.one_of(st.text(st.characters(codec="utf-8"), max_size=12), st.sampled_from(SPECIAL)),
    max_size=12,
).map("".join)
texts = st.one_of(unicode_text, st.text(alphabet="abdeglhmpt .\n0123456", max_size=120))

HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def vocab(models_folder: ModelsFolder) -> CharVocab:
    """The vocabulary of the model the client scores with (``tiny``)."""
    return load_checkpoint(models_folder.good).vocab


@pytest.fixture(scope="module")
def client(models_folder: ModelsFolder) -> Iterator[Any]:
    settings_ = Settings(
        models_dir=models_folder.path,
        default_model="tiny",
        max_text_chars=MAX_TEXT,
        max_new_chars=MAX_NEW,
    )
    with TestClient(create_app(settings_)) as test_client:
        yield test_client


def post(client: Any, path: str, body: dict[str, Any]) -> Any:
    response = client.post(path, json=body)
    assert response.status_code < 500, response.text
    return response


def check_score(result: dict[str, Any], text: str, top_k: int, vocab: CharVocab) -> None:
    n = len(text)
    assert result["num_chars"] == n
    logprob = result["logprob"]
    assert math.isfinite(logprob) and logprob <= 1e-6
    if n == 0:
        assert logprob == 0 and result["perplexity"] == 1
        assert result["per_char"] == []
        return
    per_char = result["per_char"]
    assert [c["char"] for c in per_char] == list(text)
    assert [c["offset"] for c in per_char] == list(range(n))
    total = sum(c["logprob"] for c in per_char)
    assert math.isclose(total, logprob, rel_tol=1e-5, abs_tol=1e-4)
    assert math.isclose(result["perplexity"], math.exp(-logprob / n), rel_tol=1e-6)
    assert math.isclose(result["bits_per_char"], -logprob / n / math.log(2), rel_tol=1e-6)
    for entry in per_char:
        assert math.isfinite(entry["logprob"]) and entry["logprob"] <= 1e-6
        if top_k:
            check_alternatives(entry, top_k, vocab)


def check_alternatives(entry: dict[str, Any], top_k: int, vocab: CharVocab) -> None:
    """The k likeliest characters, sorted; the scored character (``<unk>`` if the model does not
    know it) is among them with its own logprob, or no likelier than the last of them."""
    top = {t["char"]: t["logprob"] for t in entry["top"]}
    values = [t["logprob"] for t in entry["top"]]
    assert len(values) == len(top) == top_k and values == sorted(values, reverse=True)
    assert values[0] >= entry["logprob"] - 1e-5  # nothing is likelier than the likeliest
    name = UNK if vocab.encode(entry["char"]) == [UNK_ID] else entry["char"]
    if name in top:
        assert math.isclose(top[name], entry["logprob"], rel_tol=1e-5, abs_tol=1e-5)
    else:
        assert entry["logprob"] <= values[-1] + 1e-5, (entry, values)


@HYPOTHESIS
@given(
    batch=st.lists(texts, min_size=1, max_size=4),
    context=texts,
    top_k=st.integers(0, 5),
)
def test_scoring_any_text_keeps_its_invariants(
    client: Any, vocab: CharVocab, batch: list[str], context: str, top_k: int
) -> None:
    body = {"texts": batch, "context": context, "per_char": True, "top_k": top_k}
    response = post(client, "/v1/score", body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert len(data["results"]) == len(batch)
    for text, result in zip(batch, data["results"], strict=True):
        check_score(result, text, top_k, vocab)
    assert data["usage"]["chars_scored"] == sum(len(t) for t in batch)
    assert data["usage"]["context_chars"] == len(context)


@HYPOTHESIS
@given(text=texts, context=texts)
def test_a_text_scores_the_same_alone_and_in_a_batch(client: Any, text: str, context: str) -> None:
    alone = post(client, "/v1/score", {"texts": [text], "context": context}).json()
    batch = [text[:3], text, "alpha beta"]
    together = post(client, "/v1/score", {"texts": batch, "context": context}).json()
    assert math.isclose(
        alone["results"][0]["logprob"],
        together["results"][1]["logprob"],
        rel_tol=1e-5,
        abs_tol=1e-4,
    )


def test_empty_and_maximum_length_texts(client: Any, vocab: CharVocab) -> None:
    longest = ("gamma 3 ammag.\n" * MAX_TEXT)[:MAX_TEXT]
    data = post(
        client, "/v1/score", {"texts": ["", longest], "context": longest, "per_char": True}
    ).json()
    check_score(data["results"][0], "", 0, vocab)
    check_score(data["results"][1], longest, 0, vocab)
    over = post(client, "/v1/score", {"texts": [longest + "x"]})
    assert over.status_code == 413 and over.json()["error"]["param"] == "texts.0"
    generated = post(client, "/v1/generate", {"prompt": longest, "max_chars": MAX_NEW})
    assert generated.status_code == 200
    assert generated.json()["completions"][0]["num_chars"] == MAX_NEW
    assert post(client, "/v1/generate", {"max_chars": MAX_NEW + 1}).status_code == 413


@HYPOTHESIS
@given(
    prefix=st.text(alphabet="ab", max_size=5),
    surrogate=st.integers(0xD800, 0xDFFF),
    suffix=st.text(alphabet="cd", max_size=5),
    field=st.sampled_from(["texts", "context", "prompt", "stop"]),
)
def test_a_lone_surrogate_escape_is_a_422_naming_it(
    client: Any, prefix: str, surrogate: int, suffix: str, field: str
) -> None:
    escaped = f"{prefix}\\u{surrogate:04x}{suffix}"
    if field in ("texts", "context"):
        path = "/v1/score"
        raw = (
            f'{{"texts": ["{escaped}"]}}'
            if field == "texts"
            else f'{{"texts": ["a"], "context": "{escaped}"}}'
        )
    else:
        path = "/v1/generate"
        raw = f'{{"prompt": "{escaped}"}}' if field == "prompt" else f'{{"stop": ["{escaped}"]}}'
    response = client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert f"U+{surrogate:04X}" in response.json()["error"]["message"]


def test_a_surrogate_pair_escape_is_one_character(client: Any) -> None:
    raw = '{"texts": ["\\ud83d\\ude00x"], "per_char": true}'
    response = client.post("/v1/score", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert [c["char"] for c in response.json()["results"][0]["per_char"]] == ["😀", "x"]


stops = st.lists(
    st.one_of(st.sampled_from(["a", ".", "\n", " ", "ta", "amm", "🙂"]), unicode_text),
    max_size=4,
).map(lambda xs: [s[:64] for s in xs if s])
extreme_floats = st.sampled_from([1e-300, 1e-9, 0.01, 0.5, 1.0, 2.0, 9.999, 10.0])


@HYPOTHESIS
@given(
    prompt=texts,
    max_chars=st.integers(0, MAX_NEW),
    temperature=st.one_of(st.just(0.0), extreme_floats, st.floats(0, 10)),
    top_k=st.one_of(st.just(0), st.integers(1, 100_000)),
    top_p=st.one_of(st.sampled_from([5e-324, 1e-12, 0.3, 1.0]), st.floats(1e-6, 1.0)),
    stop=stops,
    n=st.integers(1, 3),
    seed=st.integers(0, 2**53 - 20),
)
def test_generation_respects_max_chars_and_stop_strings(
    client: Any,
    prompt: str,
    max_chars: int,
    temperature: float,
    top_k: int,
    top_p: float,
    stop: list[str],
    n: int,
    seed: int,
) -> None:
    assume(top_p > 0)
    body = {
        "prompt": prompt,
        "max_chars": max_chars,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "stop": stop,
        "n": n,
        "seed": seed,
    }
    response = post(client, "/v1/generate", body)
    assert response.status_code == 200, response.text
    data = response.json()
    completions = data["completions"]
    assert [c["index"] for c in completions] == list(range(n))
    assert [c["seed"] for c in completions] == [seed + i for i in range(n)]
    for c in completions:
        text = c["text"]
        assert c["num_chars"] == len(text) <= max_chars
        assert not any(s in text for s in stop), (text, stop)
        if c["finish_reason"] == "length":
            assert len(text) == max_chars
        else:
            assert c["finish_reason"] == "stop" and stop
    assert data["usage"]["completion_chars"] == sum(len(c["text"]) for c in completions)
    # the same request streamed: whole JSON events, the same texts, then [DONE]
    streamed = client.post("/v1/generate", json={**body, "stream": True})
    assert streamed.status_code == 200
    frames = streamed.text.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    events = [json.loads(f.removeprefix("data: ")) for f in frames[:-2]]
    pieces = [""] * n
    for event in events[:-1]:
        pieces[event["index"]] += event["text"]
    assert pieces == [c["text"] for c in completions]
    assert events[-1]["usage"] == data["usage"]


@HYPOTHESIS
@given(
    prompt=texts,
    logprobs=st.integers(0, 5),
    max_tokens=st.integers(0, 20),
    echo=st.booleans(),
    temperature=st.one_of(st.just(0.0), extreme_floats),
)
def test_completions_never_fail(
    client: Any, prompt: str, logprobs: int, max_tokens: int, echo: bool, temperature: float
) -> None:
    body = {
        "prompt": prompt,
        "logprobs": logprobs,
        "max_tokens": max_tokens,
        "echo": echo,
        "temperature": temperature,
        "seed": 3,
    }
    response = post(client, "/v1/completions", body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    expected = (prompt if echo else "") + choice["text"][len(prompt) if echo else 0 :]
    assert choice["text"] == expected
    tokens = choice["logprobs"]["tokens"]
    assert "".join(tokens) == choice["text"]
    assert len(choice["text"]) - (len(prompt) if echo else 0) <= max_tokens
