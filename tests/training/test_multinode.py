"""Training on two "nodes" (two torchrun processes meeting over loopback, gloo on the CPU).

The slow test trains one run in three parts: 2 nodes from scratch, then ``--resume`` in one
process, then ``--resume`` on 2 nodes again, each part with the same global batch of 8 streams
(4 per process on 2 nodes, 8 in one process). It checks that only rank 0 writes (each node has
its own output folder: the other node's stays as it was) and that the validation and train
curves equal those of one uninterrupted single process with 8 streams, up to float rounding.

Why equal and not merely close: with the same global batch the streams are the same rows of the
same text (``training.batches``), stream restarts are drawn per stream from the seed and step
(``training.step.restart_mask``), DistributedDataParallel averages the two half-batch gradients
into the full batch's mean, and dropout is off. What remains is the order of float additions
(gloo's all-reduce of two means against one mean over 8 streams): measured here at most 5e-8
relative on the validation loss and 2e-7 on the train loss. ``CURVE_RTOL`` is 1e-4, hundreds of
times that rounding and ten times smaller than the smallest gap a real fault made: with restarts
drawn per rank from each rank's own random state (as they were before), the validation loss
differed by 1.3e-3 to 5e-3 relative and the train loss by up to 8e-3.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint
from tests.support import free_port
from training import distributed
from training.cli import build_train_config, resumed_config
from training.report import metrics_path
from training.resume import load_resume, resume_path

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 240.0  # one part of the run; a loaded machine imports torch slowly
CURVE_RTOL = 1e-4  # see the module docstring
FILES = ["m.metrics.jsonl", "m.png", "m.resume.safetensors", "m.safetensors"]


def test_resumed_batch_size_keeps_the_global_batch() -> None:
    assert distributed.resumed_batch_size(4, 2, 1) == 8
    assert distributed.resumed_batch_size(8, 1, 2) == 4
    assert distributed.resumed_batch_size(6, 2, 4) == 3
    with pytest.raises(ValueError, match=r"trains 8 streams \(4 per process x 2 processes\)"):
        distributed.resumed_batch_size(4, 2, 3)


def test_resumed_config_shares_the_streams_out(tmp_path: Path) -> None:
    saved = build_train_config({"batch_size": 4, "max_steps": 10}).to_dict()
    args: dict[str, object] = {"data": ["x"], "out": tmp_path / "m.safetensors", "resume": True}
    config = resumed_config(saved, build_train_config(args), args, saved_world_size=2, world_size=1)
    assert config.batch_size == 8
    # the derived batch may be given; the old per-process batch on the new layout may not
    args_ok = {**args, "batch_size": 8}
    assert (
        resumed_config(saved, build_train_config(args_ok), args_ok, saved_world_size=2).batch_size
        == 8
    )
    args_bad = {**args, "batch_size": 4}
    with pytest.raises(ValueError, match="--batch-size differ"):
        resumed_config(saved, build_train_config(args_bad), args_bad, saved_world_size=2)
    with pytest.raises(ValueError, match="cannot share evenly"):
        resumed_config(saved, build_train_config(args), args, saved_world_size=2, world_size=3)


# ---------------------------------------------------------------------------------------------
# two nodes


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CHARLM_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    return env


def _train_args(corpus_file: Path, cache_dir: Path) -> list[str]:
    # a flat learning rate after warm-up (final fraction 1): each part's --max-steps is then a
    # budget only, and the parts follow the uninterrupted run's schedule
    return [
        "--data", str(corpus_file), "--cache-dir", str(cache_dir), "--preset", "tiny",
        "--hidden-size", "32", "--seq-len", "32", "--lr", "1e-2", "--warmup-steps", "5",
        "--final-lr-fraction", "1", "--dropout", "0", "--state-reset", "0.1",
        "--eval-interval", "12", "--log-interval", "4", "--sample-chars", "0",
        "--device", "cpu", "--precision", "fp32",
    ]  # fmt: skip


def _process_tree(root: int) -> list[int]:
    """``root`` and every process below it (torchrun starts its workers in new sessions, so a
    process group would miss them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _run_two_nodes(node_args: list[list[str]], logs: list[Path]) -> list[str]:
    """Two ``torchrun --nnodes 2`` on 127.0.0.1 (c10d rendezvous); their logs, once both end.

    Whatever happens, no process of theirs outlives the call.
    """
    port = free_port()
    launcher = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
        "--rdzv-id", f"charlm-test-{port}", "--rdzv-conf", "join_timeout=60",
        "--monitor-interval", "0.2", "-m", "training",
    ]  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for args, log in zip(node_args, logs, strict=True):
            with log.open("wb") as handle:
                command = [*launcher, *args]
                procs.append(
                    subprocess.Popen(
                        command, cwd=REPO, env=_env(), stdout=handle, stderr=subprocess.STDOUT
                    )
                )
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break  # one node failed: the other would wait for it
            time.sleep(0.2)
    finally:
        leftovers = [pid for p in procs if p.poll() is None for pid in _process_tree(p.pid)]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in procs:
            p.wait(timeout=30)
    texts = [log.read_text(errors="replace") for log in logs]
    codes = [p.returncode for p in procs]
    assert codes == [0, 0], f"exit codes {codes}\n" + "\n---\n".join(t[-3000:] for t in texts)
    return texts


def _run_one_process(args: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "training", *args], cwd=REPO, env=_env(), capture_output=True,
        text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _snapshot(folder: Path) -> dict[str, tuple[int, int, str]] | None:
    """Each file's inode, modification time and content hash (``None``: no such folder)."""
    if not folder.exists():
        return None
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.iterdir())
    }


def _main_node(texts: list[str]) -> int:
    """Which node held rank 0: c10d assigns ranks in its own order, not by node number."""
    mains = [i for i, text in enumerate(texts) if "rank 0 of 2 joined" in text]
    assert len(mains) == 1, texts
    return mains[0]


def _records(folder: Path, kind: str) -> list[dict[str, float]]:
    lines = metrics_path(folder / "m.safetensors").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _layout(folder: Path) -> tuple[int, int, int, int]:
    """(step, processes, streams per process, carried rows) of the resume file in ``folder``."""
    saved = load_resume(resume_path(folder / "m.safetensors"))
    info = saved.info
    return (info["step"], info["world_size"], info["train_config"]["batch_size"],
            saved.carried[0].shape[0])  # fmt: skip


@pytest.mark.slow
def test_two_nodes_train_resume_across_layouts_and_match_one_process(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    base = _train_args(corpus_file, cache_dir)
    # the reference: one process, 8 streams, 36 steps without a stop
    reference = tmp_path / "reference"
    _run_one_process([*base, "--batch-size", "8", "--max-steps", "36",
                      "--out", str(reference / "m.safetensors")])  # fmt: skip

    nodes = [tmp_path / "node0", tmp_path / "node1"]  # each node's own --out folder
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]

    def node_args(*extra: str) -> list[list[str]]:
        return [[*base, *extra, "--out", str(n / "m.safetensors")] for n in nodes]

    # part 1: two nodes of 4 streams each, from scratch to step 12
    texts = _run_two_nodes(node_args("--batch-size", "4", "--max-steps", "12"), logs)
    main = _main_node(texts)
    assert sorted(p.name for p in nodes[main].iterdir()) == FILES
    assert not nodes[1 - main].exists()  # the other rank created nothing, not even the folder
    assert "stopped (max_steps) at step 12" in texts[main]
    assert "stopped" not in texts[1 - main]  # the summary is rank 0's alone
    assert _layout(nodes[main]) == (12, 2, 4, 8)

    # part 2: one process resumes the two nodes' run; its batch becomes 8 streams
    out = _run_one_process([*base, "--max-steps", "24", "--resume",
                            "--out", str(nodes[main] / "m.safetensors")])  # fmt: skip
    assert "1 process(es)" in out and "stopped (max_steps) at step 24" in out
    assert _layout(nodes[main]) == (24, 1, 8, 8)

    # part 3: two nodes resume the one-process run (the text's first pass ends at step 30,
    # so a new epoch starts on the new layout). Both nodes read the resume file at the same
    # path, as from shared storage: the other node's folder gets a copy.
    shared = nodes[main]
    other = nodes[1 - main]
    other.mkdir()
    for f in shared.iterdir():
        shutil.copy2(f, other / f.name)
    before = [_snapshot(n) for n in nodes]
    texts = _run_two_nodes(node_args("--max-steps", "36", "--resume"), logs)
    main = _main_node(texts)
    after = [_snapshot(n) for n in nodes]
    assert after[1 - main] == before[1 - main]  # rank 1 wrote nothing, replaced nothing
    assert after[main] != before[main]
    assert _layout(nodes[main]) == (36, 2, 4, 8)
    assert load_resume(resume_path(nodes[main] / "m.safetensors")).info["position"]["epoch"] == 1
    assert load_checkpoint(nodes[main] / "m.safetensors").training["world_size"] == 2

    # the three parts' curve is the uninterrupted single process's
    run_val = _records(nodes[main], "eval")
    ref_val = _records(reference, "eval")
    assert [r["step"] for r in run_val] == [r["step"] for r in ref_val] == [12, 24, 36]
    for got, want in zip(run_val, ref_val, strict=True):
        assert got["val_nats"] == pytest.approx(want["val_nats"], rel=CURVE_RTOL), got["step"]
    assert ref_val[-1]["val_nats"] < 0.8 * ref_val[0]["val_nats"]  # the curve does move
    run_train = _records(nodes[main], "train")
    ref_train = _records(reference, "train")
    assert [r["step"] for r in run_train] == [r["step"] for r in ref_train]
    for got, want in zip(run_train, ref_train, strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=CURVE_RTOL), got["step"]
