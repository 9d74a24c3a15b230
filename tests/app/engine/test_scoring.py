"""Scoring: how texts are cut into chunks and that chunked reading changes no figure; the rounds:
how many requests are taken, the figures they complete with, and failures."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine.errors import EngineClosedError
from app.engine.requests import Phase, ScoreRequest
from app.engine.scoring import (
    ScoreRounds,
    ScoreRow,
    advance_scoring,
    chunk_end,
    make_rows,
    round_ends,
)
from app.engine.stats import EngineCounters
from models.checkpoint import LoadedCheckpoint
from models.config import ModelConfig
from models.recurrent import LSTMLM
from models.registry import available_architectures, build_model, model_class
from models.scoring import score_texts
from models.vocab import CharVocab

VOCAB = CharVocab(list("abcdefgh .\n"))


def checkpoint() -> LoadedCheckpoint:
    torch.manual_seed(3)
    config = ModelConfig("lstm", len(VOCAB), embed_size=8, hidden_size=24, num_layers=2)
    return LoadedCheckpoint(Path("t.safetensors"), LSTMLM(config).eval(), VOCAB, config)


def rows_of(texts: list[str], context: str = "", top_k: int = 0) -> list[ScoreRow]:
    request = ScoreRequest(texts, context, top_k, None, None)  # type: ignore[arg-type]
    return make_rows(request, VOCAB, len(VOCAB))


def chunks(targets: int, max_steps: int) -> list[int]:
    row = rows_of(["a" * targets])[0]
    sizes = []
    while not row.done:
        end = chunk_end(row, max_steps)
        sizes.append(end - row.pos)
        row.pos = end
    return sizes


def test_a_short_remainder_joins_the_last_chunk() -> None:
    assert chunks(200, 64) == [64, 64, 72]
    assert chunks(208, 64) == [64, 64, 80]
    assert chunks(209, 64) == [64, 64, 64, 17]
    assert chunks(80, 64) == [80]
    assert chunks(81, 64) == [64, 17]
    assert chunks(5, 64) == [5]
    assert chunks(36, 16) == [16, 20]
    assert chunks(40, 16) == [16, 16, 8]
    assert sum(chunks(100_003, 64)) == 100_003


def test_rows_read_in_chunks_from_different_positions_score_as_alone() -> None:
    """Rows joining at different rounds (so their chunks end at different steps) give the
    figures of each text scored alone, top-k included."""
    ckpt = checkpoint()
    texts = ["abc" * 67, "hhhh gg. ab" * 7, "a", "ba" * 45, "zz unknown!" * 3, "c d" * 30]
    rows = rows_of(texts, context="ab ", top_k=3)
    running: list[ScoreRow] = []
    with torch.inference_mode():
        while rows or any(not r.done for r in running):
            if rows:
                running.append(rows.pop(0))  # one more text joins every round
            advance_scoring(ckpt.model, running, 16)
        alone = [score_texts(ckpt.model, VOCAB, [t], "ab ", top_k=3)[0] for t in texts]
    for row, want in zip(running, alone, strict=True):
        got = row.result()
        assert got.num_chars == want.num_chars and got.num_unknown == want.num_unknown
        torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=0)
        assert want.top_ids is not None and got.top_ids is not None
        assert got.top_logprobs is not None and want.top_logprobs is not None
        assert torch.equal(got.top_ids, want.top_ids)
        torch.testing.assert_close(got.top_logprobs, want.top_logprobs, atol=1e-5, rtol=0)
        assert row.state is None  # done rows keep no state
    assert np.all([r.done for r in running])


def test_rows_that_go_on_read_the_width_of_the_round() -> None:
    """Rows that finish read their rest; the others all read the longest chunk."""
    rows = rows_of(["a" * 200, "b" * 70, "c" * 30, "d" * 300, "e" * 100])
    rows[0].pos, rows[3].pos = 40, 10
    ends = round_ends(rows, 64)
    # 160 left: 64 (goes on); 70: all 70 (finishes); 30: 30; 290: 64; 100: 64
    assert ends == [40 + 70, 70, 30, 10 + 70, 70]
    assert round_ends(rows[2:3], 64) == [30]
    assert round_ends([rows[0], rows[4]], 64) == [40 + 64, 64]


CAUSAL = [a for a in available_architectures() if model_class(a).can_generate]


@pytest.mark.parametrize("arch", CAUSAL)
def test_a_round_is_one_forward_and_mixed_lengths_score_as_alone(arch: str) -> None:
    """Texts of mixed lengths joining at different rounds: every round is one forward of the
    padded batch, and every architecture gives the figures of each text scored alone."""
    torch.manual_seed(4)
    config = ModelConfig(arch, len(VOCAB), embed_size=8, hidden_size=20, num_layers=2)
    lm = build_model(config).eval()
    forwards = 0

    def count(*_: object) -> None:
        nonlocal forwards
        forwards += 1

    texts = ["abc" * 40, "h", "gg.\nba" * 13, "", "d e f" * 9, "ab" * 21, "c" * 19]
    rows = rows_of(texts, context="hag", top_k=2)
    running: list[ScoreRow] = []
    rounds = 0
    handle = lm.register_forward_hook(count)
    with torch.inference_mode():
        while rows or any(not r.done for r in running):
            running.extend(rows[:2])  # two more texts join every round
            del rows[:2]
            advance_scoring(lm, running, 16)
            rounds += 1
        handle.remove()
        alone = [score_texts(lm, VOCAB, [t], "hag", top_k=2)[0] for t in texts]
    assert forwards == rounds
    for row, want in zip(running, alone, strict=True):
        got = row.result()
        assert got.num_chars == want.num_chars
        torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=0)
        assert got.top_logprobs is not None and want.top_logprobs is not None
        torch.testing.assert_close(got.top_logprobs, want.top_logprobs, atol=1e-5, rtol=0)


def model() -> LSTMLM:
    torch.manual_seed(5)
    config = ModelConfig("lstm", len(VOCAB), embed_size=8, hidden_size=16, num_layers=1)
    return LSTMLM(config).eval()


def request(loop: asyncio.AbstractEventLoop, texts: list[str], context: str = "") -> ScoreRequest:
    return ScoreRequest(texts, context, 0, loop, loop.create_future())


def test_requests_are_taken_while_fewer_texts_than_a_batch_are_in_hand() -> None:
    loop = asyncio.new_event_loop()
    try:
        rounds = ScoreRounds(model(), VOCAB, EngineCounters(), max_rows=3)
        queue = deque(request(loop, ["ab", "cd"]) for _ in range(3))
        first, second, third = queue
        assert not rounds.busy()
        rounds.take(queue)
        # 0 texts in hand, take 2; 2 < 3, take 2 more; 4 >= 3: the third waits in the queue
        assert list(queue) == [third]
        assert first.phase is second.phase is Phase.RUNNING and third.phase is Phase.QUEUED
        assert rounds.busy() and not rounds.has_rows()
        rounds.start()
        assert rounds.has_rows()
        rounds.take(queue)  # four texts in hand already
        assert list(queue) == [third]
    finally:
        loop.close()


def test_rounds_complete_requests_with_the_figures_of_each_text_alone() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        lm, counters = model(), EngineCounters()
        rounds = ScoreRounds(lm, VOCAB, counters, max_rows=2)
        texts = ["abc " * 40, "h", "gg.\nba" * 9]
        full, empty = request(loop, texts, context="ab"), request(loop, [])
        rounds.take(deque([empty, full]))
        with torch.inference_mode():
            for _ in range(100):
                rounds.start()
                if not rounds.has_rows():
                    break
                rounds.advance()
            want = score_texts(lm, VOCAB, texts, "ab")
        assert not rounds.busy()
        assert await asyncio.wait_for(empty.future, 5) == []
        got = await asyncio.wait_for(full.future, 5)
        assert full.phase is empty.phase is Phase.DONE
        assert [g.num_chars for g in got] == [len(t) for t in texts]
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g.logprobs, w.logprobs, atol=1e-5, rtol=0)
        assert counters.scored_requests == 1
        assert counters.chars_scored == sum(len(t) for t in texts) + 2 * len(texts)

    asyncio.run(run())


def test_fail_all_ends_every_request_in_hand_with_the_error() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        rounds = ScoreRounds(model(), VOCAB, EngineCounters(), max_rows=4)
        started, taken = request(loop, ["abc" * 50, "d" * 90]), request(loop, ["a"])
        rounds.take(deque([started]))
        rounds.start()
        with torch.inference_mode():
            rounds.advance()  # both texts are longer than one round
        rounds.take(deque([taken]))
        assert started.phase is taken.phase is Phase.RUNNING
        rounds.fail_all(EngineClosedError("closing"))
        assert not rounds.busy()
        for scoring in (started, taken):
            with pytest.raises(EngineClosedError, match="closing"):
                await asyncio.wait_for(scoring.future, 5)
            assert scoring.phase is Phase.DONE

    asyncio.run(run())
