"""The engine in-process: continuous batching, per-row settings, cancellation, limits, shutdown,
micro-batched scoring. Each test builds a tiny real model; nothing is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

from app.engine.engine import (
    CannotGenerateError,
    EngineClosedError,
    ModelEngine,
    QueueFullError,
)
from app.engine.errors import RequestTimeoutError
from app.engine.generation import GenerationChunk
from app.engine.params import GenerationParams
from app.engine.requests import CompletionText
from models.checkpoint import LoadedCheckpoint, save_checkpoint
from models.config import ModelConfig
from models.recurrent import GRULM, LSTMLM
from models.sampling import SamplingParams, generate
from models.scoring import score_texts
from models.vocab import CharVocab
from training.checkpoint_cli import sample_main

T = TypeVar("T")
VOCAB = CharVocab(list("abcdefgh .\n"))


class _FutureSeeingLSTM(LSTMLM):
    """Stands for a bidirectional model: same weights, but it declares it cannot generate."""

    can_generate = False


def make_checkpoint(arch: str = "lstm", cls: type[LSTMLM] | type[GRULM] = LSTMLM) -> Any:
    torch.manual_seed(1)
    config = ModelConfig(arch, len(VOCAB), embed_size=8, hidden_size=24, num_layers=2)
    model = cls(config).eval()
    return LoadedCheckpoint(Path("test.safetensors"), model, VOCAB, config)


def run(make: Callable[..., Awaitable[T]], checkpoint: Any = None, **limits: Any) -> T:
    """Start an engine, run ``make(engine)``, stop the engine."""

    async def main() -> T:
        engine = ModelEngine("test", checkpoint or make_checkpoint(), **limits)
        await engine.start()
        try:
            return await make(engine)
        finally:
            await engine.stop(grace_seconds=0)

    return asyncio.run(main())


def settings(
    max_chars: int,
    params: SamplingParams | None = None,
    seed: int | None = 0,
    stop: tuple[str, ...] = (),
) -> GenerationParams:
    """A request's settings from the sampler's own (as the plain loop of ``reference`` takes)."""
    p = params or SamplingParams()
    return GenerationParams(max_chars, p.temperature, p.top_k, p.top_p, stop, seed)


async def complete(
    engine: ModelEngine,
    prompt: str,
    max_chars: int,
    params: SamplingParams | None = None,
    seed: int | None = 0,
    stop: tuple[str, ...] = (),
) -> tuple[str, list[GenerationChunk]]:
    chunks = [c async for c in engine.generate(prompt, settings(max_chars, params, seed, stop))]
    return "".join(c.text for c in chunks), chunks


def reference(ckpt: Any, prompt: str, max_chars: int, params: SamplingParams, seed: int,
              stop: tuple[str, ...] = ()) -> tuple[str, str]:  # fmt: skip
    out = generate(ckpt.model, ckpt.vocab, prompt, max_chars, params, seed=seed, stop=stop)[0]
    return out.text, out.finish_reason


# ---------------------------------------------------------------------------- join / leave
NEIGHBOURS = [
    (SamplingParams(temperature=0.0), ()),
    (SamplingParams(temperature=0.7, top_k=3), ()),
    (SamplingParams(temperature=1.3, top_p=0.6), ("a",)),
    (SamplingParams(temperature=1.0), ("h.", "\n")),
]


@pytest.mark.parametrize(("arch", "cls"), [("lstm", LSTMLM), ("gru", GRULM)])
def test_completion_unchanged_by_neighbours(arch: str, cls: Any) -> None:
    """A request alone, and beside 31 others that join late, read prompts of other lengths, use
    other settings and leave early, gives the same text, equal to the plain sampling loop."""
    ckpt = make_checkpoint(arch, cls)
    params = SamplingParams(temperature=0.9, top_k=6)

    async def scenario(engine: ModelEngine) -> tuple[str, str]:
        alone, _ = await complete(engine, "abc de", 120, params, seed=42)

        async def neighbour(i: int) -> str:
            await asyncio.sleep(0.002 * (i % 7))  # join at different steps
            p, stop = NEIGHBOURS[i % len(NEIGHBOURS)]
            prompt = "gh" * (i % 5) + "a" * (i % 3)  # 0 to 10 characters
            text, chunks = await complete(engine, prompt, 10 + 7 * i, p, seed=i, stop=stop)
            assert chunks[-1].finish_reason in {"length", "stop"}
            return text

        results = await asyncio.gather(
            *(neighbour(i) for i in range(31)), complete(engine, "abc de", 120, params, seed=42)
        )
        return alone, results[-1][0]

    alone, crowded = run(scenario, ckpt, max_batch_size=32, prompt_chunk=4)
    assert alone == crowded
    assert alone == reference(ckpt, "abc de", 120, params, 42)[0]
    assert len(alone) == 120


def test_same_seed_alone_and_beside_255_others() -> None:
    """256 completions with one seed and one setting, half of them with a stop string, in one
    batch: each half gives one text, the text the request gives alone and the plain loop's
    (``charlm-sample``'s), with its stop string and without."""
    ckpt = make_checkpoint()
    params = SamplingParams(temperature=1.1, top_p=0.95)
    stop = ("h.",)

    async def scenario(engine: ModelEngine) -> tuple[list[str], list[str], list[str]]:
        alone = [(await complete(engine, "ab", 150, params, 42, s))[0] for s in ((), stop)]
        crowd = await asyncio.gather(
            *(complete(engine, "ab", 150, params, 42, stop if i % 2 else ()) for i in range(256))
        )
        rows = engine.histograms()["decode_batch_rows"]
        assert rows.cumulative[rows.bounds.index(128)] < rows.count  # steps of over 128 rows
        return alone, [t for t, _ in crowd[0::2]], [t for t, _ in crowd[1::2]]

    alone, plain, stopped = run(scenario, ckpt, max_batch_size=256, max_queue=256)
    assert set(plain) == {alone[0]} and set(stopped) == {alone[1]}
    assert alone[0] == reference(ckpt, "ab", 150, params, 42)[0]
    assert (alone[1], "stop") == reference(ckpt, "ab", 150, params, 42, stop)
    assert len(alone[0]) == 150 and len(alone[1]) < 150


def test_charlm_sample_gives_the_servers_text(tmp_path: Path) -> None:
    """``charlm-sample`` with the engine's seed, prompt and settings prints the engine's text."""
    ckpt = make_checkpoint()
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, ckpt.model, ckpt.vocab)
    params = SamplingParams(temperature=0.9, top_k=6, top_p=0.9)

    async def scenario(engine: ModelEngine) -> str:
        return (await complete(engine, "ba", 200, params, seed=2024))[0]

    served = run(scenario, ckpt)
    out = io.StringIO()
    args = ["--checkpoint", str(path), "--prompt", "ba", "--length", "200", "--seed", "2024"]
    args += ["--temperature", "0.9", "--top-k", "6", "--top-p", "0.9"]
    with contextlib.redirect_stdout(out):
        assert sample_main(args) == 0
    assert out.getvalue() == "ba" + served + "\n"


def test_each_row_keeps_its_settings() -> None:
    """Rows with different temperature, top-k, top-p, stop strings and seeds, run in one batch,
    each give exactly what the plain loop gives with those settings."""
    ckpt = make_checkpoint()
    cases = [
        ("", SamplingParams(temperature=0.0), 0, ()),  # greedy: the argmax path
        ("ab", SamplingParams(temperature=1.0, top_k=1), 5, ()),  # top-1 is greedy too
        ("ab", SamplingParams(temperature=2.0), 5, ()),
        ("ab", SamplingParams(temperature=2.0), 6, ()),
        ("hh", SamplingParams(temperature=0.5, top_p=0.3), 7, ()),
        ("hh", SamplingParams(temperature=1.0, top_k=2, top_p=0.9), 8, ()),
        ("c", SamplingParams(temperature=1.5), 9, ("e", "gh")),
        ("c", SamplingParams(temperature=1.5), 10, ("e", "gh")),
    ]

    async def scenario(engine: ModelEngine) -> list[tuple[str, list[GenerationChunk]]]:
        return await asyncio.gather(
            *(complete(engine, pr, 60, p, seed=s, stop=st) for pr, p, s, st in cases)
        )

    results = run(scenario, ckpt)
    for (prompt, params, seed, stop), (text, chunks) in zip(cases, results, strict=True):
        expected, reason = reference(ckpt, prompt, 60, params, seed, stop)
        assert text == expected, (params, seed)
        assert chunks[-1].finish_reason == reason
        assert chunks[-1].seed == seed
        assert chunks[-1].num_chars == len(text)
    assert results[0][0] == results[1][0]  # top_k=1 equals greedy
    assert results[2][0] != results[3][0]  # seeds matter
    stopped = [r for r in results[6:] if r[1][-1].finish_reason == "stop"]
    assert stopped, "expected a stop string to end at least one sampled row"
    for text, _ in stopped:
        assert "e" not in text and "gh" not in text


def test_rows_joining_a_lone_stream_and_leaving_change_nothing() -> None:
    """A stream decoding alone for a while (the batch's settings built once and reused), then
    joined by rows with other settings that leave again, gives the plain loop's text; so does
    each row that joined."""
    ckpt = make_checkpoint()
    lone = SamplingParams()  # temperature 1: no division, no argmax while it is alone
    joiners = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.6, top_k=4)]

    async def scenario(engine: ModelEngine) -> tuple[str, list[str]]:
        stream = engine.generate("ab", settings(1500, lone, 3))
        first = await anext(stream)
        while engine.stats()["steps"] < 40:  # alone for some steps
            await asyncio.sleep(0.001)
        assert engine.stats()["running_rows"] == 1
        others = await asyncio.gather(
            *(complete(engine, "h", 15 + 10 * i, p, seed=i) for i, p in enumerate(joiners))
        )
        assert engine.stats()["running_rows"] == 1  # alone again
        rows = engine.histograms()["decode_batch_rows"]
        assert rows.cumulative[0] < rows.count  # some steps had company
        rest = [c.text async for c in stream]
        return first.text + "".join(rest), [text for text, _ in others]

    text, others = run(scenario, ckpt)
    assert text == reference(ckpt, "ab", 1500, lone, 3)[0]
    for i, (params, other) in enumerate(zip(joiners, others, strict=True)):
        assert other == reference(ckpt, "h", 15 + 10 * i, params, i)[0]


def test_stop_strings_are_never_streamed() -> None:
    """Characters that could begin a stop string are held back; no chunk shows part of one."""
    seen = CompletionText(["abc", "bd"])
    shown = [seen.extend(ch) for ch in "xxabxab"]
    assert "".join(shown) == "xxabx"  # the trailing "ab" could still become "abc"
    assert not seen.stopped
    assert seen.extend("c") == "" and seen.stopped
    assert seen.release() == "" and seen.length == seen.shown == 5
    other = CompletionText(["bd"])
    assert [other.extend(c) for c in "abb"] == ["a", "", "b"]
    assert other.extend("d") == "" and other.length == 2


def test_coalesces_characters_into_few_chunks() -> None:
    async def scenario(engine: ModelEngine) -> list[GenerationChunk]:
        _, chunks = await complete(engine, "a", 400, SamplingParams(temperature=1.0))
        return chunks

    chunks = run(scenario, stream_interval_s=0.05)
    assert sum(len(c.text) for c in chunks) == 400
    assert chunks[0].text  # the first characters are sent at once
    assert len(chunks) < 100
    assert [c.num_chars for c in chunks] == sorted(c.num_chars for c in chunks)


def test_n_completions_of_one_request_each_keep_their_seed() -> None:
    """One call, three completions: chunks name their completion, and completion ``i`` is the
    plain loop's text with seed ``seed + i``."""
    ckpt = make_checkpoint()
    params = GenerationParams(80, temperature=1.2, top_k=5, seed=11, n=3)

    async def scenario(engine: ModelEngine) -> list[GenerationChunk]:
        return [c async for c in engine.generate("ab", params)]

    chunks = run(scenario, ckpt)
    texts = ["", "", ""]
    for chunk in chunks:
        texts[chunk.index] += chunk.text
    finals = {c.index: c for c in chunks if c.finish_reason is not None}
    assert sorted(finals) == [0, 1, 2]
    sampler = SamplingParams(temperature=1.2, top_k=5)
    for i, text in enumerate(texts):
        assert text == reference(ckpt, "ab", 80, sampler, 11 + i)[0]
        assert finals[i].seed == 11 + i and finals[i].num_chars == len(text) == 80
    assert len(set(texts)) == 3


def test_a_request_that_does_not_fit_is_refused_whole() -> None:
    """Completions of one request are queued all or none: a refusal leaves nothing behind."""

    async def scenario(engine: ModelEngine) -> None:
        running = engine.generate("a", settings(100_000, seed=0))
        await anext(running)  # holds the only row
        with pytest.raises(QueueFullError):
            await anext(engine.generate("b", GenerationParams(10, n=3)))  # room for 1 + 1
        assert engine.stats()["queue_depth"] == 0
        await running.aclose()

    run(scenario, max_batch_size=1, max_queue=1)


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
