import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.esn import EchoStateLM, spectral_radius
from models.registry import build_model
from models.vocab import CharVocab


def esn(hidden: int = 40, **options: object) -> EchoStateLM:
    cfg = ModelConfig(arch="esn", vocab_size=9, hidden_size=hidden, options=dict(options))
    model = build_model(cfg)
    assert isinstance(model, EchoStateLM)
    return model.eval()


@pytest.mark.parametrize("radius", [0.5, 0.9, 0.99])
def test_spectral_radius_is_within_one_percent(radius: float) -> None:
    model = esn(hidden=120, spectral_radius=radius, density=0.05, seed=3)
    assert spectral_radius(model.reservoir) == pytest.approx(radius, rel=0.01)


def test_reservoir_is_sparse_fixed_and_only_the_readout_trains() -> None:
    model = esn(hidden=100, density=0.1)
    density = float((model.reservoir != 0).float().mean())
    assert 0.07 < density < 0.13
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"readout.weight", "readout.bias"}
    assert {"reservoir", "input_weights", "reservoir_bias", "logit_scale", "logit_bias"} <= set(
        model.state_dict()
    )


def test_leak_rate_blends_old_and_new_state() -> None:
    model = esn(hidden=10, leak_rate=0.25)
    ids = torch.tensor([[3, 4]])
    states, _ = model.run_reservoir(ids)
    x1 = 0.25 * torch.tanh(model.input_weights[:, 3] + model.reservoir_bias)
    torch.testing.assert_close(states[0, 0], x1)
    pre = model.input_weights[:, 4] + model.reservoir_bias + model.reservoir @ x1
    torch.testing.assert_close(states[0, 1], 0.75 * x1 + 0.25 * torch.tanh(pre))


def test_echo_state_property_forgets_the_start() -> None:
    model = esn(hidden=60, spectral_radius=0.8)
    ids = torch.randint(0, 9, (1, 200))
    a, _ = model.run_reservoir(ids, (torch.randn(1, 60),))
    b, _ = model.run_reservoir(ids, (torch.randn(1, 60),))
    assert float((a[0, 0] - b[0, 0]).abs().max()) > 1e-2
    assert float((a[0, -1] - b[0, -1]).abs().max()) < 1e-4


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="density"):
        esn(density=0.0)
    with pytest.raises(ValueError, match="leak_rate"):
        esn(leak_rate=1.5)
    with pytest.raises(ValueError, match="does not take"):
        esn(radius=0.9)


def test_checkpoint_stores_the_reservoir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    vocab = CharVocab(list("abcdefg"))
    model = esn(hidden=30, seed=5)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    save_checkpoint(tmp_path / "esn.safetensors", model, vocab)
    # a different seed in the rebuilt model would draw another reservoir: the file must win
    loaded = load_checkpoint(tmp_path / "esn.safetensors").model
    assert torch.equal(loaded.reservoir, model.reservoir)
    assert float(loaded.logit_scale) == 7.0
    ids = torch.randint(0, 9, (2, 15))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], model(ids)[0])
