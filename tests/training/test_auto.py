from __future__ import annotations

import math

import pytest
import torch

from models.config import ModelConfig
from models.registry import build_model
from training import auto
from training.auto import (
    SHAPES,
    Budget,
    choose,
    dropout_for,
    ema_for,
    num_weights,
    weight_decay_for,
)
from training.config import TrainConfig, config_from_preset
from training.distributed import DistContext
from training.speed import training_chars_per_second

VOCAB = 65


def _speed(arch: str = "lstm", rate: float = 2.5e10):
    """A device that trains ``rate`` weight-characters a second: speed falls with the size."""
    calls: list[tuple[int, int]] = []

    def speed(layers: int, width: int) -> float:
        calls.append((layers, width))
        return rate / num_weights(arch, layers, width, VOCAB)

    return speed, calls


def _width(train_chars: int, seconds: float, **kwargs: object) -> int:
    speed, _ = _speed()
    choice = choose("lstm", train_chars, VOCAB, Budget(seconds, None), speed, **kwargs)  # type: ignore[arg-type]
    return int(choice.values["hidden_size"] * choice.values["num_layers"])


def test_smaller_corpus_gets_a_smaller_or_equal_model() -> None:
    sizes = [_width(chars, 1800) for chars in (20_000, 300_000, 1_000_000, 30_000_000)]
    assert sizes == sorted(sizes)
    assert sizes[0] < sizes[-1]


def test_shorter_budget_gets_a_smaller_or_equal_model() -> None:
    sizes = [_width(3_000_000, seconds) for seconds in (10, 60, 300, 1800, 36_000)]
    assert sizes == sorted(sizes)
    assert sizes[0] < sizes[-1]


def test_a_faster_device_gets_a_wider_model() -> None:
    slow, _ = _speed(rate=2.5e9)
    fast, _ = _speed(rate=2.5e11)
    budget = Budget(600, None)
    narrow = choose("lstm", 10_000_000, VOCAB, budget, slow).values["hidden_size"]
    wide = choose("lstm", 10_000_000, VOCAB, budget, fast).values["hidden_size"]
    assert narrow < wide


def test_the_rules_hold_for_the_shape_chosen() -> None:
    speed, _ = _speed()
    budget = Budget(480, None)
    choice = choose("lstm", 1_000_000, VOCAB, budget, speed)
    layers, width = choice.values["num_layers"], choice.values["hidden_size"]
    weights = num_weights("lstm", layers, width, VOCAB)
    chars = budget.chars(speed(layers, width), 16 * 64)
    assert chars >= auto.CHARS_PER_WEIGHT * weights
    assert weights <= auto.WEIGHTS_PER_CHAR * 1_000_000
    following = SHAPES[SHAPES.index((layers, width)) + 1]
    bigger = num_weights("lstm", *following, VOCAB)
    refused_by_compute = budget.chars(speed(*following), 16 * 64) < auto.CHARS_PER_WEIGHT * bigger
    refused_by_data = bigger > auto.WEIGHTS_PER_CHAR * 1_000_000
    assert refused_by_compute or refused_by_data


def test_speed_is_not_measured_past_the_first_shape_refused() -> None:
    speed, calls = _speed()
    choice = choose("lstm", 1_000_000, VOCAB, Budget(60, None), speed)
    chosen = (choice.values["num_layers"], choice.values["hidden_size"])
    assert max(SHAPES.index(call) for call in calls) == SHAPES.index(chosen) + 1


def test_step_budget_needs_no_speed() -> None:
    def no_speed(layers: int, width: int) -> float:
        return math.nan

    small = choose("lstm", 1_000_000, VOCAB, Budget(None, 200), no_speed)
    large = choose("lstm", 1_000_000, VOCAB, Budget(None, 20_000), no_speed)
    assert small.values["hidden_size"] <= large.values["hidden_size"]
    assert small.values["hidden_size"] == SHAPES[0][1]


def test_dropout_grows_with_the_passes_and_is_capped() -> None:
    values = [dropout_for(p) for p in (0.5, 1, 3, 10, 100, 1e6)]
    assert values[0] == values[1] == 0.0
    assert values == sorted(values)
    assert values[3] == pytest.approx(0.1)
    assert values[-1] == 0.3


def test_too_many_passes_are_cut_with_a_step_budget() -> None:
    speed, _ = _speed()
    choice = choose("lstm", 50_000, VOCAB, Budget(3600, None), speed)
    steps = choice.values["max_steps"]
    assert steps * 16 * 64 == pytest.approx(auto.MAX_PASSES * 50_000, rel=0.01)
    assert "cut to" in choice.reason
    assert "max_steps" not in choose("lstm", 5_000_000, VOCAB, Budget(60, None), speed).values


def test_ema_spans_at_most_a_tenth_of_a_short_run() -> None:
    assert ema_for(1_000_000) == auto.EMA_DECAY
    assert ema_for(1000) == pytest.approx(0.99)
    assert 0.9 <= ema_for(1) < 1


def test_world_size_counts_every_process() -> None:
    speed, _ = _speed()
    one = choose("lstm", 2_000_000, VOCAB, Budget(None, 3000), speed)
    four = choose("lstm", 2_000_000, VOCAB, Budget(None, 3000), speed, world_size=4)
    assert one.values["hidden_size"] <= four.values["hidden_size"]


def test_resolve_keeps_explicit_settings() -> None:
    config = config_from_preset("auto", max_time=30.0, max_steps=None, dropout=0.25, lr=1e-3)
    context = DistContext(device=torch.device("cpu"))
    resolved, line = auto.resolve(config, {"dropout", "lr"}, 2_000, VOCAB, context)
    assert resolved.dropout == 0.25 and resolved.lr == 1e-3
    assert resolved.hidden_size == SHAPES[0][1]  # 2,000 characters: the data rule
    assert resolved.max_time == 30.0
    assert resolved.patience == auto.PATIENCE
    assert resolved.final_lr_fraction == auto.FINAL_LR_FRACTION != TrainConfig().final_lr_fraction
    assert line.startswith("auto: 1x128 lstm")


def test_a_pinned_width_is_what_the_rest_is_chosen_for() -> None:
    """The rate, the passes and the line follow the width the user gave, not auto's own."""
    speed, calls = _speed()
    budget = Budget(1800, None)
    own = choose("lstm", 1_000_000, VOCAB, budget, speed)
    wide = 2 * own.values["hidden_size"]
    calls.clear()
    pinned = choose("lstm", 1_000_000, VOCAB, budget, speed, width=wide)
    assert pinned.values["hidden_size"] == wide
    assert calls and {width for _, width in calls} == {wide}
    assert pinned.values["lr"] == auto.lr_for(wide) < own.values["lr"]
    # a wider model trains fewer characters in the same time: fewer passes, less dropout
    assert pinned.values["dropout"] < own.values["dropout"]
    assert pinned.reason.startswith(f"auto: 1x{wide} lstm")


def test_a_pinned_depth_keeps_the_choice_of_width() -> None:
    speed, calls = _speed()
    small = choose("lstm", 20_000, VOCAB, Budget(600, None), speed, layers=3)
    assert (small.values["num_layers"], small.values["hidden_size"]) == (3, SHAPES[0][1])
    assert {layers for layers, _ in calls} == {3}
    large = choose("lstm", 30_000_000, VOCAB, Budget(600, None), speed, layers=3)
    assert large.values["num_layers"] == 3
    assert large.values["hidden_size"] > small.values["hidden_size"]


def test_resolve_sizes_the_rest_for_an_explicit_width() -> None:
    config = config_from_preset("auto", max_time=30.0, max_steps=None, hidden_size=96)
    context = DistContext(device=torch.device("cpu"))
    resolved, line = auto.resolve(config, {"hidden_size"}, 2_000, VOCAB, context)
    assert resolved.hidden_size == 96
    assert resolved.num_layers == 1
    assert line.startswith("auto: 1x96 lstm")


def test_an_explicit_schedule_floor_is_kept() -> None:
    config = config_from_preset("auto", max_steps=100, final_lr_fraction=0.0)
    context = DistContext(device=torch.device("cpu"))
    resolved, _ = auto.resolve(config, {"final_lr_fraction"}, 2_000, VOCAB, context)
    assert resolved.final_lr_fraction == 0.0


def test_named_presets_and_unsized_architectures_are_left_alone() -> None:
    context = DistContext(device=torch.device("cpu"))
    small = config_from_preset("small")
    assert auto.resolve(small, set(), 10_000, VOCAB, context) == (small, "")
    clockwork = config_from_preset("auto", arch="clockwork")
    resolved, line = auto.resolve(clockwork, set(), 10_000, VOCAB, context)
    assert resolved == clockwork and "not sized" in line


def test_auto_is_the_default_preset() -> None:
    assert TrainConfig().preset == "auto"


def test_speed_probe_measures_a_real_step() -> None:
    config = ModelConfig(arch="lstm", vocab_size=VOCAB, embed_size=8, hidden_size=16, num_layers=1)
    cps = training_chars_per_second(config, seq_len=4, batch_size=2, device=torch.device("cpu"))
    assert cps > 0 and math.isfinite(cps)


def test_weight_decay_grows_with_the_passes() -> None:
    values = [weight_decay_for(p) for p in (1, 2, 10, 1000)]
    assert values[0] == 0.0 < values[1] < values[2] == auto.WEIGHT_DECAY < values[3]
    assert values[3] == pytest.approx(1.5 * auto.WEIGHT_DECAY)


def test_a_run_without_a_budget_is_cut_to_the_passes_allowed() -> None:
    speed, _ = _speed()
    choice = choose("lstm", 100_000, VOCAB, Budget(None, None), speed)
    assert choice.values["max_steps"] == int(auto.MAX_PASSES * 100_000 / (16 * 64))
    assert choice.values["dropout"] == dropout_for(auto.MAX_PASSES)
    assert "unbounded" in choice.reason


@pytest.mark.parametrize(
    ("explicit", "want"),
    [({}, None), ({"hidden_size": 192}, 192), ({"embed_size": 96}, 96)],
)
def test_tied_embeddings_take_the_hidden_width(explicit: dict[str, int], want: int | None) -> None:
    """With ``--tie-weights`` the embedding and the hidden state have one width: auto's choice,
    or the one the user gave for either."""
    config = config_from_preset("auto", max_time=30.0, max_steps=None, tie_weights=True, **explicit)
    context = DistContext(device=torch.device("cpu"))
    resolved, line = auto.resolve(config, set(explicit), 2_000, VOCAB, context)
    assert resolved.embed_size == resolved.hidden_size == (want or SHAPES[0][1])
    assert "tied embeddings" in line
    build_model(resolved.model_config(VOCAB))  # the widths agree, so it builds
