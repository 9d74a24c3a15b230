"""Training faults: a SIGKILL at a random point, then ``--resume``; a disk that fills up while a
checkpoint is written. Nothing saved before the fault is lost or damaged."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import models.files
from models.checkpoint import load_checkpoint, save_checkpoint
from tests.support import REPO, train_tiny_model
from training.report import MetricsLog, metrics_path
from training.resume import resume_path

MAX_STEPS = 40


def train_args(
    corpus: Path, out: Path, cache: Path, steps: int = MAX_STEPS, eval_interval: int = 5
) -> list[str]:
    return [
        sys.executable, "-m", "training", "--data", str(corpus), "--out", str(out),
        "--preset", "tiny", "--hidden-size", "32", "--embed-size", "16", "--seq-len", "16",
        "--batch-size", "4", "--eval-interval", str(eval_interval), "--log-interval", "1",
        "--sample-chars", "0",
        "--cache-dir", str(cache), "--device", "cpu", "--max-steps", str(steps), "--seed", "7",
    ]  # fmt: skip


def environment() -> dict[str, str]:
    # one thread: the same arithmetic in every run, so runs can be compared bit for bit
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    path.write_text(
        "\n".join(" ".join(rng.choices(words, k=6)) for _ in range(400)), encoding="utf-8"
    )
    return path


def kill_at_a_random_point(args: list[str], out: Path, rng: random.Random) -> int:
    """Start training, wait until it has saved at least once, SIGKILL it a random moment later;
    return the step the resume file held at the kill."""
    process = subprocess.Popen(
        args, cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not resume_path(out).exists():
            assert process.poll() is None, "training ended before its first save"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    return int(json.loads(_resume_info(out))["step"])


def _resume_info(out: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(resume_path(out)), framework="pt") as handle:
        return str((handle.metadata() or {})["charlm.resume"])


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(resume_path(out)))
    return {k: v for k, v in tensors.items() if k.startswith("model/")}


def train_steps(out: Path) -> list[int]:
    """Steps of the train records in the metrics file (a line cut by a kill is skipped)."""
    records = MetricsLog(metrics_path(out)).records()
    return [int(r["step"]) for r in records if r.get("kind") == "train"]


def test_sigkill_then_resume_ends_exactly_as_an_uninterrupted_run(
    corpus: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "reference" / "model.safetensors"
    done = run(train_args(corpus, reference, tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed" / "model.safetensors"
    args = train_args(corpus, killed, tmp_path / "cache")
    saved_step = kill_at_a_random_point(args, killed, random.Random(os.getpid()))
    assert 0 < saved_step < MAX_STEPS, "the kill came too late to test anything"
    load_checkpoint(killed)  # what the kill left is whole: never a half-written file
    resumed = run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert train_steps(killed) == list(range(1, MAX_STEPS + 1))  # none lost, none twice
    final = load_checkpoint(killed)
    assert final.training["step"] == load_checkpoint(reference).training["step"]
    expected, got = final_weights(reference), final_weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write fails with ENOSPC (injected where the bytes are flushed to disk): the error
    names the file, the previous checkpoint is byte for byte the same and still loads, and no
    temporary file is left behind."""
    model, vocab = train_tiny_model("abcabc abc.\n" * 50, steps=5)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, vocab, training={"step": 5})
    before = path.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(models.files.os, "fsync", full_disk)
    with pytest.raises(OSError) as caught:
        save_checkpoint(path, model, vocab, training={"step": 6})
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(path)
    assert "No space left on device" in str(caught.value)
    assert path.read_bytes() == before
    assert load_checkpoint(path).training == {"step": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def _mount_tmpfs(folder: Path, kib: int) -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
        capture_output=True,
    )
    return result.returncode == 0


def test_training_on_a_disk_that_fills_up_stops_clearly_and_resumes(
    corpus: Path, tmp_path: Path
) -> None:
    """A real full disk (a tmpfs barely larger than the run's files): charlm-train exits 2 with
    one line naming the file and the cause; every file saved before is intact; once there is
    room again, --resume completes."""
    first = tmp_path / "first" / "model.safetensors"
    done = run(train_args(corpus, first, tmp_path / "cache", steps=5))
    assert done.returncode == 0, done.stderr[-3000:]
    disk = tmp_path / "disk"
    used_kib = sum(p.stat().st_size for p in first.parent.iterdir()) // 1024
    if not _mount_tmpfs(disk, used_kib + 12):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected fault test covers it")
    try:
        for item in first.parent.iterdir():
            (disk / item.name).write_bytes(item.read_bytes())
        saved = {p.name: p.read_bytes() for p in disk.iterdir() if p.suffix == ".safetensors"}
        out = disk / "model.safetensors"
        args = train_args(corpus, out, tmp_path / "cache")
        failed = run([*args, "--resume"])
        assert failed.returncode == 2, failed.stderr[-3000:]
        message = failed.stderr.strip().splitlines()[-1]
        assert message.startswith("charlm-train: error: "), message
        assert "No space left on device" in message and "--resume" in message
        assert "Traceback" not in failed.stderr
        for name, data in saved.items():
            assert (disk / name).read_bytes() == data, name
        assert load_checkpoint(out).training["step"] == 5
        assert not [p.name for p in disk.iterdir() if p.name.endswith(".tmp")]
        # room again: the run continues from the last save and completes
        moved = tmp_path / "moved" / "model.safetensors"
        moved.parent.mkdir()
        for item in disk.iterdir():
            (moved.parent / item.name).write_bytes(item.read_bytes())
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    resumed = run([*train_args(corpus, moved, tmp_path / "cache"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(_resume_info(moved))["step"] == MAX_STEPS
    load_checkpoint(moved)
