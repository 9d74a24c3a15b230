import math
import time

import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.infill import InfillError, infill_text, pll_score_texts
from models.registry import build_model
from models.vocab import BOS_ID, CharVocab
from tests.support import make_corpus, train_tiny_model


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, CharVocab]:
    """A tiny bidirectional model trained with the shared next-character loss."""
    return train_tiny_model(make_corpus(200), steps=250, arch="bilstm", lr=1e-2)


def test_infill_beats_a_unigram_guess(trained) -> None:  # type: ignore[no-untyped-def]
    model, vocab = trained
    text = "gamma 2 ammag.\ndelta 3 atled.\nalpha 4 ahpla.\nbeta 5 ateb.\n"
    rng = np.random.default_rng(0)
    holes = sorted(rng.choice(len(text), size=12, replace=False).tolist())
    masked = "".join("#" if i in holes else ch for i, ch in enumerate(text))
    started = time.perf_counter()
    result = infill_text(model, vocab, masked, mask="#", top_k=3)
    assert time.perf_counter() - started < 20
    assert len(result.text) == len(text)
    assert all(result.text[i] == text[i] for i in range(len(text)) if i not in holes)
    model_right = sum(result.text[i] == text[i] for i in holes)
    commonest = max(set(text), key=text.count)
    unigram_right = sum(text[i] == commonest for i in holes)
    assert model_right >= 8
    assert model_right > unigram_right
    assert sum(len(g.text) for g in result.gaps) == 12
    for gap in result.gaps:
        assert len(gap.candidates) == len(gap.text)
        assert gap.candidates[0][0][0] == gap.text[0]  # the fill is the best candidate
        assert all(0.0 <= p <= 1.0 for _, p in gap.candidates[0])


def test_multi_character_gap(trained) -> None:  # type: ignore[no-untyped-def]
    model, vocab = trained
    result = infill_text(model, vocab, "alpha 1 ah__a.\nbeta 2 ateb.\n")
    assert result.text.startswith("alpha 1 ahpla.")
    assert [(g.start, g.text) for g in result.gaps] == [(10, "pl")]
    assert result.gaps[0].alternatives == []  # only with top_k


def test_gap_alternatives_are_ranked_whole_fills(trained) -> None:  # type: ignore[no-untyped-def]
    model, vocab = trained
    plain = infill_text(model, vocab, "gamma 5 am___.\n")
    result = infill_text(model, vocab, "gamma 5 am___.\n", top_k=3)
    (gap,) = result.gaps
    texts = [text for text, _ in gap.alternatives]
    scores = [score for _, score in gap.alternatives]
    assert len(texts) == 3 and len(set(texts)) == 3 and all(len(t) == 3 for t in texts)
    assert texts[0] == gap.text == "mag"
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(result.pll, abs=1e-3)  # the fill is the best alternative
    assert result.pll >= plain.pll - 1e-4  # the beam never does worse than the sweeps


def test_pll_prefers_real_text(trained) -> None:  # type: ignore[no-untyped-def]
    model, vocab = trained
    good, bad = pll_score_texts(model, vocab, ["delta 3 atled.\n", "dleta 3 adtel.\n"], top_k=2)
    assert good.num_chars == bad.num_chars == 15
    assert good.logprob > bad.logprob + 5
    assert good.top_ids is not None and good.top_ids.shape == (15, 2)
    # PLL sees both sides, so it is far below a uniform guess's bits per character
    assert good.bits_per_char < 0.5 * math.log2(len(vocab))


def test_pll_batch_equals_one_at_a_time(trained) -> None:  # type: ignore[no-untyped-def]
    model, vocab = trained
    texts = ["beta 1 ateb.", "gamma", "x"]
    together = pll_score_texts(model, vocab, texts, context="alpha ")
    for text, score in zip(texts, together, strict=True):
        alone = pll_score_texts(model, vocab, [text], context="alpha ")[0]
        torch.testing.assert_close(score.logprobs, alone.logprobs)
        assert score.num_chars == len(text)
    assert together[2].num_unknown == 1


def test_errors_are_named(trained) -> None:  # type: ignore[no-untyped-def]
    model, vocab = trained
    with pytest.raises(InfillError, match="no masked"):
        infill_text(model, vocab, "alpha")
    with pytest.raises(InfillError, match="exactly one"):
        infill_text(model, vocab, "al__", mask="__")
    causal = build_model(ModelConfig(arch="lstm", vocab_size=len(vocab), hidden_size=4))
    with pytest.raises(InfillError, match="bidirectional"):
        infill_text(causal, vocab, "al_ha")
    with pytest.raises(InfillError, match="bidirectional"):
        pll_score_texts(causal, vocab, ["alpha"])


def test_pll_of_a_text_longer_than_a_chunk_is_one_forwards(trained) -> None:  # type: ignore[no-untyped-def]
    from models.scoring import chunk_length

    model, vocab = trained
    text = "".join(f"{w} {i % 7} {w[::-1]}.\n" for i, w in enumerate(["alpha", "beta"] * 200))
    assert len(text) > chunk_length(1, len(vocab))  # scored in pieces of bounded memory
    (score,) = pll_score_texts(model, vocab, [text], top_k=3)
    stream = torch.tensor([[BOS_ID, *vocab.encode(text)]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(stream)[0][0, :-1].float(), dim=-1)  # one forward
    expected = logprobs.gather(-1, stream[0, 1:, None]).squeeze(-1)
    torch.testing.assert_close(score.logprobs, expected, rtol=1e-5, atol=1e-5)
    assert score.top_ids is not None and score.top_logprobs is not None
    torch.testing.assert_close(score.top_logprobs, logprobs.topk(3, dim=-1).values)
    assert score.num_chars == len(text)
