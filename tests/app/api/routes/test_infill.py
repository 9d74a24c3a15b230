"""POST /v1/infill and /v1/score mode 'pll' with a trained bidirectional model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.infill import pll_score_texts
from models.registry import build_model
from models.vocab import CharVocab
from tests.app.conftest import make_settings, train_tiny_lstm
from tests.support import make_corpus


def train_tiny_bilstm(corpus: str, steps: int = 250) -> tuple[Any, CharVocab]:
    torch.manual_seed(0)
    vocab = CharVocab.from_text(corpus)
    data = torch.tensor(vocab.encode(corpus), dtype=torch.long)
    cfg = ModelConfig(
        arch="bilstm", vocab_size=len(vocab), embed_size=16, hidden_size=48, num_layers=1
    )
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 41, (16,))
        rows = torch.stack([data[s : s + 41] for s in starts.tolist()])
        logits, _ = model(rows[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, len(vocab)), rows[:, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), vocab


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bidi-models")
    corpus = make_corpus()
    model, vocab = train_tiny_bilstm(corpus)
    save_checkpoint(path / "both.safetensors", model, vocab)
    lstm, lstm_vocab = train_tiny_lstm(corpus, steps=20)
    save_checkpoint(path / "forward.safetensors", lstm, lstm_vocab)
    return path


@pytest.fixture(scope="module")
def client(folder: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(folder))) as test_client:
        yield test_client


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json()["error"])


def test_infill_fills_the_gaps(client: TestClient) -> None:
    body = {"model": "both", "text": "alpha 1 ah__a.\nbeta 2 at_b.\n", "top_k": 3}
    response = client.post("/v1/infill", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["text"] == "alpha 1 ahpla.\nbeta 2 ateb.\n"
    assert [(g["start"], g["text"]) for g in result["gaps"]] == [(10, "pl"), (24, "e")]
    assert result["num_masked"] == 3
    first = result["gaps"][0]["candidates"]
    assert len(first) == 2 and len(first[0]) == 3
    assert first[0][0]["char"] == "p" and 0.5 < first[0][0]["prob"] <= 1.0
    alternatives = result["gaps"][0]["alternatives"]
    assert alternatives[0]["text"] == "pl" and 1 < len(alternatives) <= 3
    assert alternatives[0]["pll"] >= alternatives[-1]["pll"]
    assert result["pll"] < 0 and result["pll_bits_per_char"] < 1.0


def test_infill_errors_say_why(client: TestClient) -> None:
    error = error_of(client.post("/v1/infill", json={"model": "forward", "text": "al_ha"}), 400)
    assert error["code"] == "not_bidirectional" and "bidirectional" in error["message"]
    error = error_of(client.post("/v1/infill", json={"model": "both", "text": "alpha"}), 400)
    assert "no masked character" in error["message"]
    error_of(client.post("/v1/infill", json={"model": "both", "text": "a_", "mask": "__"}), 422)
    error_of(client.post("/v1/infill", json={"model": "both", "text": "a_", "extra": 1}), 422)
    error = error_of(client.post("/v1/infill", json={"model": "both", "text": "_" * 300}), 413)
    assert error["code"] == "too_many_masked_chars"
    long_text = "_" * 200 + "alpha " * 5000
    error = error_of(client.post("/v1/infill", json={"model": "both", "text": long_text}), 413)
    assert error["code"] == "infill_too_large" and "shorter text" in error["message"]
    body = {"model": "both", "text": "_" * 20 + "alpha " * 600, "top_k": 2}
    error = error_of(client.post("/v1/infill", json=body), 413)
    assert error["code"] == "infill_too_large" and "x 64" in error["message"]


def test_score_defaults_to_pll_for_bidirectional_models(client: TestClient, folder: Path) -> None:
    texts = ["delta 3 atled.", "dleta 3 adtel."]
    response = client.post("/v1/score", json={"model": "both", "texts": texts, "per_char": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "pll"
    ckpt = load_checkpoint(folder / "both.safetensors")
    expected = pll_score_texts(ckpt.model, ckpt.vocab, texts)
    for result, score in zip(body["results"], expected, strict=True):
        assert result["logprob"] == pytest.approx(score.logprob, abs=1e-4)
        assert len(result["per_char"]) == 14
    assert body["results"][0]["logprob"] > body["results"][1]["logprob"] + 5
    explicit = client.post("/v1/score", json={"model": "both", "texts": texts, "mode": "pll"})
    assert explicit.json()["results"] == [dict(r, per_char=None) for r in body["results"]]


def test_score_mode_must_suit_the_model(client: TestClient) -> None:
    body = {"model": "both", "texts": ["alpha"], "mode": "causal"}
    error = error_of(client.post("/v1/score", json=body), 400)
    assert error["code"] == "bidirectional_model" and "'pll'" in error["message"]
    body = {"model": "forward", "texts": ["alpha"], "mode": "pll"}
    error = error_of(client.post("/v1/score", json=body), 400)
    assert error["code"] == "not_bidirectional"
    forward = client.post("/v1/score", json={"model": "forward", "texts": ["alpha"]})
    assert forward.json()["mode"] == "causal"
    error_of(client.post("/v1/score", json={"texts": ["a"], "mode": "both"}), 422)


def test_generating_with_a_bidirectional_model_is_a_400_that_says_why(client: TestClient) -> None:
    error = error_of(client.post("/v1/generate", json={"model": "both", "prompt": "a"}), 400)
    assert error["code"] == "cannot_generate"
    assert "both sides" in error["message"] and "/v1/infill" in error["message"]


def test_completions_logprobs_of_a_bidirectional_model_are_a_400(client: TestClient) -> None:
    """A bidirectional model has no left-to-right log-probabilities: ``logprobs`` with ``echo``
    and ``max_tokens: 0`` is refused (pointing to /v1/score's pseudo-log-likelihood) rather than
    answered with figures that are neither."""
    body = {"model": "both", "prompt": "delta 3 atled.", "max_tokens": 0, "echo": True}
    for extra in ({"logprobs": 0}, {"logprobs": 2}):
        error = error_of(client.post("/v1/completions", json={**body, **extra}), 400)
        assert error["code"] == "bidirectional_model" and error["param"] == "logprobs"
        assert "/v1/score" in error["message"] and "pll" in error["message"]
    echoed = client.post("/v1/completions", json=body)  # no logprobs: the echo alone
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["choices"][0]["text"] == body["prompt"]


def test_pll_scoring_and_infill_wait_in_the_engines_queue(folder: Path) -> None:
    """With the engine busy and its queue full, /v1/score (pll) and /v1/infill get the early 429
    of every other model call; once the queue drains they are served."""
    settings = make_settings(folder, max_batch_size=1, max_queue=1)
    started, gate = threading.Event(), threading.Event()

    def held(model: Any, vocab: Any) -> None:
        started.set()
        gate.wait(30)

    with TestClient(create_app(settings)) as busy:
        engine = busy.app.state.services.store.engines()["both"]  # type: ignore[attr-defined]
        portal = busy.portal
        assert portal is not None
        running = portal.start_task_soon(engine.run, held)
        assert started.wait(30)
        queued = [portal.start_task_soon(engine.run, held) for _ in range(2)]
        deadline = time.monotonic() + 30
        while engine.stats()["queued_calls"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        requests = [
            ("/v1/score", {"model": "both", "texts": ["alpha"], "mode": "pll"}),
            ("/v1/infill", {"model": "both", "text": "al_ha"}),
        ]
        for path, body in requests:
            refused = busy.post(path, json=body)
            assert error_of(refused, 429)["code"] == "queue_full"
            assert int(refused.headers["Retry-After"]) >= 1
        gate.set()
        for call in (running, *queued):
            call.result(timeout=30)
        for path, body in requests:
            assert busy.post(path, json=body).status_code == 200
