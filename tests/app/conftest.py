"""Fixtures for the server tests: a tiny real checkpoint trained in seconds, apps and live servers.

The checkpoint is an LSTM trained with Adam on a small generated corpus, so greedy generation and
scores are those of a model that learned something. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from app.main import create_app
from app.settings import Settings
from models.checkpoint import save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.vocab import BOS_ID, CharVocab
from tests.support import LiveServer, make_corpus, start_server, stop_server

MODEL_ID = "tiny"


def train_tiny_lstm(corpus: str, steps: int = 300, seed: int = 0) -> tuple[Any, CharVocab]:
    """A one-layer LSTM fitted for a few hundred Adam steps on random windows (BOS-led)."""
    torch.manual_seed(seed)
    vocab = CharVocab.from_text(corpus)
    config = ModelConfig(
        arch="lstm", vocab_size=len(vocab), embed_size=16, hidden_size=48, num_layers=1
    )
    model = build_model(config)
    data = torch.tensor(vocab.encode(corpus), dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    window, batch = 32, 16
    for _ in range(steps):
        starts = torch.randint(0, len(data) - window - 1, (batch,))
        rows = torch.stack([data[s : s + window + 1] for s in starts.tolist()])  # (B, T+1)
        inputs = torch.cat([torch.full((batch, 1), BOS_ID), rows[:, :-1]], dim=1)  # (B, T+1)
        targets = torch.cat([rows[:, :1], rows[:, 1:]], dim=1)
        logits, _ = model(inputs, model.initial_state(batch))  # (B, T+1, V)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, len(vocab)), targets.reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, vocab


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder: ``tiny`` (trained LSTM), its resume file, a corrupt and a misnamed file."""
    folder = tmp_path_factory.mktemp("models")
    model, vocab = train_tiny_lstm(make_corpus())
    training = {"step": 300, "best_val_bpc": 1.5, "corpus": "generated"}
    save_checkpoint(folder / f"{MODEL_ID}.safetensors", model, vocab, training=training)
    (folder / "broken.safetensors").write_bytes(b"\x00\x01 not a checkpoint")
    save_checkpoint(folder / "bad name.safetensors", model, vocab)
    # charlm-train leaves its resume state beside the checkpoint: not a model to list
    (folder / f"{MODEL_ID}.resume.safetensors").write_bytes(b"resume state")
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(models_dir: Path) -> Path:
    return models_dir / f"{MODEL_ID}.safetensors"


def make_settings(models_dir: Path, **overrides: Any) -> Settings:
    return Settings(models_dir=models_dir, **overrides)


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[Any]:
    """A TestClient over the default settings (lifespan run: models loaded)."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(make_settings(models_dir))) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def live_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real uvicorn process on 127.0.0.1 serving the models folder (killed at the end)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    # generous output limit: the disconnect tests need requests far longer than their timeouts
    server = start_server(models_dir, log, CHARLM_MAX_NEW_CHARS="1000000")
    try:
        yield server
    finally:
        stop_server(server)
