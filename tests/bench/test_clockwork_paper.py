import itertools
import json
import math

import pytest
import torch

from bench.clockwork_networks import (
    LSTM,
    STEPS,
    ClockworkRNN,
    SimpleRNN,
    build_models,
    make_waveform,
)
from bench.clockwork_paper import TABLE_HEADER, format_search, format_table, main
from bench.clockwork_search import ReplicaOptimizer, Setting, choose, grid, search, train
from models.clockwork import ClockworkCell


def test_waveform_has_several_time_scales() -> None:
    wave = make_waveform()
    assert wave.shape == (STEPS,)
    assert float(wave.abs().max()) == 1.0
    spectrum = torch.fft.rfft(wave - wave.mean()).abs()
    strong = (spectrum > 0.1 * spectrum.max()).nonzero().flatten().tolist()
    assert min(strong) <= 3 and max(strong) >= 25  # slow and fast components both present


@pytest.mark.parametrize("init", ["normal", "pytorch"])
def test_models_have_about_750_weights_and_independent_seeds(init: str) -> None:
    models = build_models([0, 1], init)
    counts = [m.parameters_per_network() for m in models]
    assert all(700 <= c <= 800 for c in counts), counts
    single = build_models([1], init)
    for pair, alone in zip(models, single, strict=True):
        for a, b in zip(pair.parameters(), alone.parameters(), strict=True):
            assert torch.equal(a[1], b[0])  # seed 1's weights do not depend on seed 0 beside it
            assert not torch.equal(a[0], a[1])


def test_each_weight_tensor_has_its_own_draw() -> None:
    net = ClockworkRNN(2, [1, 2, 4], seeds=[0])
    first = [block[0, 0, :4] for block in net.blocks]
    assert not torch.equal(first[1], first[2])  # blocks of the same width apart are not copies


def test_the_two_inits_have_their_scales() -> None:
    normal = LSTM(13, seeds=range(20), init="normal").requires_grad_(False)
    pytorch = LSTM(13, seeds=range(20), init="pytorch").requires_grad_(False)
    assert abs(float(normal.weight.std()) - 0.1) < 0.01
    bound = 1 / math.sqrt(13)
    assert float(pytorch.weight.abs().max()) <= bound
    assert abs(float(pytorch.weight.std()) - bound / math.sqrt(3)) < 0.01  # uniform's std
    assert float(pytorch.bias.abs().max()) > bound  # b_ih + b_hh: two draws added
    with pytest.raises(ValueError, match="init must be one of"):
        SimpleRNN(4, seeds=[0], init="xavier")


def test_replicated_clockwork_matches_the_model_cell() -> None:
    net = ClockworkRNN(2, [1, 2, 4], seeds=[3])
    cell = ClockworkCell(0, [2, 2, 2], [1, 2, 4])
    with torch.no_grad():
        for mine, theirs in zip(net.blocks, cell.recurrent_blocks, strict=True):
            theirs.copy_(mine[0])
        cell.bias.copy_(net.bias[0])
        states, _, _ = cell(None, torch.zeros(1, 6), torch.zeros(1, dtype=torch.long), length=20)
        expected = states[0] @ net.out_weight[0] + net.out_bias[0]
        torch.testing.assert_close(net(20)[0], expected)


def test_fused_lstm_matches_the_step_by_step_equations() -> None:
    net = LSTM(4, seeds=[0, 1])
    with torch.no_grad():
        torch.testing.assert_close(net(30), net.reference_forward(30))


def test_replica_optimizer_makes_torchs_updates_per_replica() -> None:
    settings = [Setting("sgd", 0.05), Setting("adam", 0.01), Setting("adam", 0.002)]
    weight = torch.nn.Parameter(torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0)))
    optimizer = ReplicaOptimizer([weight], settings, momentum=0.9)
    alone = [torch.nn.Parameter(weight[r].detach().clone()) for r in range(3)]
    references = [
        torch.optim.SGD([alone[0]], lr=0.05, momentum=0.9, nesterov=True),
        torch.optim.Adam([alone[1]], lr=0.01),
        torch.optim.Adam([alone[2]], lr=0.002),
    ]
    for step in range(5):  # a different gradient at each step
        optimizer.zero_grad()
        ((weight - step) ** 3).sum().backward()
        optimizer.step()
        for p, reference in zip(alone, references, strict=True):
            reference.zero_grad()
            ((p - step) ** 3).sum().backward()
            reference.step()
    for r in range(3):
        torch.testing.assert_close(weight[r], alone[r])


def test_settings_name_an_optimizer_and_a_positive_rate() -> None:
    assert [s.label for s in grid(["sgd", "adam"], [0.1])] == ["SGD+Nesterov 0.1", "Adam 0.1"]
    default = grid(["sgd", "adam"])
    assert {s.optimizer for s in default} == {"sgd", "adam"}  # Adam is searched by default
    for optimizer in ("sgd", "adam"):
        rates = sorted(s.lr for s in default if s.optimizer == optimizer)
        ratios = [b / a for a, b in itertools.pairwise(rates)]
        assert len(rates) >= 5 and all(2.9 < r < 3.4 for r in ratios)  # half decades
    with pytest.raises(ValueError, match="optimizer must be one of"):
        Setting("rmsprop", 0.1)
    with pytest.raises(ValueError, match="learning rate must be positive"):
        Setting("adam", 0.0)


def test_training_lowers_the_error_with_either_optimizer() -> None:
    target = make_waveform(40)
    model = ClockworkRNN(3, [1, 2, 4], seeds=[0, 1])
    before = ((model(40) - target) ** 2).mean(1) / target.var(unbiased=False)
    trained = train(model, target, 60, [Setting("sgd", 0.3), Setting("adam", 0.03)])
    assert trained.prediction.shape == (2, 40)
    assert bool((trained.nmse < before.detach()).all())
    assert trained.curve.shape == (10, 2)


def test_choose_takes_the_lowest_mean_over_seeds_and_never_a_diverged_setting() -> None:
    nmse = torch.tensor([[0.5, 0.5], [0.1, 0.8], [0.01, math.nan], [0.2, 0.3], [1e-4, math.inf]])
    assert choose(nmse) == 3  # means 0.5, 0.45, diverged, 0.25, diverged


def test_search_picks_the_setting_with_the_lowest_search_seed_error() -> None:
    target = make_waveform(24)
    settings = grid(["sgd", "adam"], [1e-4, 0.03])
    found = search("srn", "normal", target, 30, settings, seeds=[100, 101])
    assert found.nmse.shape == (4, 2)
    means = found.nmse.mean(dim=1)
    assert found.chosen == int(means.argmin())
    assert float(means[found.chosen]) < float(means[0])  # it learnt more than the tiny SGD rate
    # each (setting, seed) replica is the run that setting alone on that seed would give
    alone = train(SimpleRNN(26, seeds=[101]), target, 30, [settings[found.chosen]])
    torch.testing.assert_close(found.nmse[found.chosen, 1:], alone.nmse, rtol=1e-4, atol=1e-6)
    assert found.to_json()["chosen"] == {
        "optimizer": found.best.optimizer,
        "lr": found.best.lr,
    }


def test_command_reports_mean_and_spread_of_the_chosen_setting(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["--models", "srn", "clockwork", "--pytorch-init", "srn"]
    argv += ["--optimizers", "sgd", "adam", "--lrs", "0.01", "0.03", "--search-seeds", "7"]
    argv += ["--seeds", "2", "--iterations", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    results = json.loads((tmp_path / "clockwork.json").read_text())
    rows = results["models"]
    assert [(m["model"], m["init"]) for m in rows] == [
        ("Simple RNN", "normal"),
        ("Simple RNN", "pytorch"),
        ("Clockwork RNN", "normal"),
    ]
    assert results["seeds"] == [0, 1] and results["search_seeds"] == [7]
    for row in rows:
        assert len(row["nmse"]) == 2 and len(row["search"]["settings"]) == 4
        assert row["nmse_min"] <= row["nmse_mean"] <= row["nmse_max"]
        assert row["nmse_std"] >= 0
        chosen = min(row["search"]["settings"], key=lambda s: s["nmse_mean"])
        assert (row["optimizer"], row["lr"]) == (chosen["optimizer"], chosen["lr"])
    assert (tmp_path / "clockwork.png").read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out
    assert TABLE_HEADER in printed and "Adam 0.03" in format_search(results)
    assert format_table(results).count("\n") == 4
    assert "± " in format_table(results).splitlines()[2]


def test_search_seeds_must_differ_from_the_reported_ones(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["--models", "srn", "--pytorch-init", "--search-seeds", "1", "--seeds", "2"]
    assert main([*argv, "--iterations", "1", "--out", str(tmp_path)]) == 2
    assert "overlap: [1]" in capsys.readouterr().out


def test_smoke_mode_prints_the_table(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--smoke"]) == 0
    printed = capsys.readouterr().out
    assert TABLE_HEADER in printed
    for name in ("Simple RNN (N(0, 0.1))", "LSTM (PyTorch default)", "Clockwork RNN (N(0, 0.1))"):
        row = next(line for line in printed.splitlines() if line.startswith(f"| {name} |"))
        assert len(row.split("|")[-2].split(",")) == 2  # one NMSE per seed
