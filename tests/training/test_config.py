"""The training configuration: closed sets of values checked from the fields' own choices."""

from __future__ import annotations

import dataclasses

import pytest

from models.registry import available_architectures
from training.algorithms import ALGORITHMS
from training.config import TrainConfig, config_from_preset, field_choices
from training.distributed import DEVICES
from training.presets import PRESET_NAMES, PRESETS


def test_every_field_is_described_for_the_command_line() -> None:
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"], f.name
        assert f.metadata["group"] in ("data", "model", "optimisation", "run"), f.name


def test_choices_come_from_where_the_values_are_defined() -> None:
    choices = {f.name: field_choices(f) for f in dataclasses.fields(TrainConfig)}
    assert choices["device"] == DEVICES
    assert choices["algorithm"] == tuple(ALGORITHMS)
    assert choices["arch"] == tuple(available_architectures())
    assert choices["preset"] == PRESET_NAMES == ("auto", *PRESETS)
    assert choices["hidden_size"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("device", "tpu"), ("algorithm", "adam"), ("arch", "transformer"), ("optimizer", "lamb")],
)
def test_a_value_outside_the_choices_is_named(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be one of"):
        TrainConfig(**{field: value})


def test_presets_override_the_defaults() -> None:
    config = config_from_preset("tiny", lr=0.5)
    assert config.hidden_size == PRESETS["tiny"]["hidden_size"] and config.lr == 0.5
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        config_from_preset("huge")


def test_esn_refuses_weight_averaging_only_when_it_is_asked_for() -> None:
    # the readout is fitted in closed form: there are no training steps to average
    with pytest.raises(ValueError, match=r"'esn' does not support ema \(got 0.99\)"):
        TrainConfig(arch="esn", ema=0.99)
    assert TrainConfig(arch="esn", ema=0.0).ema == 0.0
    for preset in PRESET_NAMES:
        assert config_from_preset(preset, arch="esn").ema == 0.0
    assert TrainConfig(arch="lstm", ema=0.99).ema == 0.99
