import pytest
import torch

from models.base import concat_states, select_state
from models.config import ModelConfig
from models.registry import available_architectures, build_model, model_class

CAUSAL = [a for a in available_architectures() if model_class(a).can_generate]


def tiny(arch: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=11, embed_size=8, hidden_size=12, num_layers=2, **kw)
    return build_model(cfg).eval()


def test_classic_family_is_registered() -> None:
    assert {"rnn", "gru", "lstm"} <= set(available_architectures())


@pytest.mark.parametrize("arch", CAUSAL)
def test_step_by_step_equals_whole_sequence(arch: str) -> None:
    model = tiny(arch)
    ids = torch.randint(0, 11, (3, 17))
    with torch.no_grad():
        whole, whole_state = model(ids, model.initial_state(3))
        state = model.initial_state(3)
        steps = []
        for t in range(ids.shape[1]):
            logits, state = model(ids[:, t : t + 1], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-5, rtol=1e-5)
    for a, b in zip(state, whole_state, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", CAUSAL)
def test_state_rows_are_independent(arch: str) -> None:
    model = tiny(arch)
    ids = torch.randint(0, 11, (4, 9))
    with torch.no_grad():
        logits, state = model(ids, model.initial_state(4))
        alone, alone_state = model(ids[2:3], model.initial_state(1))
    torch.testing.assert_close(logits[2:3], alone, atol=1e-5, rtol=1e-5)
    picked = select_state(state, [2])
    for a, b in zip(picked, alone_state, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    merged = concat_states([select_state(state, [0]), select_state(state, [3])])
    assert merged[0].shape[0] == 2


def test_tied_weights_need_equal_sizes() -> None:
    with pytest.raises(ValueError, match="tie_weights"):
        build_model(
            ModelConfig(arch="lstm", vocab_size=5, embed_size=4, hidden_size=6, tie_weights=True)
        )
    model = build_model(
        ModelConfig(arch="gru", vocab_size=5, embed_size=6, hidden_size=6, tie_weights=True)
    )
    assert model.head.weight is model.embedding.weight


TYING = ["gru", "lstm", "rnn"]


def test_only_the_fused_recurrent_models_tie_weights() -> None:
    assert [a for a in available_architectures() if model_class(a).can_tie_weights] == TYING


@pytest.mark.parametrize("arch", available_architectures())
def test_tied_weights_are_built_or_refused_by_name(arch: str) -> None:
    config = ModelConfig(arch=arch, vocab_size=5, embed_size=6, hidden_size=6, tie_weights=True)
    if arch in TYING:
        model = build_model(config)
        assert model.head.weight is model.embedding.weight
        return
    with pytest.raises(ValueError) as info:
        build_model(config)
    message = str(info.value)
    assert f"architecture {arch!r} does not support tie_weights" in message
    assert "it applies to gru, lstm, rnn" in message


def test_unknown_arch_and_options_are_named() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'transformer'"):
        build_model(ModelConfig(arch="transformer", vocab_size=5))
    with pytest.raises(ValueError, match="periods"):
        build_model(ModelConfig(arch="lstm", vocab_size=5, options={"periods": [1, 2]}))
