"""Validation scores each document as /v1/score does, bidirectional models included; the
parallel reading comes close to that figure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.infill import pll_score_texts
from models.registry import build_model
from models.scoring import chunk_length, score_id_sequences
from models.vocab import CharVocab
from tests.support import make_corpus, train_tiny_model
from training.evaluate import (
    EXACT,
    MIN_STREAM_CHARS,
    Reading,
    evaluate_docs,
    limit_docs,
    read_batch,
    read_steps,
)


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
    # the pseudo-likelihood of each whole document, however the reading would cut it
    assert evaluate_docs(model, docs, Reading(8, 16)).total_nats == result.total_nats
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


def test_pieces_cover_every_character_once_with_a_warm_up_before_mid_text_starts() -> None:
    reading = Reading(streams=4, warmup=10)
    lengths = [5000, 0, 300, 2500]
    pieces = reading.pieces(lengths)
    for doc, length in enumerate(lengths):
        mine = [p for p in pieces if p.doc == doc]
        bounds = [p.start for p in mine] + [length] if mine else []
        assert [(p.start, p.stop) for p in mine] == list(itertools.pairwise(bounds))
        assert bool(mine) == (length > 0)
        if mine:
            # a document's first piece starts at its start; the others read 10 characters first
            assert (mine[0].context, mine[0].start) == (0, 0)
            assert all(p.start - p.context == 10 for p in mine[1:])
            assert all(p.stop - p.start >= min(length, MIN_STREAM_CHARS) for p in mine)
    # 7,800 characters as 4 streams: pieces of at least 1,950, one per document at least
    assert [len([p for p in pieces if p.doc == d]) for d in range(4)] == [2, 0, 1, 1]
    # the exact reading: one piece per non-empty document, nothing read unscored
    assert [(p.doc, p.context, p.start, p.stop) for p in EXACT.pieces(lengths)] == [
        (0, 0, 0, 5000),
        (2, 0, 0, 300),
        (3, 0, 0, 2500),
    ]


def test_parallel_reading_is_close_to_the_exact_one() -> None:
    """A trained model's figure read as 16 streams differs from one stream per document by
    far less than the 3rd decimal; with no warm-up the streams' first characters show."""
    model, vocab = train_tiny_model(make_corpus(300), steps=200)
    val = make_corpus(1200)
    docs = [vocab.encode_array(val), vocab.encode_array(val[:3000])]
    exact = evaluate_docs(model, docs)
    parallel = evaluate_docs(model, docs, Reading(streams=16, warmup=128))
    cold = evaluate_docs(model, docs, Reading(streams=16, warmup=0))
    assert 8 < len(Reading(16).pieces([len(d) for d in docs])) <= 16
    assert parallel.num_chars == exact.num_chars == len(val) + 3000
    assert parallel.nats_per_char == pytest.approx(exact.nats_per_char, rel=1e-5)
    error, cold_error = (abs(r.total_nats - exact.total_nats) for r in (parallel, cold))
    assert cold_error > 10 * error


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_a_batch_read_in_short_chunks_sums_the_scoring_figures(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of different lengths, with and without a context, read 16 steps a forward: the
    state crosses the chunks, warm-up and padding are read and not scored."""
    model, vocab = train_tiny_model(make_corpus(50), steps=20, arch=arch)
    text = vocab.encode_array(make_corpus(40))
    texts = [text[:300], text[300:310], text[400:401], text[500:700]]
    contexts = [text[:0], text[290:300], text[370:400], text[:0]]
    monkeypatch.setattr(
        "training.evaluate.CPU_CHUNK_ELEMENTS", 16 * len(texts) * model.config.hidden_size
    )
    assert read_steps(model, len(texts)) == 16  # 19 forwards for the longest row
    scores = score_id_sequences(model, texts, contexts)
    expected = -sum(score.logprob for score in scores)
    assert read_batch(model, texts, contexts) == pytest.approx(expected, rel=1e-6)
    # one row alone is that row's figure: the other rows change nothing
    alone = read_batch(model, texts[1:2], contexts[1:2])
    assert alone == pytest.approx(-scores[1].logprob, rel=1e-6)


def test_a_text_shorter_than_two_pieces_is_read_exactly() -> None:
    model, vocab = train_tiny_model(make_corpus(50), steps=20)
    docs = [vocab.encode_array(make_corpus(90))]
    assert len(docs[0]) < 2 * MIN_STREAM_CHARS
    exact = evaluate_docs(model, docs)
    assert evaluate_docs(model, docs, Reading(128)).total_nats == exact.total_nats
