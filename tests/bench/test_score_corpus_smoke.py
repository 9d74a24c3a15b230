"""``bench.score_corpus --smoke`` runs every part but Ray in seconds and prints its figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import score_corpus


def test_smoke_run_prints_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert score_corpus.main(["--smoke", "--json", str(tmp_path / "f.json")]) == 0
    output = capsys.readouterr().out
    figures = json.loads((tmp_path / "f.json").read_text())
    for part in ("inprocess", "local", "http"):
        assert math.isfinite(figures[part]) and figures[part] > 0, part
    rss = figures["rss"]
    assert rss["input_bytes"] >= 2 * 10**6 and rss["records"] > 0
    assert 0 < rss["peak_rss"] < 1.5e9  # the bound of the full run holds for a small input too
    for start in (
        "| in-process score_id_sequences |",
        "| charlm-score, local job |",
        "| client over /v1/score, 8 concurrent |",
        "- local job / in-process:",
        "- local job / HTTP client:",
        "- peak RSS scoring 2 MB of JSONL",
    ):
        assert any(line.startswith(start) for line in output.splitlines()), start
    assert "Ray job" not in output  # left out of the smoke run


def test_sizes_parse() -> None:
    assert score_corpus.parse_size("1GB") == 10**9
    assert score_corpus.parse_size("2.5MB") == 2_500_000
    assert score_corpus.parse_size("123") == 123
