"""The recipe benchmark's curve plot and its summary of several seeds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.recipe_report import RunFigures, Targets, draw_curves, seed_summary


def test_the_curves_and_their_targets_are_written_as_png(tmp_path: Path) -> None:
    rows = [
        RunFigures(480.0, 470.0, "1x512 lstm", [(60.0, 1.6), (470.0, 1.41)], "stopped (time)"),
        RunFigures(30.0, 31.0, "-", [], "stopped (time)"),  # no validation: no line
    ]
    path = tmp_path / "curves.png"
    draw_curves(rows, "a title", Targets({480.0: 1.40}, {}), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def _run(budget: float, wall: float, nats: float, seed: int) -> RunFigures:
    return RunFigures(budget, wall, "1x512 lstm", [], "", static={"nats_per_char": nats}, seed=seed)


def test_the_seeds_summary_judges_the_mean_and_every_run_s_time() -> None:
    targets = Targets({480.0: 1.40}, {})
    rows = [_run(480.0, 470.0, 1.39, 1), _run(480.0, 475.0, 1.41, 2), _run(480.0, 471.0, 1.37, 3)]
    rows.append(_run(1800.0, 1790.0, 1.36, 1))  # one run of a budget: no summary for it
    (summary,) = seed_summary(rows, targets)
    assert summary["runs"] == 3 and summary["mean"] == pytest.approx(1.39)
    assert (summary["min"], summary["max"]) == (1.37, 1.41)
    assert summary["sd"] == pytest.approx(math.sqrt((0.0 + 0.0004 + 0.0004) / 2))
    assert summary["verdict"] == "**met**"
    rows[0] = _run(480.0, 481.0, 1.39, 1)  # one run went over its budget
    assert seed_summary(rows, targets)[0]["verdict"] == "missed"
    high = [_run(480.0, 470.0, 1.41, 1), _run(480.0, 470.0, 1.40, 2)]  # mean 1.405
    assert seed_summary(high, targets)[0]["verdict"] == "missed"
