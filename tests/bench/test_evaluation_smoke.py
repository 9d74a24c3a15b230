"""``bench.evaluation --smoke`` trains each preset (shrunk) for seconds, runs charlm-train as a
process, and prints every figure the docs quote, as finite numbers."""

from __future__ import annotations

import math
import re

import pytest

from bench import evaluation
from training.presets import PRESETS

NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def figures(line: str) -> list[float]:
    values = [float(n.replace(",", "")) for n in NUMBER.findall(line)]
    assert values and all(math.isfinite(v) for v in values), line
    return values


@pytest.mark.slow  # three short runs and a charlm-train process: about 15 s
def test_smoke_run_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluation.main(["--smoke", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for preset in PRESETS:
        speeds, wall, warmups = (line for line in lines if line.startswith(f"| {preset} |"))
        train, parallel, single, *_ = figures(speeds)
        assert train > 0 and parallel > 0 and single > 0
        seconds, _, steps, evals, eval_seconds, share = figures(wall)
        assert seconds > 0 and steps >= 1 and evals >= 1 and 0 < eval_seconds < seconds
        assert 0 < share < 100
        chars, exact, cold, warm = figures(warmups)
        assert chars > 0 and exact > 0 and abs(warm) < abs(cold)
    (cli,) = (line for line in lines if line.startswith("charlm-train --max-time 3:"))
    budget, after, past, target, start = figures(cli)
    assert (budget, target) == (3, 13) and after > 0 and start > 0
    assert past == pytest.approx(after - 3, abs=0.1)
    assert any(line.startswith("its last line: stopped (max_time)") for line in lines)
