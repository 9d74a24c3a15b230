"""Work that reads whole texts (pseudo-log-likelihood scoring, infilling) runs on the engine's
worker thread, queued and refused like every other request. A tiny real bidirectional model."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from app.engine.engine import ModelEngine
from app.engine.errors import EngineClosedError, QueueFullError
from models.base import CharLM
from models.checkpoint import LoadedCheckpoint
from models.config import ModelConfig
from models.infill import InfillError, infill_text, pll_score_texts
from models.registry import build_model
from models.vocab import CharVocab

VOCAB = CharVocab(list("abcdefgh .\n"))


def bidirectional() -> LoadedCheckpoint:
    torch.manual_seed(2)
    config = ModelConfig("bilstm", len(VOCAB), embed_size=8, hidden_size=16, num_layers=1)
    return LoadedCheckpoint(Path("bi.safetensors"), build_model(config).eval(), VOCAB, config)


def test_pll_scores_and_fills_are_the_models_own() -> None:
    ckpt = bidirectional()
    texts = ["abc de", "hh gg.", ""]

    async def scenario(engine: ModelEngine) -> tuple[list[Any], Any]:
        scores = await engine.score_pll(texts, context="ab ", top_k=2)
        filled = await engine.infill("abc d_ f__h", "_", top_k=2)
        with pytest.raises(InfillError):
            await engine.infill("no gap here", "_")
        return scores, filled

    scores, filled = asyncio.run(_with_engine(ckpt, scenario))
    want = pll_score_texts(ckpt.model, VOCAB, texts, "ab ", top_k=2)
    for got, expected in zip(scores, want, strict=True):
        torch.testing.assert_close(got.logprobs, expected.logprobs)
        assert got.top_ids is not None and expected.top_ids is not None
        assert torch.equal(got.top_ids, expected.top_ids)
    expected_fill = infill_text(ckpt.model, VOCAB, "abc d_ f__h", "_", top_k=2)
    assert filled.text == expected_fill.text and filled.pll == pytest.approx(expected_fill.pll)


def test_calls_wait_in_the_queue_and_a_full_queue_refuses_them() -> None:
    """One call runs, two wait (one queue place plus one free row, which calls do not use up):
    the next pseudo-log-likelihood request is refused at once; the waiting ones run in turn;
    a caller that leaves frees its place."""
    started, gate = threading.Event(), threading.Event()

    def held(model: CharLM, vocab: CharVocab) -> str:
        started.set()
        gate.wait(30)
        return "done"

    async def scenario(engine: ModelEngine) -> None:
        running = asyncio.create_task(engine.run(held))
        while not started.is_set():
            await asyncio.sleep(0.001)
        waiting = [asyncio.create_task(engine.run(held)) for _ in range(2)]
        while engine.stats()["queued_calls"] < 2:
            await asyncio.sleep(0.001)
        with pytest.raises(QueueFullError):
            await engine.score_pll(["abc"])
        with pytest.raises(QueueFullError):
            await engine.infill("a_c", "_")
        assert engine.stats()["rejected_queue_full"] == 2
        waiting[1].cancel()
        await asyncio.gather(waiting[1], return_exceptions=True)
        assert engine.stats()["queued_calls"] == 1
        gate.set()
        assert await running == "done" and await waiting[0] == "done"
        assert (await engine.score_pll(["abc"]))[0].num_chars == 3

    asyncio.run(_with_engine(bidirectional(), scenario, max_batch_size=1, max_queue=1))


def test_calls_still_queued_when_the_engine_stops_are_refused() -> None:
    started, gate = threading.Event(), threading.Event()

    def held(model: CharLM, vocab: CharVocab) -> None:
        started.set()
        gate.wait(30)

    async def scenario() -> None:
        engine = ModelEngine("bi", bidirectional())
        await engine.start()
        running = asyncio.create_task(engine.run(held))
        while not started.is_set():
            await asyncio.sleep(0.001)
        queued = asyncio.create_task(engine.score_pll(["abc"]))
        while engine.stats()["queued_calls"] < 1:
            await asyncio.sleep(0.001)
        stopping = asyncio.create_task(engine.stop(grace_seconds=0))
        await asyncio.sleep(0)
        gate.set()
        await running
        with pytest.raises(EngineClosedError):
            await queued
        await stopping

    asyncio.run(scenario())


async def _with_engine(ckpt: LoadedCheckpoint, scenario: Any, **limits: Any) -> Any:
    engine = ModelEngine("bi", ckpt, **limits)
    await engine.start()
    try:
        return await scenario(engine)
    finally:
        await engine.stop(grace_seconds=0)
