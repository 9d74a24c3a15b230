"""The Ray runner on a two-node cluster of this machine: the local job's scores, every record
exactly once though a worker is killed mid-job, and resume by blocks."""

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

from tests.support import REPO
from tests.training.test_score_job import corpus_texts, read_jsonl, save_model
from training.records import RecordFormat, read_records
from training.score_blocks import MANIFEST_FILE, block_records, plan_blocks
from training.score_cli import score_main

ray = pytest.importorskip("ray")

from tests.training.ray_cluster import LocalCluster, two_node_cluster  # noqa: E402

RECORDS = 4000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with two_node_cluster(tmp_path_factory.mktemp("ray")) as running:
        yield running


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model, a JSONL corpus with a few bad records, and the local job's output."""
    folder = tmp_path_factory.mktemp("job")
    checkpoint = save_model(folder / "m.safetensors", hidden_size=64)
    texts = corpus_texts(RECORDS)
    corpus = folder / "c.jsonl"
    with corpus.open("w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": i, "text": text}) + "\n" if i % 500 != 7 else "{bad\n")
    local = folder / "local.jsonl"
    assert score_main(["--checkpoint", str(checkpoint), "--input", str(corpus),
                       "--output", str(local), "--no-progress", "--threads", "1"]) == 0  # fmt: skip
    return {"checkpoint": checkpoint, "corpus": corpus, "local": local, "folder": folder}


def ray_args(job: dict[str, Path], cluster: LocalCluster, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.score_cli", "--checkpoint", str(job["checkpoint"]),
            "--input", str(job["corpus"]), "--output", str(out), "--ray", cluster.address,
            "--actors", "2", "--threads-per-actor", "1", "--block-mb", "0.004", "--no-progress",
            *extra]  # fmt: skip


def shard_lines(out: Path, name: str = "file") -> list[dict]:
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    return [line for shard in manifest["shards"] for line in read_jsonl(out / shard[name])]


def assert_same_as_local(out: Path, job: dict[str, Path]) -> None:
    local = read_jsonl(job["local"])
    scored = shard_lines(out)
    assert [x["line"] for x in scored] == [x["line"] for x in local]  # each once, in order
    for got, want in zip(scored, local, strict=True):
        assert got["id"] == want["id"] and got["num_chars"] == want["num_chars"]
        assert got["logprob"] == pytest.approx(want["logprob"], rel=1e-6, abs=1e-6)
        assert got["bits_per_char"] == pytest.approx(want["bits_per_char"], rel=1e-6, abs=1e-6)
    assert shard_lines(out, "errors_file") == read_jsonl(Path(str(job["local"]) + ".errors.jsonl"))


def test_blocks_end_at_line_ends_and_cover_the_input_once(job: dict[str, Path]) -> None:
    fmt = RecordFormat(kind="jsonl")
    plan = plan_blocks(str(job["corpus"]), fmt, 3000)
    data = job["corpus"].read_bytes()
    assert len(plan.blocks) > 10 and plan.blocks[0].start == 0
    assert plan.blocks[-1].end == len(data)
    for before, after in zip(plan.blocks, plan.blocks[1:], strict=False):
        assert before.end == after.start and data[before.end - 1 : before.end] == b"\n"
        assert after.first_position == data[: after.start].count(b"\n") + 1
    from_blocks = [r for b in plan.blocks for r in block_records(str(job["corpus"]), fmt, b)]
    assert from_blocks == list(read_records(str(job["corpus"]), fmt).records)


def test_a_killed_worker_loses_and_doubles_nothing(
    cluster: LocalCluster, job: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    stats = tmp_path / "stats.json"
    process = subprocess.Popen(ray_args(job, cluster, out, "--stats", str(stats)), cwd=REPO)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and process.poll() is None:
        actors = cluster.pids("ScoreBlocks")
        if actors and any(out.glob("part-*[0-9].jsonl")):
            shards_then = len(list(out.glob("part-*[0-9].jsonl")))
            os.kill(actors[0], signal.SIGKILL)
            killed = actors[0]
            manifest_then = (out / MANIFEST_FILE).exists()
        time.sleep(0.02)
    assert process.wait(timeout=240) == 0
    assert killed is not None and not manifest_then, "a worker must be killed mid-job"
    total_blocks = json.loads(stats.read_text())["blocks"]
    assert shards_then < total_blocks
    assert killed not in cluster.pids("ScoreBlocks")
    assert_same_as_local(out, job)
    totals = json.loads(stats.read_text())
    assert totals["records"] == RECORDS - 8 and totals["errors"] == 8


def test_resume_scores_only_the_missing_blocks(
    cluster: LocalCluster, job: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    assert subprocess.run(ray_args(job, cluster, out), cwd=REPO, timeout=240).returncode == 0
    shards = sorted(out.glob("part-*[0-9].jsonl"))
    for shard in shards[3:5]:
        shard.unlink()
    (out / MANIFEST_FILE).unlink()
    kept = {p: p.stat().st_mtime_ns for p in shards[:3]}
    stats = tmp_path / "stats.json"
    again = subprocess.run(
        ray_args(job, cluster, out, "--resume", "--stats", str(stats)), cwd=REPO, timeout=240
    )
    assert again.returncode == 0
    assert json.loads(stats.read_text())["blocks_scored_now"] == 2
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert_same_as_local(out, job)
    refused = subprocess.run(ray_args(job, cluster, out), cwd=REPO, capture_output=True)
    assert refused.returncode == 2 and b"pass --resume to continue it" in refused.stderr
