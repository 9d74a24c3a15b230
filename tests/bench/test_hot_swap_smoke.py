"""``bench.hot_swap --smoke``: a checkpoint replaced under load in seconds, every figure printed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import hot_swap


def test_smoke_run_swaps_without_a_failed_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hot_swap.main(["--smoke", "--check", "--json", str(tmp_path / "f.json")]) == 0
    output = capsys.readouterr().out
    figures = json.loads((tmp_path / "f.json").read_text())
    assert figures["failed"] == 0 and figures["aborted"] == 0 and figures["requests"] > 0
    assert figures["old_answers_after_swap"] == 0
    assert 0 <= figures["all_new_s"] <= hot_swap.TARGET_S
    assert 0 <= figures["shown_s"] <= figures["dropped_s"]
    rss = figures["rss_mb"]
    assert all(math.isfinite(rss[k]) and rss[k] > 0 for k in ("before", "peak", "after"))
    for start in (
        "    all ",
        "requests: ",
        "rename -> the new version answers everywhere: ",
        "rename -> /v1/models shows the new sha256: ",
        "rename -> the old version stopped and dropped: ",
        "server RSS: before the swap ",
        "targets met",
    ):
        assert any(line.startswith(start) for line in output.splitlines()), start
