import copy
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.adapt import AdaptSettings, adaptive_score_texts
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import REGULARISERS, ModelConfig
from models.registry import available_architectures, build_model, model_class
from models.regularisers import LockedDropout, RowDropout, recurrent_weight_names
from models.scoring import score_texts
from models.vocab import CharVocab

FUSED = ["rnn", "gru", "lstm"]
VOCAB = 9
ALL_ON = {"embed_dropout": 0.3, "weight_drop": 0.4, "locked_dropout": True, "dropout": 0.25}


def tiny(arch: str = "lstm", seed: int = 0, **settings: object) -> nn.Module:
    torch.manual_seed(seed)
    config = ModelConfig(
        arch=arch, vocab_size=VOCAB, embed_size=8, hidden_size=12, num_layers=2, **settings
    )
    return build_model(config)


def same_weights(model: nn.Module, **settings: object) -> nn.Module:
    """A model of ``model``'s weights with ``settings`` in its configuration."""
    other = build_model(model.config.replace(**settings))
    other.load_state_dict(model.state_dict())
    return other


@pytest.mark.parametrize("arch", FUSED)
@pytest.mark.parametrize(
    "settings",
    [{"embed_dropout": 0.5}, {"weight_drop": 0.5}, {"locked_dropout": True, "dropout": 0.5},
     ALL_ON],
)  # fmt: skip
def test_evaluation_is_bit_identical_with_and_without(arch: str, settings: dict) -> None:
    plain = tiny(arch).eval()
    regularised = same_weights(plain, **settings).eval()
    ids = torch.randint(0, VOCAB, (3, 11))
    with torch.no_grad():
        expected, expected_state = plain(ids)
        got, state = regularised(ids)
        stepped, _ = regularised.step(ids[:, :1])  # the fused inference step
        expected_step, _ = plain.step(ids[:, :1])
    assert torch.equal(got, expected)
    for a, b in zip(state, expected_state, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(stepped, expected_step)
    # with gradients on (the reference path), still the same figures
    assert torch.equal(regularised(ids)[0], plain(ids)[0])


def test_training_mode_draws_masks_and_zero_rates_change_nothing() -> None:
    plain = tiny().train()
    off = same_weights(plain, embed_dropout=0.0, weight_drop=0.0, locked_dropout=True).train()
    on = same_weights(plain, **ALL_ON).train()
    ids = torch.randint(0, VOCAB, (3, 11))
    torch.manual_seed(5)
    expected = plain(ids)[0]
    torch.manual_seed(5)
    assert torch.equal(off(ids)[0], expected)  # locked with dropout 0 draws nothing
    torch.manual_seed(5)
    assert not torch.allclose(on(ids)[0], expected)


class UsedWeights:
    """Records the hidden-to-hidden matrices an ``nn.RNNBase`` forward really used."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        self.names = recurrent_weight_names(rnn)
        self.seen: list[dict[str, torch.Tensor]] = []
        rnn.register_forward_hook(self._record)

    def _record(self, rnn: nn.Module, args: object, output: object) -> None:
        assert isinstance(rnn, nn.RNNBase)
        index = {n: rnn._flat_weights_names.index(n) for n in self.names}
        used = {n: rnn._flat_weights[i].detach().clone() for n, i in index.items()}
        self.seen.append(used)


@pytest.mark.parametrize("arch", FUSED)
def test_weight_drop_runs_the_layer_on_masked_recurrent_matrices(arch: str) -> None:
    p = 0.3
    model = tiny(arch, weight_drop=p).train()
    used = UsedWeights(model.rnn)
    ids = torch.randint(0, VOCAB, (4, 7))
    torch.manual_seed(11)
    logits, _ = model(ids)
    (seen,) = used.seen
    assert set(seen) == {"weight_hh_l0", "weight_hh_l1"}
    zeros = 0
    for name, matrix in seen.items():
        raw = model.rnn.get_parameter(name).detach()
        kept = matrix != 0
        # each entry is either dropped or the raw weight scaled by 1 / (1 - p)
        torch.testing.assert_close(matrix[kept], raw[kept] / (1 - p))
        zeros += int((~kept).sum())
    total = sum(m.numel() for m in seen.values())
    assert 0.2 < zeros / total < 0.4  # about p of the recurrent weights (2 x 4H x H draws)
    # the input-to-hidden matrices and the biases are the parameters themselves
    assert model.rnn._flat_weights_names[0] == "weight_ih_l0"

    # the logits are those of a plain layer holding the dropped matrices
    reference = copy.deepcopy(model)
    reference.weight_drop.p = 0.0
    with torch.no_grad():
        for name, matrix in seen.items():
            reference.rnn.get_parameter(name).copy_(matrix)
    torch.testing.assert_close(logits, reference(ids)[0], rtol=0, atol=0)

    # the gradient reaches the raw weights, through the mask: none where a weight was dropped
    logits.logsumexp(-1).sum().backward()
    for name, matrix in seen.items():
        grad = model.rnn.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0
        assert torch.all(grad[matrix == 0] == 0)


def test_weight_drop_draws_one_mask_per_call_and_leaves_the_layer_as_it_was() -> None:
    model = tiny("lstm", weight_drop=0.5).train()
    used = UsedWeights(model.rnn)
    ids = torch.randint(0, VOCAB, (2, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no flatten_parameters or other warning on this path
        model(ids)
        model(ids)
    first, second = used.seen
    assert not torch.equal(first["weight_hh_l0"], second["weight_hh_l0"])
    # afterwards the layer computes with its own parameters again
    model.eval()
    with torch.no_grad():
        after = model(ids)[0]
        expected = same_weights(model, weight_drop=0.0).eval()(ids)[0]
    assert torch.equal(used.seen[-1]["weight_hh_l0"], model.rnn.weight_hh_l0)
    assert torch.equal(after, expected)


def test_embedding_dropout_zeroes_whole_characters_across_the_chunk() -> None:
    p = 0.5
    model = tiny("gru", embed_dropout=p).train()
    inputs: list[torch.Tensor] = []
    model.rnn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
    ids = torch.arange(VOCAB).repeat(3, 4)  # (3, 36): every character in every row, often
    torch.manual_seed(2)
    model(ids)
    (x,) = inputs  # (B, T, E)
    weight = model.embedding.weight.detach()
    dropped = set()
    for char in range(VOCAB):
        vectors = x[ids == char]  # (n, E): every occurrence in the chunk
        if torch.all(vectors == 0):
            dropped.add(char)
        else:  # kept everywhere, scaled by 1 / (1 - p)
            torch.testing.assert_close(vectors, (weight[char] / (1 - p)).expand_as(vectors))
    assert 0 < len(dropped) < VOCAB
    # a later chunk draws a new mask
    draws = set()
    for _ in range(10):
        model(ids)
        draws.add(tuple(bool(torch.all(inputs[-1][ids == c] == 0)) for c in range(VOCAB)))
    assert len(draws) > 1


def test_row_dropout_scales_survivors_and_is_off_in_eval() -> None:
    drop = RowDropout(0.25)
    weight = torch.randn(400, 3)
    torch.manual_seed(0)
    out = drop(weight)
    rows = out.abs().sum(1) != 0
    torch.testing.assert_close(out[rows], weight[rows] / 0.75)
    assert 0.15 < 1 - rows.float().mean() < 0.35
    assert drop.eval()(weight) is weight


@pytest.mark.parametrize("arch", FUSED)
def test_locked_dropout_keeps_one_mask_across_time(arch: str) -> None:
    p = 0.5
    model = tiny(arch, dropout=p, locked_dropout=True).train()
    seen: dict[str, torch.Tensor] = {}
    model.rnn.register_forward_pre_hook(lambda _m, args: seen.update(x=args[0].detach()))
    model.head.register_forward_pre_hook(lambda _m, args: seen.update(out=args[0].detach()))
    ids = torch.randint(0, VOCAB, (4, 13))
    torch.manual_seed(3)
    model(ids)
    embedded = model.embedding(ids).detach()  # never exactly zero for a random init
    for name, values in seen.items():
        zero = values == 0  # (B, T, F)
        # a feature dropped at one step of a row is dropped at every step of it
        assert torch.equal(zero, zero[:, :1].expand_as(zero)), name
        assert 0.3 < zero[:, 0].float().mean() < 0.7, name
        # rows differ
        assert not torch.equal(zero[0, 0], zero[1, 0]), name
    kept = seen["x"] != 0
    torch.testing.assert_close(seen["x"][kept], embedded[kept] / (1 - p))


def test_plain_dropout_draws_a_fresh_mask_per_step() -> None:
    model = tiny("lstm", dropout=0.5).train()
    seen: list[torch.Tensor] = []
    model.rnn.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    model(torch.randint(0, VOCAB, (4, 13)))
    zero = seen[0] == 0
    assert not torch.equal(zero, zero[:, :1].expand_as(zero))


def test_locked_dropout_module_shapes() -> None:
    drop = LockedDropout(0.5)
    x = torch.ones(2, 50, 64)
    out = drop(x)
    assert torch.equal(out == 0, (out[:, :1] == 0).expand_as(out))
    assert drop.eval()(x) is x


def test_a_checkpoint_keeps_the_settings_and_scores_as_without(tmp_path: Path) -> None:
    vocab = CharVocab.from_text("abcdefg h\n")
    torch.manual_seed(0)
    config = ModelConfig(arch="lstm", vocab_size=len(vocab), embed_size=6, hidden_size=10)
    plain = build_model(config)
    model = same_weights(plain, **ALL_ON)
    save_checkpoint(tmp_path / "m.safetensors", model, vocab)
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    assert loaded.config.weight_drop == 0.4 and loaded.config.locked_dropout
    assert isinstance(loaded.model.drop, LockedDropout)
    text = "a bad cafe\nhead\n"
    (got,) = score_texts(loaded.model, vocab, [text])
    (expected,) = score_texts(plain.eval(), vocab, [text])
    assert torch.equal(got.logprobs, expected.logprobs)


def test_adaptive_scoring_adapts_without_the_regularisers() -> None:
    vocab = CharVocab.from_text("abcdefg h\n")
    torch.manual_seed(0)
    config = ModelConfig(arch="gru", vocab_size=len(vocab), embed_size=6, hidden_size=10)
    plain = build_model(config).eval()
    model = same_weights(plain, **ALL_ON).eval()
    text = "abc abc abc abc abc abc abc abc abc abc abc\n" * 3
    settings = AdaptSettings(segment=16)
    (got,) = adaptive_score_texts(model, vocab, [text], settings=settings)
    (expected,) = adaptive_score_texts(plain, vocab, [text], settings=settings)
    torch.testing.assert_close(got.logprobs, expected.logprobs, rtol=0, atol=0)


def test_a_config_written_before_the_settings_loads_with_them_off() -> None:
    old = {"arch": "lstm", "vocab_size": 5, "embed_size": 4, "hidden_size": 6, "num_layers": 1,
           "dropout": 0.1, "tie_weights": False, "options": {}}  # fmt: skip
    config = ModelConfig.from_dict(old)
    assert (config.embed_dropout, config.weight_drop, config.locked_dropout) == (0.0, 0.0, False)
    assert config.regularisers() == []
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert set(REGULARISERS) <= set(config.to_dict())


@pytest.mark.parametrize("name", ["embed_dropout", "weight_drop"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_rates_outside_zero_to_one_are_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{name} must be in \\[0, 1\\)"):
        ModelConfig(arch="lstm", vocab_size=5, **{name: value})


def test_locked_dropout_must_be_a_boolean() -> None:
    with pytest.raises(ValueError, match="locked_dropout"):
        ModelConfig(arch="lstm", vocab_size=5, locked_dropout="yes")  # type: ignore[arg-type]


UNSUPPORTED = [a for a in available_architectures() if not model_class(a).regularisers]


def test_the_unsupported_architectures_are_the_others() -> None:
    assert {"clockwork", "esn", "bilstm", "bigru"} <= set(UNSUPPORTED)
    assert not set(FUSED) & set(UNSUPPORTED)


@pytest.mark.parametrize("arch", UNSUPPORTED)
@pytest.mark.parametrize("name,value", [("embed_dropout", 0.1), ("weight_drop", 0.2),
                                        ("locked_dropout", True)])  # fmt: skip
def test_other_architectures_refuse_the_settings(arch: str, name: str, value: object) -> None:
    config = ModelConfig(arch=arch, vocab_size=VOCAB, embed_size=8, hidden_size=12, num_layers=1)
    build_model(config)  # builds without them
    with pytest.raises(ValueError) as info:
        build_model(config.replace(**{name: value}))
    message = str(info.value)
    assert repr(arch) in message and name in message
    assert "gru, lstm, rnn" in message  # where it does apply


def test_gradients_reach_every_weight_with_everything_on() -> None:
    model = tiny("lstm", **ALL_ON).train()
    logits, _ = model(torch.randint(0, VOCAB, (3, 9)))
    F.cross_entropy(logits.flatten(0, 1), torch.randint(0, VOCAB, (27,))).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
