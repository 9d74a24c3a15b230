"""The fused one-character step against the reference ``forward``: the same logits to 1e-5 over
hundreds of steps with each path carrying its own state, and every case where ``step`` must fall
back to ``forward``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.config import ModelConfig
from models.fast_step import FusedStep
from models.recurrent import _FusedRecurrentLM
from models.registry import build_model

VOCAB_SIZE = 13


def fused_model(arch: str, num_layers: int = 1, tie: bool = False) -> _FusedRecurrentLM:
    torch.manual_seed(7)
    embed_size = 48 if tie else 12
    config = ModelConfig(
        arch, VOCAB_SIZE, embed_size, hidden_size=48, num_layers=num_layers, tie_weights=tie
    )
    model = build_model(config).eval()
    assert isinstance(model, _FusedRecurrentLM)
    return model


@pytest.mark.parametrize(
    ("arch", "num_layers", "tie"),
    [("lstm", 1, False), ("lstm", 3, False), ("gru", 1, False), ("gru", 2, False),
     ("rnn", 1, False), ("rnn", 2, False), ("lstm", 2, True)],
)  # fmt: skip
def test_the_step_follows_forward_over_hundreds_of_steps(
    arch: str, num_layers: int, tie: bool
) -> None:
    model = fused_model(arch, num_layers, tie)
    ids = torch.randint(0, VOCAB_SIZE, (3, 400), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = fused = model.initial_state(3)
        for t in range(ids.shape[1]):
            want, reference = model(ids[:, t : t + 1], reference)
            got, fused = model.step(ids[:, t : t + 1], fused)
            assert got.shape == want.shape == (3, 1, VOCAB_SIZE)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for got_part, want_part in zip(fused, reference, strict=True):
        assert got_part.shape == want_part.shape == (3, num_layers, 48)
        torch.testing.assert_close(got_part, want_part, atol=1e-5, rtol=0)


def test_the_step_starts_from_none_and_from_a_state_forward_left() -> None:
    """``forward`` leaves its state as transposed views; ``None`` is the initial state."""
    model = fused_model("lstm", 2)
    ids = torch.randint(0, VOCAB_SIZE, (4, 9), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        _, state = model(ids)
        assert not state[0].is_contiguous()
        torch.testing.assert_close(model.step(ids[:, :1], state)[0], model(ids[:, :1], state)[0])
        torch.testing.assert_close(model.step(ids[:, :1])[0], model(ids[:, :1])[0])


def test_the_step_is_rebuilt_when_a_weight_changes() -> None:
    model = fused_model("gru")
    ids = torch.tensor([[3], [4]])
    with torch.inference_mode():
        before = model.step(ids)[0]
    with torch.no_grad():
        dict(model.rnn.named_parameters())["weight_hh_l0"].mul_(0.5)  # the version moves
        model.head.bias.add_(1.0)
    with torch.inference_mode():
        after = model.step(ids)[0]
        torch.testing.assert_close(after, model(ids)[0], atol=1e-6, rtol=0)
    assert not torch.allclose(after, before)
    other = fused_model("gru")
    with torch.no_grad():
        other.embedding.weight.normal_()
    model.load_state_dict(other.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(model.step(ids)[0], other(ids)[0], atol=1e-6, rtol=0)


def test_training_gradients_and_the_switch_take_the_reference_path() -> None:
    model = fused_model("lstm")
    ids = torch.tensor([[1], [2]])
    logits, _ = model.step(ids)  # autograd on: forward itself, gradients reach the weights
    logits.sum().backward()
    assert dict(model.rnn.named_parameters())["weight_hh_l0"].grad is not None
    assert torch.equal(logits, model(ids)[0])
    with torch.inference_mode():
        model.train()
        assert torch.equal(model.step(ids)[0], model(ids)[0])  # dropout 0: deterministic
        model.eval()
        model.fast_step = False
        assert torch.equal(model.step(ids)[0], model(ids)[0])
        model.fast_step = True
        two = torch.tensor([[1, 2]])  # more than one id per row: forward
        assert torch.equal(model.step(two)[0], model(two)[0])


@pytest.mark.parametrize("arch", ["clockwork", "esn"])
def test_other_architectures_step_through_forward(arch: str) -> None:
    torch.manual_seed(0)
    config = ModelConfig(arch, VOCAB_SIZE, embed_size=8, hidden_size=16, num_layers=1)
    model = build_model(config).eval()
    ids = torch.tensor([[5], [6]])
    with torch.inference_mode():
        state = model(torch.tensor([[1, 2, 3], [4, 5, 6]]))[1]
        got, got_state = model.step(ids, state)
        want, want_state = model(ids, state)
    assert torch.equal(got, want)
    assert all(torch.equal(a, b) for a, b in zip(got_state, want_state, strict=True))


def test_layers_without_a_fused_step_are_refused() -> None:
    embedding, head = nn.Embedding(5, 4), nn.Linear(6, 5)
    relu = nn.RNN(4, 6, nonlinearity="relu", batch_first=True)
    with pytest.raises(ValueError, match="no fused step"):
        FusedStep(embedding, relu, head)
    with pytest.raises(ValueError, match="batch-first"):
        FusedStep(embedding, nn.LSTM(4, 6), head)
