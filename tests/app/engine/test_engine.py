"""The engine in-process: cancellation, limits, timeouts, shutdown and micro-batched scoring.
Each test builds a tiny real model; nothing is mocked."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import torch

from app.engine.engine import CannotGenerateError, EngineClosedError, ModelEngine, QueueFullError
from app.engine.errors import RequestTimeoutError
from models.recurrent import LSTMLM
from models.scoring import score_texts
from tests.app.engine.engine_support import VOCAB, complete, make_checkpoint, run, settings


class _FutureSeeingLSTM(LSTMLM):
    """Stands for a bidirectional model: same weights, but it declares it cannot generate."""

    can_generate = False


# ---------------------------------------------------------------------------- cancellation, limits
def test_decoding_switches_onednn_off_and_an_idle_engine_gives_it_back() -> None:
    """Decode steps run without oneDNN (a process-wide flag); once the engine has nothing to do,
    the process's own setting is back."""
    before = torch.backends.mkldnn.enabled

    async def scenario(engine: ModelEngine) -> tuple[bool, bool]:
        stream = engine.generate("a", settings(100_000, seed=0))
        await anext(stream)
        while engine.stats()["steps"] < 5:
            await asyncio.sleep(0.001)
        decoding = bool(torch.backends.mkldnn.enabled)
        await stream.aclose()
        deadline = time.monotonic() + 5
        while engine.stats()["running_rows"] and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # the worker goes idle after its last step
        return decoding, bool(torch.backends.mkldnn.enabled)

    torch.backends.mkldnn.enabled = True  # type: ignore[assignment]
    try:
        decoding, idle = run(scenario)
        assert not decoding
        assert idle
        assert torch.backends.mkldnn.enabled  # and after the engine stopped
    finally:
        torch.backends.mkldnn.enabled = before  # type: ignore[assignment]


def test_cancelled_request_frees_its_row_within_a_step() -> None:
    async def scenario(engine: ModelEngine) -> None:
        stream = engine.generate("a", settings(100_000, seed=0))
        first = await anext(stream)
        assert first.text
        assert engine.stats()["running_rows"] == 1
        await stream.aclose()
        steps_at_cancel = engine.stats()["steps"]
        deadline = time.monotonic() + 5
        while engine.stats()["running_rows"] and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        stats = engine.stats()
        assert stats["running_rows"] == 0
        assert stats["steps"] - steps_at_cancel <= 2
        assert stats["finished_cancelled"] == 1

    run(scenario)


def test_queue_full_is_refused_at_once_and_cancelled_queued_requests_leave() -> None:
    async def scenario(engine: ModelEngine) -> None:
        running = engine.generate("a", settings(100_000, seed=0))
        await anext(running)  # holds the only row
        queued = [engine.generate("b", settings(10, seed=i)) for i in range(2)]
        waits = [asyncio.create_task(anext(q)) for q in queued]
        while engine.stats()["queue_depth"] < 2:
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        with pytest.raises(QueueFullError) as refused:
            await engine.score(["abc"])
        assert time.perf_counter() - start < 0.05
        assert refused.value.retry_after >= 1
        assert engine.stats()["rejected_queue_full"] == 1
        waits[0].cancel()  # a client that leaves while queued frees its place at once
        await asyncio.gather(waits[0], return_exceptions=True)
        assert engine.stats()["queue_depth"] == 1
        await running.aclose()
        assert (await waits[1]).text  # the queued one runs once the row is free
        await queued[1].aclose()

    run(scenario, max_batch_size=1, max_queue=2)


class _SlowLSTM(LSTMLM):
    """A real LSTM whose forward pass takes at least ``delay`` seconds (a slow machine)."""

    delay = 0.0

    def forward(self, ids: torch.Tensor, state: Any = None) -> Any:
        time.sleep(self.delay)
        return super().forward(ids, state)


def test_request_timeout_while_queued_and_while_running() -> None:
    ckpt = make_checkpoint("lstm", _SlowLSTM)

    async def scenario(engine: ModelEngine) -> None:
        ckpt.model.delay = 1.0  # the first request holds the only row for a 1 s forward
        first = asyncio.create_task(complete(engine, "a", 10_000_000))
        await asyncio.sleep(0.05)
        with pytest.raises(RequestTimeoutError):
            await complete(engine, "b", 5)  # never started: an error
        assert isinstance(RequestTimeoutError("x"), TimeoutError)  # the server's 503 mapping
        _, chunks = await first  # started: ends, with "timeout"
        assert chunks[-1].finish_reason == "timeout"
        ckpt.model.delay = 0.0
        text, chunks = await complete(engine, "a", 10_000_000)
        assert chunks[-1].finish_reason == "timeout" and len(text) > 10
        assert engine.stats()["rejected_timeout"] == 1

    run(scenario, ckpt, max_batch_size=1, request_timeout_s=0.3)


def test_stop_lets_requests_finish_in_the_grace_period_then_ends_the_rest() -> None:
    async def scenario() -> None:
        engine = ModelEngine("test", make_checkpoint(), max_batch_size=2)
        await engine.start()
        long_a = engine.generate("a", settings(10_000_000, seed=0))
        await anext(long_a)
        short = asyncio.create_task(complete(engine, "b", 30))
        long_b = engine.generate("c", settings(10_000_000, seed=1))  # starts after ``short``
        first_b = asyncio.create_task(anext(long_b))
        never = asyncio.create_task(complete(engine, "d", 5))  # queued behind two long rows
        await asyncio.sleep(0.01)
        stopping = asyncio.create_task(engine.stop(grace_seconds=0.5))
        await asyncio.sleep(0.01)
        with pytest.raises(EngineClosedError):
            await complete(engine, "e", 5)  # refused at once
        text, chunks = await short
        assert chunks[-1].finish_reason == "length" and len(text) == 30
        assert (await first_b).text
        for stream in (long_a, long_b):
            rest = [c async for c in stream]
            assert rest[-1].finish_reason == "abort" and rest[-1].num_chars > 0
        with pytest.raises(EngineClosedError):
            await never
        await stopping
        await engine.stop(grace_seconds=0)  # again: harmless
        assert engine.stats()["rejected_closed"] == 1

    asyncio.run(scenario())


def test_model_that_cannot_generate() -> None:
    async def scenario(engine: ModelEngine) -> None:
        with pytest.raises(CannotGenerateError):
            await complete(engine, "a", 5)
        assert (await engine.score(["abc"]))[0].num_chars == 3  # scoring still works

    run(scenario, make_checkpoint("lstm", _FutureSeeingLSTM))


# ---------------------------------------------------------------------------- scoring
def test_scoring_batched_equals_alone() -> None:
    ckpt = make_checkpoint()
    texts = ["", "a", "abc def", "hhhh gg. ab", "abcdefgh" * 9, "zz unknown!", "ba" * 40, "c"]

    async def scenario(engine: ModelEngine) -> list[Any]:
        requests = [engine.score([t], context="ab ", top_k=3) for t in texts]
        requests.append(engine.score(texts, context="", top_k=0))
        results = await asyncio.gather(*requests)
        assert await engine.score([]) == []
        stats = engine.stats()
        assert stats["scored_requests"] == len(texts) + 1
        assert stats["score_rounds"] < len(texts)  # the 2 x 8 texts shared forwards
        return results

    results = run(scenario, ckpt)
    with torch.inference_mode():
        alone_ctx = [score_texts(ckpt.model, VOCAB, [t], "ab ", top_k=3)[0] for t in texts]
        alone = [score_texts(ckpt.model, VOCAB, [t])[0] for t in texts]
    batched_ctx = [r[0] for r in results[:-1]]
    for got, want in zip([*batched_ctx, *results[-1]], [*alone_ctx, *alone], strict=True):
        assert got.num_chars == want.num_chars and got.num_unknown == want.num_unknown
        torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=0)
        if want.top_ids is not None:
            assert got.top_ids is not None and got.top_logprobs is not None
            assert torch.equal(got.top_ids, want.top_ids)
            torch.testing.assert_close(got.top_logprobs, want.top_logprobs, atol=1e-5, rtol=0)
    assert results[-1][5].num_unknown == 10  # all but the space


def test_long_scoring_holds_back_neither_short_texts_nor_completions() -> None:
    """Texts are scored a chunk per round beside each other, so a long one does not block."""

    async def scenario(engine: ModelEngine) -> None:
        start = time.perf_counter()
        long_task = asyncio.create_task(engine.score(["ab " * 100_000]))
        await asyncio.sleep(0.02)
        short = await engine.score(["abc"])
        short_done = time.perf_counter() - start
        text, _ = await complete(engine, "a", 20)
        completion_done = time.perf_counter() - start
        long_result = (await long_task)[0]
        long_done = time.perf_counter() - start
        assert short[0].num_chars == 3 and len(text) == 20
        assert long_result.num_chars == 300_000
        assert short_done < long_done / 3 and completion_done < long_done / 3
        with torch.inference_mode():
            alone = score_texts(engine.checkpoint.model, VOCAB, ["ab " * 100_000])[0]
        torch.testing.assert_close(long_result.logprobs, alone.logprobs, atol=1e-5, rtol=0)

    run(scenario)
