"""Scoring rows: how texts are cut into chunks, and that chunked reading changes no figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from app.engine_requests import ScoreRequest
from app.score_rows import ScoreRow, advance_scoring, chunk_end, make_rows
from models.checkpoint import LoadedCheckpoint
from models.config import ModelConfig
from models.recurrent import LSTMLM
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
