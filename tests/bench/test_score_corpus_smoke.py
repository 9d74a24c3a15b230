"""``bench.score_corpus --smoke`` runs every part but Ray in seconds and prints its figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import score_corpus


def test_smoke_run_prints_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--smoke", "--record-chars", "20-120", "--json", str(tmp_path / "f.json")]
    assert score_corpus.main(argv) == 0
    output = capsys.readouterr().out
    figures = json.loads((tmp_path / "f.json").read_text())
    for part in ("inprocess", "local", "http"):
        assert math.isfinite(figures[part]) and figures[part] > 0, part
    assert figures["record_chars"] == [20, 120]
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


def test_record_lengths_parse_and_hold() -> None:
    from argparse import ArgumentTypeError

    from bench.score_corpus_parts import make_records, parse_range

    assert parse_range("20-120") == (20, 120)
    assert parse_range("50") == (50, 50)
    for bad in ("x-10", "30-20", "0-5"):
        with pytest.raises(ArgumentTypeError):
            parse_range(bad)
    records = make_records("abcdefghij " * 500, lengths=(20, 120))
    lengths = [len(next(records)) for _ in range(500)]
    assert min(lengths) >= 20 and max(lengths) <= 120
    assert max(lengths) - min(lengths) > 50  # spread over the range, not one length
