"""The local scoring job: the same scores as ``score_texts``, bounded reading, resume, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.scoring import score_texts
from models.vocab import CharVocab
from tests.support import REPO, make_corpus
from training.records import Record
from training.score_cli import score_main
from training.score_job import ScoreSettings, plan_batches, score_lines

VOCAB_TEXT = make_corpus(50)


def save_model(path: Path, hidden_size: int = 16, arch: str = "lstm") -> Path:
    vocab = CharVocab.from_text(VOCAB_TEXT)
    torch.manual_seed(0)
    config = ModelConfig(arch, len(vocab), embed_size=8, hidden_size=hidden_size, num_layers=1)
    save_checkpoint(path, build_model(config).eval(), vocab)
    return path


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_model(tmp_path / "m.safetensors")


def corpus_texts(count: int) -> list[str]:
    """Texts of many lengths, an empty one and characters outside the vocabulary."""
    lines = make_corpus(count).splitlines()
    return [(line + " ") * (i % 9) + ("€ü" if i % 17 == 0 else "") for i, line in enumerate(lines)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_matches_alone(lines: list[dict], texts: list[str], checkpoint: Path) -> None:
    """Each score line equals ``score_texts`` of its text alone, to 1e-6."""
    loaded = load_checkpoint(checkpoint)
    assert len(lines) == len(texts)
    for line, text in zip(lines, texts, strict=True):
        (alone,) = score_texts(loaded.model, loaded.vocab, [text])
        assert line["num_chars"] == alone.num_chars and line["num_unknown"] == alone.num_unknown
        assert line["logprob"] == pytest.approx(alone.logprob, rel=1e-6, abs=1e-6)
        assert line["bits_per_char"] == pytest.approx(alone.bits_per_char, rel=1e-6, abs=1e-6)
        assert line["perplexity"] == pytest.approx(alone.perplexity, rel=1e-6)


def test_batches_group_similar_lengths_within_bounds() -> None:
    lengths = [5, 100, 7, 99, 0, 50, 51, 6]
    settings = ScoreSettings(batch_size=3, batch_chars=160)
    batches = plan_batches(lengths, settings)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * (lengths[batch[0]] + 1) <= 160
    assert plan_batches([10**6], settings) == [[0]]  # one text over the budget is a batch alone


def test_job_scores_equal_score_texts_record_by_record(checkpoint: Path) -> None:
    loaded = load_checkpoint(checkpoint)
    texts = corpus_texts(120)
    records = [Record(i + 1, t) for i, t in enumerate(texts)]
    settings = ScoreSettings(batch_size=8, window_records=25)
    lines, errors = [], []
    for scored, bad in score_lines(loaded.model, loaded.vocab, records, "line", settings):
        lines += scored
        errors += bad
    assert errors == [] and [x["line"] for x in lines] == list(range(1, 121))
    assert_matches_alone(lines, texts, checkpoint)


def test_records_stream_through_a_window_at_a_time(checkpoint: Path) -> None:
    loaded = load_checkpoint(checkpoint)
    pulled = 0
    total = 20_000

    def feed() -> Iterator[Record]:
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield Record(i + 1, "ab"[i % 2] * (1 + i % 5))

    settings = ScoreSettings(batch_size=64, window_records=500)
    written = 0
    for lines, _ in score_lines(loaded.model, loaded.vocab, feed(), "line", settings):
        written += len(lines)
        # what has been read but not yet handed on is never more than one window
        assert written <= pulled <= written + settings.window_records
        assert written < total or pulled == total
    assert written == total == pulled


def run_cli(*args: str | Path) -> int:
    return score_main([str(a) for a in args])


def test_cli_writes_scores_and_bad_records(checkpoint: Path, tmp_path: Path) -> None:
    texts = corpus_texts(40)
    path = write_jsonl(tmp_path / "c.jsonl", texts)
    with path.open("ab") as handle:
        handle.write(b'{"id": "bad-1", "body": "x"}\n{"id": "bad-2", "text": "\xff"}\n')
        handle.write(json.dumps({"id": "long", "text": "a" * 201}).encode() + b"\n")
    out, stats = tmp_path / "s.jsonl", tmp_path / "stats.json"
    assert run_cli("--checkpoint", checkpoint, "--input", path, "--output", out,
                   "--max-chars", 200, "--stats", stats, "--plot", tmp_path / "h.png",
                   "--no-progress", "--window", 7) == 0  # fmt: skip
    lines = read_jsonl(out)
    assert [x["id"] for x in lines] == [f"doc-{i}" for i in range(40)]
    assert [x["line"] for x in lines] == list(range(1, 41))
    assert_matches_alone(lines, texts, checkpoint)
    errors = read_jsonl(Path(str(out) + ".errors.jsonl"))
    assert errors == [
        {"line": 41, "id": "bad-1", "reason": "missing field 'text'"},
        {"line": 42, "reason": "not UTF-8: invalid start byte at byte 25"},
        {"line": 43, "id": "long",
         "reason": "text has 201 characters, over the limit of 200 (--max-chars)"},
    ]  # fmt: skip
    totals = json.loads(stats.read_text())
    assert (totals["records"], totals["errors"]) == (40, 3)
    assert totals["chars"] == sum(len(t) for t in texts)
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run neither appends nor silently replaces
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--checkpoint", checkpoint, "--input", path, "--output", out)
    assert exit_info.value.code == 2


def test_cli_reads_stdin_and_writes_stdout(checkpoint: Path) -> None:
    texts = ["alpha beta", "", "gamma 3 ammag."]
    result = subprocess.run(
        [sys.executable, "-m", "training.score_cli", "--checkpoint", str(checkpoint),
         "--input", "-", "--output", "-", "--no-progress"],
        input=("\n".join(texts) + "\n").encode() + b"\xc3(\n",
        capture_output=True, cwd=REPO, timeout=120, check=True,
    )  # fmt: skip
    lines = [json.loads(x) for x in result.stdout.decode().splitlines()]
    assert [x["line"] for x in lines] == [1, 2, 3]
    assert_matches_alone(lines, texts, checkpoint)
    stderr = result.stderr.decode()
    assert '{"line": 4, "reason": "not UTF-8: invalid continuation byte at byte 0"}' in stderr
    assert "3 records scored" in stderr


def test_cli_reads_parquet(checkpoint: Path, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = corpus_texts(30)
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"key": list(range(30)), "body": texts}), path, row_group_size=8)
    out = tmp_path / "s.jsonl"
    assert run_cli("--checkpoint", checkpoint, "--input", path, "--output", out,
                   "--text-field", "body", "--id-field", "key", "--no-progress") == 0  # fmt: skip
    lines = read_jsonl(out)
    assert [(x["row"], x["id"]) for x in lines] == [(i + 1, i) for i in range(30)]
    assert_matches_alone(lines, texts, checkpoint)


def test_bidirectional_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = save_model(tmp_path / "bi.safetensors", arch="bilstm")
    path = tmp_path / "c.txt"
    path.write_text("abc\n")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--checkpoint", model, "--input", path, "--output", tmp_path / "s.jsonl")
    assert exit_info.value.code == 2
    assert "reads both directions" in capsys.readouterr().err


def test_resume_after_a_partial_last_line(checkpoint: Path, tmp_path: Path) -> None:
    texts = corpus_texts(60)
    path = write_jsonl(tmp_path / "c.jsonl", texts)
    with path.open("a") as handle:
        handle.write("not json\n")
    for i in range(60, 70):
        with path.open("a") as handle:
            handle.write(json.dumps({"id": f"doc-{i}", "text": f"tail {i}"}) + "\n")
    texts += [f"tail {i}" for i in range(60, 70)]
    full = tmp_path / "full.jsonl"
    run_cli("--checkpoint", checkpoint, "--input", path, "--output", full, "--no-progress")
    out = tmp_path / "s.jsonl"
    data = full.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 20  # mid-line, past the middle
    out.write_bytes(data[:cut])
    errors = Path(str(out) + ".errors.jsonl")
    errors.write_bytes(Path(str(full) + ".errors.jsonl").read_bytes())  # ran ahead of the scores
    assert run_cli("--checkpoint", checkpoint, "--input", path, "--output", out, "--resume",
                   "--no-progress", "--window", 4) == 0  # fmt: skip
    lines = read_jsonl(out)
    assert [x["id"] for x in lines] == [f"doc-{i}" for i in range(70)]
    assert_matches_alone(lines, texts, checkpoint)
    assert read_jsonl(errors) == [
        {"line": 61, "reason": "not valid JSON: Expecting value at column 1"}
    ]


def test_resume_after_the_job_is_killed(tmp_path: Path) -> None:
    checkpoint = save_model(tmp_path / "m.safetensors", hidden_size=64)
    texts = [t for t in corpus_texts(3000) if t]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "s.jsonl"
    args = [sys.executable, "-m", "training.score_cli", "--checkpoint", str(checkpoint),
            "--input", str(path), "--output", str(out), "--no-progress", "--threads", "1",
            "--window", "16", "--batch-size", "4"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    job = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if out.exists() and out.stat().st_size > 0:
            break
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    written = out.read_bytes().count(b"\n")
    assert 0 < written < len(texts), "the job must be killed in the middle"
    subprocess.run([*args, "--resume"], cwd=REPO, env=env, timeout=300, check=True)
    lines = read_jsonl(out)
    assert [x["line"] for x in lines] == list(range(1, len(texts) + 1))
    assert_matches_alone(lines, texts, checkpoint)
