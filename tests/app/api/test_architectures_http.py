"""Every registered architecture, saved as a checkpoint, scores (and generates) via the server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.engine.engine import ModelEngine
from app.engine.params import GenerationParams
from app.main import create_app
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import available_architectures, build_model, model_class
from models.scoring import score_texts
from models.vocab import CharVocab
from tests.app.api.routes.test_generate import argmax_path
from tests.app.conftest import make_settings

ARCHS = available_architectures()
VOCAB = CharVocab(list("abcdefgh .\n"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("every-arch")
    for i, arch in enumerate(ARCHS):
        torch.manual_seed(i)
        cfg = ModelConfig(
            arch=arch, vocab_size=len(VOCAB), embed_size=8, hidden_size=16, num_layers=2
        )
        model = build_model(cfg)
        with torch.no_grad():  # larger readout weights: sharper distributions to compare
            for name, param in model.named_parameters():
                if "readout" in name or "head" in name:
                    param.normal_(0.0, 1.0)
        save_checkpoint(path / f"{arch}.safetensors", model, VOCAB)
    return path


@pytest.fixture(scope="module")
def client(folder: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(folder))) as test_client:
        yield test_client


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_is_served(client: TestClient, folder: Path, arch: str) -> None:
    listed = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert arch in listed
    texts = ["abc dea.", "hhh\ngg", "b"]
    response = client.post("/v1/score", json={"model": arch, "texts": texts})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    ckpt = load_checkpoint(folder / f"{arch}.safetensors")
    if model_class(arch).can_generate:
        expected = score_texts(ckpt.model, ckpt.vocab, texts)
        for result, score in zip(results, expected, strict=True):
            assert result["logprob"] == pytest.approx(score.logprob, abs=1e-3)
        body = {"model": arch, "prompt": "abc", "max_chars": 25, "temperature": 0, "n": 3}
        response = client.post("/v1/generate", json=body)
        assert response.status_code == 200, response.text
        completions = response.json()["completions"]
        greedy = argmax_path(folder / f"{arch}.safetensors", "abc", 25)
        assert [c["text"] for c in completions] == [greedy] * 3
    else:
        assert response.json()["mode"] == "pll"
        response = client.post("/v1/generate", json={"model": arch, "prompt": "a"})
        assert response.status_code == 400


async def _complete(engine: ModelEngine, prompt: str, chars: int) -> str:
    text = ""
    async for chunk in engine.generate(prompt, GenerationParams(chars, temperature=0.0)):
        text += chunk.text
    return text


def test_clockwork_rows_at_different_clock_phases_batch_correctly(folder: Path) -> None:
    """Prompts of different lengths put the rows of one engine batch at different clock phases."""
    path = folder / "clockwork.safetensors"
    engine = ModelEngine("cw", load_checkpoint(path), max_batch_size=8)
    prompts = ["a", "bc", "abcde", "hgfedcba.\nab", ""]

    async def run() -> list[str]:
        await engine.start()
        try:
            return list(await asyncio.gather(*(_complete(engine, p, 30) for p in prompts)))
        finally:
            await engine.stop()

    for prompt, text in zip(prompts, asyncio.run(run()), strict=True):
        assert text == argmax_path(path, prompt, 30), prompt
