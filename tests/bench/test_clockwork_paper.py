import json

import torch

from bench.clockwork_paper import (
    LSTM,
    STEPS,
    ClockworkRNN,
    build_models,
    format_table,
    main,
    make_waveform,
    train,
)
from models.clockwork import ClockworkCell


def test_waveform_has_several_time_scales() -> None:
    wave = make_waveform()
    assert wave.shape == (STEPS,)
    assert float(wave.abs().max()) == 1.0
    spectrum = torch.fft.rfft(wave - wave.mean()).abs()
    strong = (spectrum > 0.1 * spectrum.max()).nonzero().flatten().tolist()
    assert min(strong) <= 3 and max(strong) >= 25  # slow and fast components both present


def test_models_have_about_750_weights_and_independent_seeds() -> None:
    models = build_models([0, 1])
    counts = [m.parameters_per_network() for m in models]
    assert all(700 <= c <= 800 for c in counts), counts
    single = build_models([1])
    for pair, alone in zip(models, single, strict=True):
        for a, b in zip(pair.parameters(), alone.parameters(), strict=True):
            assert torch.equal(a[1], b[0])  # seed 1's weights do not depend on seed 0 beside it
            assert a.std() < 0.2  # drawn from N(0, 0.1)


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


def test_training_lowers_the_error() -> None:
    target = make_waveform(40)
    model = ClockworkRNN(3, [1, 2, 4], seeds=[0, 1])
    before = ((model(40) - target) ** 2).mean(1) / target.var(unbiased=False)
    nmse, prediction, curve = train(model, target, iterations=60, lr=0.3, momentum=0.9)
    assert prediction.shape == (2, 40)
    assert bool((nmse < before.detach()).all())
    assert len(curve) == 10


def test_command_writes_table_and_plot(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--seeds", "2", "--iterations", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "clockwork.json").read_text())
    assert [m["model"] for m in results["models"]] == ["Simple RNN", "LSTM", "Clockwork RNN"]
    assert all(len(m["nmse"]) == 2 for m in results["models"])
    png = (tmp_path / "clockwork.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "Clockwork RNN" in capsys.readouterr().out
    assert format_table(results).count("\n") == 4


def test_smoke_mode_prints_the_table(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--smoke"]) == 0
    printed = capsys.readouterr().out
    assert "| model | weights | NMSE mean ± std | best seed | per seed |" in printed
    for name in ("Simple RNN", "LSTM", "Clockwork RNN"):
        row = next(line for line in printed.splitlines() if line.startswith(f"| {name} |"))
        assert len(row.split("|")[-2].split(",")) == 2  # one NMSE per seed
