"""The engine's continuous batching of completions: rows joining and leaving a running batch,
per-row settings and seeds, stop strings and chunking, requests refused whole. Each test builds
a tiny real model; nothing is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from app.engine.engine import ModelEngine, QueueFullError
from app.engine.generation import GenerationChunk
from app.engine.params import GenerationParams
from app.engine.requests import CompletionText
from models.checkpoint import save_checkpoint
from models.recurrent import GRULM, LSTMLM
from models.sampling import SamplingParams
from tests.app.engine.engine_support import (
    complete,
    make_checkpoint,
    reference,
    run,
    settings,
)
from training.checkpoint_cli import sample_main

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
