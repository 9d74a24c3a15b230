"""What a run shows at each validation."""

from __future__ import annotations

import pytest

from training.report import ProgressReporter


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
