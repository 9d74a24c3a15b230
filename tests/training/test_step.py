"""The training step's schedule, stream restarts and state."""

from __future__ import annotations

import copy

import pytest
import torch

from models.vocab import BOS_ID
from training.config import TrainConfig
from training.step import learning_rate, restart_mask, restart_some_streams


def test_schedule_warms_up_then_decays_to_floor() -> None:
    config = TrainConfig(lr=1.0, warmup_steps=10, final_lr_fraction=0.1, max_steps=100)
    assert learning_rate(config, 0, 0.0) == pytest.approx(0.1)
    assert learning_rate(config, 50, 0.5) == pytest.approx(0.55)
    assert learning_rate(config, 100, 1.0) == pytest.approx(0.1)


def test_restarted_streams_begin_from_zero_state_and_bos() -> None:
    torch.manual_seed(3)
    inputs = torch.randint(2, 9, (64, 5))
    state = (torch.ones(64, 1, 4), torch.full((64, 1, 4), 2.0))
    new_inputs, new_state = restart_some_streams(inputs, state, restart_mask(0.25, 3, 0, 64))
    restarted = new_inputs[:, 0] == BOS_ID
    assert 0 < int(restarted.sum()) < 64  # some rows, not all
    assert torch.equal(new_inputs[:, 1:], inputs[:, 1:])  # only the first input changes
    assert torch.equal(new_inputs[~restarted], inputs[~restarted])
    for before, after in zip(state, new_state, strict=True):
        assert torch.all(after[restarted] == 0)
        assert torch.equal(after[~restarted], before[~restarted])
    assert int(inputs[:, 0].eq(BOS_ID).sum()) == 0  # the caller's tensor is untouched


def test_no_restart_at_zero_chance() -> None:
    inputs = torch.randint(2, 9, (16, 3))
    state = (torch.ones(16, 1, 2),)
    new_inputs, new_state = restart_some_streams(inputs, state, restart_mask(0.0, 3, 0, 16))
    assert new_inputs is inputs and new_state is state


def test_restart_draws_depend_on_seed_and_step_only() -> None:
    torch.manual_seed(0)
    first = restart_mask(0.1, 7, 40, 4096)
    torch.manual_seed(1)  # the global random state plays no part
    assert torch.equal(restart_mask(0.1, 7, 40, 4096), first)
    assert not torch.equal(restart_mask(0.1, 7, 41, 4096), first)
    assert not torch.equal(restart_mask(0.1, 8, 40, 4096), first)
    assert 0.07 < float(first.float().mean()) < 0.13
    # the first rows of a wider draw are the narrower draw: rank r's rows of one layout are
    # the same streams' draws in any other
    assert torch.equal(restart_mask(0.1, 7, 40, 8), first[:8])


def test_stepper_state_round_trips_and_continues_identically(tiny_corpus: str) -> None:
    import numpy as np

    from models.vocab import CharVocab
    from training.distributed import DistContext
    from training.step import Stepper

    from .conftest import tiny_config

    vocab = CharVocab.from_text(tiny_corpus)
    ids = np.asarray(vocab.encode(tiny_corpus), dtype=np.int64)
    config = tiny_config(dropout=0.3, num_layers=2, state_reset=0.5, max_steps=20)
    first = Stepper(config, len(vocab), ids, DistContext())
    for _ in range(7):
        first.take_step()
    first.take_interval()  # the 7 steps' figures: not part of what is compared
    # the tensors are the live ones (as with Module.state_dict): copy them to keep them
    saved = copy.deepcopy(first.state_dict())
    assert saved.info["step"] == 7 and saved.info["position"] == first.batcher.state_dict()
    expected = []
    for _ in range(5):  # dropout and restarts draw from the global random state
        first.take_step()
        figures = first.take_interval()
        assert figures is not None
        expected.append(figures["train_loss"])
    second = Stepper(config, len(vocab), ids, DistContext())
    second.load_state_dict(saved)
    assert second.step == 7 and second.batcher.state_dict() == saved.info["position"]
    got = []
    for _ in range(5):
        second.take_step()
        figures = second.take_interval()
        assert figures is not None
        got.append(figures["train_loss"])
    assert got == expected
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], tensor, atol=0, rtol=0)
    assert first.take_interval() is None  # nothing since the last call
