"""The shared dict round trip of the frozen configurations."""

from __future__ import annotations

import dataclasses

import pytest

from models.config import ModelConfig
from training.config import TrainConfig


def test_model_config_round_trips_and_names_unknown_keys() -> None:
    config = ModelConfig(arch="gru", vocab_size=10, hidden_size=12, options={"a": [1, 2]})
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown model config keys: colour, size"):
        ModelConfig.from_dict({**config.to_dict(), "size": 3, "colour": "red"})


def test_replace_returns_a_checked_copy() -> None:
    config = ModelConfig(arch="gru", vocab_size=10)
    wider = config.replace(hidden_size=32)
    assert wider.hidden_size == 32 and config.hidden_size == 256
    assert isinstance(wider, ModelConfig)
    with pytest.raises(ValueError, match="dropout must be in"):
        config.replace(dropout=1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 3  # type: ignore[misc]


def test_train_config_uses_the_same_helpers_with_its_own_name() -> None:
    config = TrainConfig(arch="rnn", max_steps=7)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert isinstance(config.replace(lr=0.5), TrainConfig)
    with pytest.raises(ValueError, match="unknown training config keys: speed"):
        TrainConfig.from_dict({"speed": 1})
