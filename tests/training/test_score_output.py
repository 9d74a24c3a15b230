"""Score and error lines, and finding where a killed job's output ends."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from models.scoring import TextScore
from training.records import BadRecord, Record
from training.score_output import (
    LineSink,
    ResumeError,
    ResumePoint,
    error_line,
    prepare_resume,
    score_line,
)


def test_score_line_fields() -> None:
    score = TextScore(logprobs=torch.tensor([-1.0, -2.0]), num_unknown=1)
    line = score_line(Record(3, "ab", "x"), score, "line", keep_text=True)
    assert line == {
        "line": 3,
        "id": "x",
        "logprob": -3.0,
        "bits_per_char": 1.5 / math.log(2),
        "perplexity": math.exp(1.5),
        "num_chars": 2,
        "num_unknown": 1,
        "text": "ab",
    }
    empty = score_line(Record(4, ""), TextScore(torch.zeros(0), 0), "row")
    assert empty["row"] == 4 and "id" not in empty
    assert (empty["bits_per_char"], empty["perplexity"], empty["num_chars"]) == (0.0, 1.0, 0)
    huge = score_line(Record(5, "a"), TextScore(torch.tensor([-1e4]), 0), "line")
    assert huge["perplexity"] == math.exp(709.0)
    assert error_line(BadRecord(6, "why", 9), "line") == {"line": 6, "id": 9, "reason": "why"}


def write_lines(path: Path, positions: list[int], key: str = "line") -> None:
    sink = LineSink(str(path))
    sink.write({key: p, "logprob": -1.0} for p in positions)
    sink.close()


def test_resume_cuts_a_partial_line_and_the_errors_past_the_last_score(tmp_path: Path) -> None:
    out, err = tmp_path / "s.jsonl", tmp_path / "s.jsonl.errors.jsonl"
    write_lines(out, [1, 2, 4, 5])
    with out.open("ab") as handle:
        handle.write(b'{"line": 7, "logpr')  # killed in the middle of a write
    write_lines(err, [3, 6, 8])
    with err.open("ab") as handle:
        handle.write(b'{"line": 9')
    point = prepare_resume(str(out), str(err), "line")
    assert point == ResumePoint(after=5, scored=4, errors=1)
    assert [json.loads(x)["line"] for x in out.read_text().splitlines()] == [1, 2, 4, 5]
    assert out.read_bytes().endswith(b"\n")
    assert [json.loads(x)["line"] for x in err.read_text().splitlines()] == [3]


def test_resume_of_nothing_starts_afresh(tmp_path: Path) -> None:
    out, err = tmp_path / "s.jsonl", tmp_path / "e.jsonl"
    write_lines(err, [1])
    assert prepare_resume(str(out), str(err), "line") == ResumePoint()
    assert err.read_bytes() == b""
    out.write_bytes(b'{"line": 1, "log')  # not one complete line
    assert prepare_resume(str(out), str(err), "line") == ResumePoint()
    assert out.read_bytes() == b""


def test_resume_handles_lines_longer_than_a_read_chunk(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    sink = LineSink(str(out))
    sink.write({"line": p, "text": "x" * 1_500_000} for p in (1, 2))
    sink.close()
    assert prepare_resume(str(out), None, "line") == ResumePoint(after=2, scored=2)


def test_resume_refuses_a_file_that_is_not_a_score_output(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    out.write_text("just some text\nmore\n")
    with pytest.raises(ResumeError, match="line 1 is not a score record with a 'line' position"):
        prepare_resume(str(out), None, "line")
    out.unlink()
    write_lines(out, [1, 2])
    with pytest.raises(ResumeError, match="line 1 is not a score record with a 'row' position"):
        prepare_resume(str(out), None, "row")
