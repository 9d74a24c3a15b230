"""GET /v1/models and /v1/models/{id}, /health and /ready."""

from __future__ import annotations

from typing import Any


def test_list_has_every_file_with_its_status(client: Any) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert set(cards) == {"tiny", "broken", "bad name"}
    assert cards["tiny"]["status"] == "ready" and cards["tiny"]["error"] is None
    assert cards["tiny"]["object"] == "model" and cards["tiny"]["owned_by"] == "charlm"
    assert isinstance(cards["tiny"]["created"], int)
    assert cards["broken"]["status"] == "unavailable"
    assert "not a readable safetensors file" in cards["broken"]["error"]
    assert "not a valid model id" in cards["bad name"]["error"]
    # the server's folder is never revealed, only file names
    assert "/" not in cards["broken"]["error"]


def test_details_describe_the_model(client: Any) -> None:
    details = client.get("/v1/models/tiny").json()
    assert details["arch"] == "lstm" and details["can_generate"] is True
    assert details["hidden_size"] == 48 and details["embed_size"] == 16
    assert details["num_layers"] == 1
    assert details["vocab_size"] == 22
    # 16*22 embedding + LSTM(16->48) + 48->22 output layer
    lstm = 4 * 48 * (16 + 48) + 2 * 4 * 48
    assert details["num_parameters"] == 22 * 16 + lstm + 48 * 22 + 22
    assert details["training"] == {"step": 300, "best_val_bpc": 1.5, "corpus": "generated"}
    assert details["file"] == "tiny.safetensors"
    assert details["status"] == "ready"


def test_details_of_an_unavailable_model(client: Any) -> None:
    details = client.get("/v1/models/broken").json()
    assert details["status"] == "unavailable" and details["arch"] is None
    assert details["error"]


def test_health_and_ready(client: Any) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready == {"status": "ready", "models": ["tiny"], "unavailable": ["bad name", "broken"]}
