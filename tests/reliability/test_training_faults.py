"""Training faults: a SIGKILL at a random step or in the middle of a save, then ``--resume``; a
disk that fills up while a checkpoint is written. Nothing saved before the fault is lost or
damaged."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import models.files
from models.checkpoint import load_checkpoint, save_checkpoint
from tests.support import REPO, make_corpus, train_tiny_model
from training.report import MetricsLog, metrics_path
from training.resume import resume_path

MAX_STEPS = 40
EVAL_INTERVAL = 5  # steps between saves

# charlm-train in a process that SIGKILLs itself at a chosen point: after the train record of a
# given step is logged, or at the given save once the new resume file is written under its
# temporary name and before the rename. Where the kill lands does not depend on how fast the
# machine trains.
KILLED_RUN = """
import os, signal, sys
import models.files, training.report
point, at = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
if point == "step":
    append = training.report.MetricsLog.append
    def append_then_die(self, record):
        append(self, record)
        if record.get("kind") == "train" and int(record["step"]) == at:
            os.kill(os.getpid(), signal.SIGKILL)
    training.report.MetricsLog.append = append_then_die
else:
    replace, saves = os.replace, [0]
    def replace_or_die(src, dst, *args, **kwargs):
        if str(dst).endswith(".resume.safetensors"):
            saves[0] += 1
            if saves[0] == at:
                os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst, *args, **kwargs)
    models.files.os.replace = replace_or_die
from training.cli import train_main
sys.argv[0] = "charlm-train"
raise SystemExit(train_main())
"""


def train_args(
    corpus: Path, out: Path, cache: Path, steps: int = MAX_STEPS, eval_interval: int = EVAL_INTERVAL
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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(make_corpus(400), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run no fault interrupts."""
    folder = tmp_path_factory.mktemp("reference")
    out = folder / "model.safetensors"
    done = run(train_args(corpus, out, folder / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def run_killed(args: list[str], point: str, at: int) -> None:
    """``args`` (a ``train_args`` command) killed by SIGKILL at ``point`` number ``at``."""
    killed = run([sys.executable, "-c", KILLED_RUN, point, str(at), *args[3:]])
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])


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


@pytest.mark.slow
@pytest.mark.parametrize("point", ["step", "save"])
def test_sigkill_then_resume_ends_exactly_as_an_uninterrupted_run(
    point: str, corpus: Path, reference: Path, tmp_path: Path
) -> None:
    rng = random.Random(os.getpid())
    saves = MAX_STEPS // EVAL_INTERVAL
    # a step after the first save, or a save after the first one and before the last
    at = (
        rng.randint(EVAL_INTERVAL + 1, MAX_STEPS - 1)
        if point == "step"
        else rng.randint(2, saves - 1)
    )
    killed = tmp_path / "killed" / "model.safetensors"
    args = train_args(corpus, killed, tmp_path / "cache")
    run_killed(args, point, at)
    saved_step = int(json.loads(_resume_info(killed))["step"])
    leftovers = [p.name for p in killed.parent.iterdir() if p.name.endswith(".tmp")]
    if point == "step":
        assert EVAL_INTERVAL <= saved_step <= at, (at, saved_step)
    else:  # the resume file of the save before: the new one never replaced it
        assert saved_step == (at - 1) * EVAL_INTERVAL, (at, saved_step)
        assert len(leftovers) == 1 and leftovers[0].startswith(".model.resume.safetensors.")
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


@pytest.mark.slow
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
