"""POST /v1/score: the invariants of the numbers and agreement with models.scoring."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from models.checkpoint import load_checkpoint
from models.scoring import score_texts

TEXT = "alpha 3 ahpla.\nbeta 4 ateb."


def score(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_per_char_logprobs_sum_to_the_total(client: Any) -> None:
    result = score(client, texts=[TEXT], per_char=True)["results"][0]
    chars = result["per_char"]
    assert [c["char"] for c in chars] == list(TEXT)
    assert [c["offset"] for c in chars] == list(range(len(TEXT)))
    assert math.isclose(sum(c["logprob"] for c in chars), result["logprob"], abs_tol=1e-6)
    assert all(c["logprob"] <= 0 for c in chars)
    assert result["num_chars"] == len(TEXT)


def test_perplexity_and_bits_follow_from_the_logprob(client: Any) -> None:
    result = score(client, texts=[TEXT])["results"][0]
    nats = -result["logprob"] / result["num_chars"]
    assert math.isclose(result["perplexity"], math.exp(nats), rel_tol=1e-9)
    assert math.isclose(result["bits_per_char"], nats / math.log(2), rel_tol=1e-9)
    assert result["per_char"] is None
    # the model learned the corpus: well under the uniform log2(vocab) bits per character
    assert result["bits_per_char"] < 2.5


def test_matches_models_scoring_on_the_same_checkpoint(client: Any, tiny_checkpoint: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    texts = [TEXT, "gamma", ""]
    expected = score_texts(ckpt.model, ckpt.vocab, texts, context="delta 1 ")
    body = score(client, texts=texts, context="delta 1 ")
    for want, got in zip(expected, body["results"], strict=True):
        assert math.isclose(got["logprob"], want.logprob, abs_tol=1e-5)
        assert got["num_chars"] == want.num_chars
    assert body["usage"] == {"chars_scored": len(TEXT) + 5, "context_chars": 8}
    assert body["model"] == "tiny"


def test_first_character_is_scored_after_bos(client: Any) -> None:
    one = score(client, texts=["a"])["results"][0]
    assert one["num_chars"] == 1 and one["logprob"] < 0
    # context conditions the text: after "alph" an "a" is near certain, unlike at the start
    after = score(client, texts=["a"], context="alph")["results"][0]
    assert after["logprob"] > one["logprob"]
    assert after["num_chars"] == 1


def test_top_alternatives_are_sorted_and_hold_the_best_char(client: Any) -> None:
    chars = score(client, texts=["alpha"], per_char=True, top_k=3)["results"][0]["per_char"]
    for entry in chars:
        top = entry["top"]
        assert len(top) == 3
        values = [t["logprob"] for t in top]
        assert values == sorted(values, reverse=True)
        assert entry["logprob"] <= values[0] + 1e-6
        if entry["char"] == top[0]["char"]:
            assert math.isclose(entry["logprob"], values[0], abs_tol=1e-6)


def test_unknown_characters_are_counted(client: Any) -> None:
    result = score(client, texts=["alpha ☃ Z"])["results"][0]
    assert result["num_unknown"] == 2
    assert result["num_chars"] == 9


def test_empty_text_scores_zero(client: Any) -> None:
    result = score(client, texts=[""])["results"][0]
    assert result == {
        "logprob": 0.0,
        "bits_per_char": 0.0,
        "perplexity": 1.0,
        "num_chars": 0,
        "num_unknown": 0,
        "per_char": None,
    }


def test_astral_characters_count_as_one(client: Any) -> None:
    result = score(client, texts=["a😀b"], per_char=True)["results"][0]
    assert [c["char"] for c in result["per_char"]] == ["a", "😀", "b"]
    assert result["num_unknown"] == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"texts": ["a"], "top_k": 2}, "body"),  # top_k needs per_char
        ({"texts": ["a"], "per_char": True, "top_k": 21}, "top_k"),
        ({"texts": []}, "texts"),
        ({"texts": "abc"}, "texts"),
        ({"texts": ["a"] * 65}, "texts"),
        ({"text": ["a"]}, "texts"),
        ({"texts": ["a"], "model": "../etc/passwd"}, "model"),
    ],
)
def test_invalid_requests_name_the_field(client: Any, body: dict[str, Any], param: str) -> None:
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param.split(".")[0] in error["message"] or param == "body"


def test_lone_surrogates_are_rejected(client: Any) -> None:
    raw = b'{"texts": ["ab\\ud800"]}'
    response = client.post("/v1/score", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "lone surrogate U+D800 at offset 2" in response.json()["error"]["message"]
