"""Whole-process behaviour: signals save and exit cleanly; two-process DDP writes one checkpoint,
with the regularisers too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint
from training.report import metrics_path
from training.resume import load_resume, resume_path

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["CHARLM_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO)
    return env


def _train_args(corpus_file: Path, out: Path, cache_dir: Path) -> list[str]:
    return [
        "--data", str(corpus_file), "--out", str(out), "--cache-dir", str(cache_dir),
        "--preset", "tiny", "--hidden-size", "32", "--batch-size", "4", "--seq-len", "16",
        "--sample-chars", "0", "--device", "cpu",
    ]  # fmt: skip


def _train_two_processes(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``charlm-train`` run by ``torchrun`` as two processes on this machine; it must succeed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "training", *args]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_resume_state_and_exits_cleanly(
    tmp_path: Path, corpus_file: Path, cache_dir: Path, signum: int
) -> None:
    out = tmp_path / "m.safetensors"
    args = [*_train_args(corpus_file, out, cache_dir), "--max-steps", "1000000",
            "--eval-interval", "20", "--log-interval", "1"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", *args],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists():  # the first evaluation has written the best model
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stdout
    saved = load_resume(resume_path(out))
    steps = [json.loads(line)["step"] for line in metrics_path(out).read_text().splitlines()]
    assert saved.info["step"] == steps[-1] >= 20
    assert load_checkpoint(out).training["step"] >= 20


@pytest.mark.slow
def test_two_process_ddp_run_writes_one_checkpoint(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    out = tmp_path / "ddp" / "m.safetensors"
    args = [*_train_args(corpus_file, out, cache_dir), "--max-steps", "12", "--eval-interval", "6",
            "--log-interval", "3"]  # fmt: skip
    _train_two_processes(args)
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["m.metrics.jsonl", "m.png", "m.resume.safetensors", "m.safetensors"]
    loaded = load_checkpoint(out)
    assert loaded.training["world_size"] == 2 and loaded.training["step"] in (6, 12)
    records = [json.loads(line) for line in metrics_path(out).read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == [3, 6, 9, 12]  # written once, by rank 0
    # the carried state of both ranks' streams is kept: 2 ranks x 4 streams
    carried = load_resume(resume_path(out)).carried
    assert carried[0].shape[0] == 8


@pytest.mark.slow
def test_two_process_ddp_run_with_weight_drop_and_the_other_regularisers(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    out = tmp_path / "ddp" / "m.safetensors"
    args = [*_train_args(corpus_file, out, cache_dir), "--max-steps", "4", "--eval-interval", "4",
            "--weight-drop", "0.3", "--embed-dropout", "0.1", "--locked-dropout",
            "--dropout", "0.2"]  # fmt: skip
    result = _train_two_processes(args)
    assert "Warning" not in result.stderr  # none from the layer's weights (flatten_parameters)
    loaded = load_checkpoint(out)
    assert loaded.training["world_size"] == 2 and loaded.config.weight_drop == 0.3
