"""POST /v1/score with ``adapt: true``: adaptive scoring on the worker, on a private copy."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.api.schemas import score as schema
from app.main import create_app
from models import adapt
from models.adapt import AdaptSettings, adaptive_score_texts
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.vocab import CharVocab
from tests.app.conftest import make_settings, train_tiny_lstm
from tests.support import make_corpus

REPEATED = "gamma delta beta alpha. " * 20  # 480 chars: a phrase the corpus never holds
MAX_ADAPT_CHARS = 1000


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("adapt-models")
    model, vocab = train_tiny_lstm(make_corpus(), steps=200)
    save_checkpoint(path / "tiny.safetensors", model, vocab)
    torch.manual_seed(0)
    bi_vocab = CharVocab.from_text(make_corpus())
    config = ModelConfig("bilstm", len(bi_vocab), embed_size=8, hidden_size=16, num_layers=1)
    save_checkpoint(path / "bi.safetensors", build_model(config).eval(), bi_vocab)
    return path


@pytest.fixture(scope="module")
def client(folder: Path) -> Iterator[TestClient]:
    settings = make_settings(folder, default_model="tiny", max_adapt_chars=MAX_ADAPT_CHARS)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def score(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def served_weights(client: TestClient) -> dict[str, torch.Tensor]:
    entry = client.app.state.services.store.resolve("tiny")  # type: ignore[attr-defined]
    return {name: p.detach().clone() for name, p in entry.checkpoint.model.named_parameters()}


def test_the_served_model_never_changes(client: TestClient) -> None:
    weights = served_weights(client)
    texts = [REPEATED, "alpha 3 ahpla.\n"]
    before = score(client, texts=texts, per_char=True)
    adapted = score(client, texts=texts, adapt=True, adapt_rate=0.01, adapt_segment=16)
    after = score(client, texts=texts, per_char=True)
    assert before == after  # bitwise: every per-character logprob the same
    for name, value in served_weights(client).items():
        assert torch.equal(value, weights[name]), name
    assert adapted["results"][0]["logprob"] != before["results"][0]["logprob"]


def test_adapting_lowers_the_loss_on_a_repetitive_text(client: TestClient) -> None:
    static = score(client, texts=[REPEATED])
    body = score(client, texts=[REPEATED], adapt=True, adapt_rate=0.01, adapt_segment=16)
    assert body["adapt"] == {"rate": 0.01, "segment": 16, "method": "rms"}
    assert body["mode"] == "causal"
    adapted, plain = body["results"][0], static["results"][0]
    assert adapted["num_chars"] == plain["num_chars"] == len(REPEATED)
    assert adapted["bits_per_char"] < plain["bits_per_char"] - 0.2
    nats = -adapted["logprob"] / adapted["num_chars"]
    assert math.isclose(adapted["bits_per_char"], nats / math.log(2), rel_tol=1e-9)


def test_the_figures_are_models_adapt_own_and_deterministic(
    client: TestClient, folder: Path
) -> None:
    ckpt = load_checkpoint(folder / "tiny.safetensors")
    texts, context = [REPEATED[:200], "beta 4 ateb."], "delta 1 "
    body = score(client, texts=texts, context=context, adapt=True, per_char=True, top_k=2)
    assert body["adapt"] == {
        "rate": adapt.DEFAULT_RATE,
        "segment": adapt.DEFAULT_SEGMENT,
        "method": adapt.DEFAULT_METHOD,
    }
    want = adaptive_score_texts(ckpt.model, ckpt.vocab, texts, context, 2, AdaptSettings())
    for got, expected in zip(body["results"], want, strict=True):
        assert math.isclose(got["logprob"], expected.logprob, abs_tol=1e-4)
        assert len(got["per_char"]) == expected.num_chars
        assert len(got["per_char"][0]["top"]) == 2
    assert body["usage"] == {"chars_scored": 212, "context_chars": 8}
    again = score(client, texts=texts, context=context, adapt=True, per_char=True, top_k=2)
    assert again == body


def error(client: TestClient, status: int, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/score", json=body)
    assert response.status_code == status, response.text
    return dict(response.json()["error"])


def test_a_bidirectional_model_is_refused_with_the_reason(client: TestClient) -> None:
    err = error(client, 400, model="bi", texts=["abc"], adapt=True)
    assert err["code"] == "cannot_adapt" and err["param"] == "adapt"
    assert "'bi' (bilstm) cannot be scored adaptively" in err["message"]
    assert "both sides" in err["message"]


def test_texts_over_the_adaptive_bound_are_refused(client: TestClient) -> None:
    half = "a" * (MAX_ADAPT_CHARS // 2)
    err = error(client, 413, texts=[half, half], context="b", adapt=True)
    assert err["code"] == "adapt_text_too_long" and err["param"] == "texts"
    assert f"{MAX_ADAPT_CHARS + 1} characters" in err["message"]
    assert "CHARLM_MAX_ADAPT_CHARS" in err["message"]
    # the same texts score statically: the bound is adaptive scoring's alone
    score(client, texts=[half, half], context="b")


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"adapt_rate": 0.001}, "body", "need adapt: true"),
        ({"adapt": True, "mode": "pll"}, "body", "mode 'causal'"),
        ({"adapt": True, "adapt_rate": 0}, "adapt_rate", "adapt_rate"),
        ({"adapt": True, "adapt_rate": 0.05}, "adapt_rate", "adapt_rate"),
        ({"adapt": True, "adapt_segment": 4}, "adapt_segment", "adapt_segment"),
        ({"adapt": True, "adapt_segment": 4096}, "adapt_segment", "adapt_segment"),
        ({"adapt": "yes"}, "adapt", "adapt"),
    ],
)
def test_bad_settings_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], param: str, words: str
) -> None:
    err = error(client, 422, texts=["abc"], **body)
    assert err["param"] == param and words in err["message"]


def test_openapi_publishes_the_limits(client: TestClient) -> None:
    request = client.get("/openapi.json").json()["components"]["schemas"]["ScoreRequest"]
    props = request["properties"]
    assert props["adapt"]["x-charlm-limit-value"] == MAX_ADAPT_CHARS
    rate = props["adapt_rate"]["anyOf"][0]
    assert rate["exclusiveMinimum"] == 0 and rate["maximum"] == adapt.MAX_RATE
    segment = props["adapt_segment"]["anyOf"][0]
    assert (segment["minimum"], segment["maximum"]) == (adapt.MIN_SEGMENT, adapt.MAX_SEGMENT)


def test_the_schema_bounds_and_defaults_are_models_adapt_own() -> None:
    assert (adapt.MIN_RATE, adapt.MAX_RATE) == (0.0, schema.MAX_ADAPT_RATE)
    assert (adapt.MIN_SEGMENT, adapt.MAX_SEGMENT) == (
        schema.MIN_ADAPT_SEGMENT,
        schema.MAX_ADAPT_SEGMENT,
    )
    assert (adapt.DEFAULT_RATE, adapt.DEFAULT_SEGMENT) == (
        schema.DEFAULT_ADAPT_RATE,
        schema.DEFAULT_ADAPT_SEGMENT,
    )
