import copy

import pytest
import torch

from models.adapt import (
    RMS_BETA,
    RMS_EPS,
    AdaptError,
    AdaptSettings,
    adapt_refusal,
    adaptive_score_texts,
    check_adaptable,
)
from models.config import ModelConfig
from models.registry import build_model
from models.scoring import score_text, score_texts
from models.vocab import BOS_ID, CharVocab
from tests.support import make_corpus, train_tiny_model

#: a phrase the tiny model has never read, repeated: what adapting to a text is for
REPEATED = "gamma delta beta alpha. " * 30


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, CharVocab]:
    model, vocab = train_tiny_model(make_corpus(), steps=150)
    model.zero_grad(set_to_none=True)  # no gradient left from training: none may appear
    return model, vocab


def untrained(arch: str = "lstm", seed: int = 0) -> tuple[torch.nn.Module, CharVocab]:
    vocab = CharVocab.from_text("abcdefgh \n")
    torch.manual_seed(seed)
    config = ModelConfig(arch=arch, vocab_size=len(vocab), embed_size=6, hidden_size=10)
    return build_model(config).eval(), vocab


def reference_logprobs(model, vocab, text: str, settings: AdaptSettings) -> list[float]:
    """Dynamic evaluation written plainly: a torch optimizer on a copy, one segment at a time.
    The ``rms`` rule is Adam without momentum (its second moment bias-corrected the same way)."""
    clone = copy.deepcopy(model)
    if settings.method == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(clone.parameters(), lr=settings.rate)
    else:
        optimizer = torch.optim.Adam(
            clone.parameters(), lr=settings.rate, betas=(0.0, RMS_BETA), eps=RMS_EPS
        )
    segment = settings.segment
    ids = torch.tensor([[BOS_ID, *vocab.encode(text)]])
    state = clone.initial_state(1)
    out: list[float] = []
    for start in range(0, len(text), segment):
        stop = min(start + segment, len(text))
        logits, state = clone(ids[:, start:stop], state)
        state = tuple(s.detach() for s in state)
        logprobs = torch.log_softmax(logits[0], -1)
        picked = logprobs.gather(-1, ids[0, start + 1 : stop + 1].unsqueeze(-1)).squeeze(-1)
        out.extend(picked.tolist())
        optimizer.zero_grad()
        (-picked.mean()).backward()
        optimizer.step()
    return out


@pytest.mark.parametrize("settings", [AdaptSettings(0.5, 8, "sgd"), AdaptSettings(0.01, 8)])
def test_matches_a_plain_optimizer_loop(settings: AdaptSettings) -> None:
    model, vocab = untrained()
    text = "bad cafe head beef " * 4
    (score,) = adaptive_score_texts(model, vocab, [text], settings=settings)
    expected = reference_logprobs(model, vocab, text, settings)
    torch.testing.assert_close(score.logprobs, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    # the steps moved the weights: after the first segment, the figures differ from static ones
    static = score_text(model, vocab, text)
    torch.testing.assert_close(score.logprobs[:8], static.logprobs[:8], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score.logprobs[8:], static.logprobs[8:], atol=1e-3)


def test_the_model_is_never_changed_and_the_result_is_deterministic(trained) -> None:
    model, vocab = trained
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    static_before = score_texts(model, vocab, [REPEATED, "alpha 1 ahpla."])
    settings = AdaptSettings(0.01, 16)
    first = adaptive_score_texts(model, vocab, [REPEATED], settings=settings)
    with torch.inference_mode():  # as on the server's worker thread
        again = adaptive_score_texts(model, vocab, [REPEATED], settings=settings)
    static_after = score_texts(model, vocab, [REPEATED, "alpha 1 ahpla."])
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is None, name
    for b, a in zip(static_before, static_after, strict=True):
        assert torch.equal(b.logprobs, a.logprobs)
    assert torch.equal(first[0].logprobs, again[0].logprobs)


@pytest.mark.parametrize("method", ["sgd", "rms"])
def test_adapting_lowers_the_loss_on_a_repetitive_text(trained, method) -> None:
    model, vocab = trained
    static = score_text(model, vocab, REPEATED)
    rate = 0.3 if method == "sgd" else 0.01
    settings = AdaptSettings(rate=rate, segment=24, method=method)
    (adapted,) = adaptive_score_texts(model, vocab, [REPEATED], settings=settings)
    assert adapted.num_chars == static.num_chars == len(REPEATED)
    assert adapted.bits_per_char < static.bits_per_char - 0.5
    # the gain comes late: the first segment is scored before any step
    torch.testing.assert_close(adapted.logprobs[:24], static.logprobs[:24], atol=1e-5, rtol=1e-5)


def test_each_text_adapts_from_the_model_alone(trained) -> None:
    model, vocab = trained
    settings = AdaptSettings(0.01, 16)
    alone = adaptive_score_texts(model, vocab, ["beta 3 ateb."], settings=settings)
    after_other = adaptive_score_texts(model, vocab, [REPEATED, "beta 3 ateb."], settings=settings)
    assert torch.equal(alone[0].logprobs, after_other[1].logprobs)


def test_context_is_read_and_adapted_on_but_not_scored(trained) -> None:
    model, vocab = trained
    settings = AdaptSettings(0.01, 16)
    (plain,) = adaptive_score_texts(model, vocab, [REPEATED[:48]], settings=settings)
    (after,) = adaptive_score_texts(
        model, vocab, [REPEATED[:48]], context=REPEATED, settings=settings
    )
    assert after.num_chars == plain.num_chars == 48
    assert after.bits_per_char < plain.bits_per_char


def test_top_k_alternatives_come_from_the_adapted_weights(trained) -> None:
    model, vocab = trained
    (score,) = adaptive_score_texts(model, vocab, [REPEATED[:40]], top_k=3)
    assert score.top_ids is not None and score.top_logprobs is not None
    assert score.top_ids.shape == score.top_logprobs.shape == (40, 3)
    assert torch.all(score.top_logprobs[:, 0] >= score.logprobs - 1e-6)
    (plain,) = adaptive_score_texts(model, vocab, [REPEATED[:40]])
    torch.testing.assert_close(score.logprobs, plain.logprobs)


def test_models_that_cannot_adapt_are_refused_with_the_reason() -> None:
    bidirectional, _ = untrained("bilstm")
    with pytest.raises(AdaptError, match="both sides"):
        check_adaptable(bidirectional)
    frozen, vocab = untrained()
    frozen.requires_grad_(False)
    with pytest.raises(AdaptError, match="no trainable weights"):
        adaptive_score_texts(frozen, vocab, ["abc"])
    assert adapt_refusal(untrained("gru")[0]) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.0}, "rate must be"),
        ({"rate": 0.02}, "rate must be"),
        ({"rate": 2.0, "method": "sgd"}, "rate must be"),
        ({"segment": 4}, "segment must be"),
        ({"segment": 5000}, "segment must be"),
        ({"method": "adam"}, "method must be"),
    ],
)
def test_settings_out_of_bounds_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        AdaptSettings(**kwargs)


@pytest.mark.parametrize("arch", ["rnn", "gru", "lstm", "clockwork", "esn"])
def test_every_left_to_right_architecture_adapts(arch: str) -> None:
    model, vocab = untrained(arch)
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    text = "bad cafe head beef " * 3
    (score,) = adaptive_score_texts(model, vocab, [text], settings=AdaptSettings(0.01, 8))
    static = score_text(model, vocab, text)
    assert score.num_chars == len(text) and torch.isfinite(score.logprobs).all()
    assert not torch.allclose(score.logprobs[8:], static.logprobs[8:], atol=1e-4)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
