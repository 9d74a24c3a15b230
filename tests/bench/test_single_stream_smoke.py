"""The single-stream breakdown runs end to end on a tiny untrained model (smoke budget)."""

import argparse
from pathlib import Path

import pytest

from bench import single_stream
from bench.serve_inprocess import build_models
from bench.single_stream import measure, report


def test_every_part_is_timed_and_reported(tmp_path: Path) -> None:
    folder = build_models(tmp_path, ["tiny-2x128"])
    args = argparse.Namespace(chars=5, rounds=1)
    figures = measure(folder / "tiny-2x128.safetensors", args)
    parts = {"bare_step", "forward", "step", "sampler", "engine_step", "engine_forward"}
    parts |= {"bare_step_wide", "step_wide", "products"}
    assert set(figures) == parts
    assert all(seconds > 0 for seconds in figures.values())
    lines = report("tiny-2x128", figures)
    assert lines[0].startswith("## tiny-2x128") and any("fused model.step" in x for x in lines)
    assert any("matrix products alone" in x for x in lines)
    assert any("32 streams can gain" in x for x in lines)


def test_smoke_run_prints_the_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert single_stream.main(["--smoke"]) == 0
    printed = capsys.readouterr().out
    assert "eager bare step" in printed and "engine, one completion alone" in printed
