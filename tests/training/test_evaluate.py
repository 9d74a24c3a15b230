"""Validation scores each document as /v1/score does, bidirectional models included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.infill import pll_score_texts
from models.registry import build_model
from models.scoring import chunk_length
from models.vocab import CharVocab
from training.evaluate import evaluate_docs, limit_docs


@pytest.mark.parametrize("arch", ["bilstm", "bigru"])
def test_a_bidirectional_model_is_scored_by_its_pseudo_likelihood(arch: str) -> None:
    vocab = CharVocab.from_text("abcdefgh .\n")
    torch.manual_seed(0)
    config = ModelConfig(arch=arch, vocab_size=len(vocab), embed_size=8, hidden_size=12)
    model = build_model(config)
    with torch.no_grad():  # sharper distributions: a dropped context character shows
        model.head.weight.normal_(0.0, 2.0)
    short = "abc de.\nfgh"
    long = "".join("abcdefgh .\n"[(i * 7) % 11] for i in range(chunk_length(1, len(vocab)) + 300))
    docs = [vocab.encode_array(short), vocab.encode_array(long)]
    model.train()  # evaluation switches to eval mode and back
    result = evaluate_docs(model, docs)
    assert model.training
    model.eval()
    scores = pll_score_texts(model, vocab, [short, long])
    # every character, the last one of each text included, is in its neighbours' context
    assert result.num_chars == len(short) + len(long)
    assert result.total_nats == pytest.approx(-sum(s.logprob for s in scores), rel=1e-9)
    (alone,) = pll_score_texts(model, vocab, [short])
    assert evaluate_docs(model, docs[:1]).nats_per_char == pytest.approx(alone.nats_per_char)


def test_limit_docs_cuts_the_last_kept_document() -> None:
    docs = [np.arange(5), np.arange(4), np.arange(3)]
    kept = limit_docs(docs, 7)
    assert [len(d) for d in kept] == [5, 2]
    assert all(a is b for a, b in zip(limit_docs(docs, None), docs, strict=True))
