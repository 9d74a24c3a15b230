"""What a run shows at each validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib import pyplot as plt

from training.report import ProgressReporter, draw_plot, png_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_a_validation_line_gives_its_figure_and_its_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = {"step": 400, "val_bpc": 2.25, "val_nats": 1.56, "is_best": True}
    ProgressReporter().evaluation(record, None)
    assert capsys.readouterr().out == "step 400: val 2.2500 bits/char, 1.5600 nats/char (best)\n"
    timed = {**record, "is_best": False, "eval_seconds": 3.21, "eval_share": 0.0432}
    ProgressReporter().evaluation(timed, "to be")
    assert capsys.readouterr().out.splitlines() == [
        "step 400: val 2.2500 bits/char, 1.5600 nats/char; 3.2s, validations 4.3% of the time",
        "sample: to be",
    ]


def test_a_plot_is_written_as_png_and_its_figure_closed(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    open_before = plt.get_fignums()
    with png_plot(path) as ax:
        ax.plot([0, 1, 2], [3.0, 2.0, 1.5], label="a line")
        assert len(plt.get_fignums()) == len(open_before) + 1
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert plt.get_fignums() == open_before
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary left


def test_a_plot_whose_drawing_fails_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    path.write_bytes(b"the previous plot")
    open_before = plt.get_fignums()
    with pytest.raises(ZeroDivisionError), png_plot(path) as ax:
        ax.plot([0, 1], [1 / 0, 1])
    assert path.read_bytes() == b"the previous plot"
    assert plt.get_fignums() == open_before


def test_the_loss_plot_draws_every_curve_it_has(tmp_path: Path) -> None:
    records = [
        {"kind": "train", "step": 1, "train_loss": 2.0},
        {"kind": "train", "step": 2, "train_loss": 1.8},
        {"kind": "eval", "step": 2, "val_nats": 1.9, "ema_val_nats": 1.85},
    ]
    draw_plot(records, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == PNG_SIGNATURE
