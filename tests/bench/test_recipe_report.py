"""The recipe benchmark's curve plot."""

from __future__ import annotations

from pathlib import Path

from bench.recipe_report import RunFigures, Targets, draw_curves


def test_the_curves_and_their_targets_are_written_as_png(tmp_path: Path) -> None:
    rows = [
        RunFigures(480.0, 470.0, "1x512 lstm", [(60.0, 1.6), (470.0, 1.41)], "stopped (time)"),
        RunFigures(30.0, 31.0, "-", [], "stopped (time)"),  # no validation: no line
    ]
    path = tmp_path / "curves.png"
    draw_curves(rows, "a title", Targets({480.0: 1.40}, {}), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
