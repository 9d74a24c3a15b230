import math

import torch

from models.config import ModelConfig
from models.registry import build_model
from models.scoring import score_text, score_texts
from models.vocab import BOS_ID, CharVocab


def setup():
    vocab = CharVocab.from_text("abcdefgh \n")
    torch.manual_seed(3)
    model = build_model(
        ModelConfig(arch="lstm", vocab_size=len(vocab), embed_size=6, hidden_size=10, num_layers=1)
    ).eval()
    return model, vocab


def manual_logprobs(model, vocab, text: str, context: str = "") -> list[float]:
    ids = [BOS_ID, *vocab.encode(context + text)]
    out = []
    with torch.no_grad():
        state = model.initial_state(1)
        for i in range(len(ids) - 1):
            logits, state = model(torch.tensor([[ids[i]]]), state)
            out.append(float(torch.log_softmax(logits[0, -1], -1)[ids[i + 1]]))
    return out[len(context) :]


def test_matches_step_by_step_and_invariants_hold() -> None:
    model, vocab = setup()
    result = score_text(model, vocab, "bad cafe")
    expected = manual_logprobs(model, vocab, "bad cafe")
    assert result.num_chars == 8
    torch.testing.assert_close(result.logprobs, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert math.isclose(result.logprob, sum(expected), rel_tol=1e-5)
    assert math.isclose(result.perplexity, math.exp(-result.logprob / 8), rel_tol=1e-9)
    assert math.isclose(result.bits_per_char, -result.logprob / 8 / math.log(2), rel_tol=1e-9)


def test_context_conditions_but_is_not_scored() -> None:
    model, vocab = setup()
    with_ctx = score_text(model, vocab, "head", context="ab ")
    expected = manual_logprobs(model, vocab, "head", context="ab ")
    torch.testing.assert_close(with_ctx.logprobs, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert with_ctx.num_chars == 4


def test_batch_equals_alone_and_unknown_is_finite() -> None:
    model, vocab = setup()
    texts = ["a", "cabbage\nhead", "", "zz€"]
    batched = score_texts(model, vocab, texts, top_k=3)
    for text, got in zip(texts, batched, strict=True):
        alone = score_text(model, vocab, text)
        torch.testing.assert_close(got.logprobs, alone.logprobs, atol=1e-5, rtol=1e-5)
    assert batched[3].num_unknown == 3 and math.isfinite(batched[3].logprob)
    assert batched[2].num_chars == 0 and batched[2].logprob == 0.0
    assert batched[1].top_ids is not None and batched[1].top_ids.shape == (12, 3)
    assert torch.all(batched[1].top_logprobs[:, 0] >= batched[1].logprobs - 1e-6)


def test_bits_per_char_and_perplexity_formulas():
    from models.scoring import MAX_LOG_PERPLEXITY, bits_per_char, perplexity

    assert bits_per_char(math.log(2)) == 1.0
    assert bits_per_char(2.5) == 2.5 / math.log(2)
    assert perplexity(0.0) == 1.0
    assert perplexity(1.7) == math.exp(1.7)
    # a huge loss still gives a finite figure (JSON has no infinity)
    assert perplexity(1e6) == math.exp(MAX_LOG_PERPLEXITY) < math.inf
    assert math.isnan(perplexity(math.nan))


def test_text_score_figures_use_the_shared_formulas():
    from models.scoring import bits_per_char, perplexity

    model, vocab = setup()
    score = score_text(model, vocab, "abc defg")
    assert score.bits_per_char == bits_per_char(score.nats_per_char)
    assert score.perplexity == perplexity(score.nats_per_char)
