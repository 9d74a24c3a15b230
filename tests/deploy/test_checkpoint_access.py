"""A checkpoint written on the host must be readable by the container's user.

The image runs its server as uid/gid 10001 over a read-only bind mount of the host's checkpoint
folder, so the file has to be readable by "others". These tests write a checkpoint the way
training does and read it back from a forked child that has dropped to that user id.
"""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.checkpoint import CheckpointError, read_metadata, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.vocab import CharVocab

CONTAINER_UID = 10001  # the USER of the Dockerfile

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="switching to the container's user id needs root",
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A checkpoint folder every user can enter (pytest's own tmp_path sits under a 0700 one)."""
    with tempfile.TemporaryDirectory(prefix="charlm-deploy-", dir="/tmp") as name:
        folder = Path(name)
        folder.chmod(0o755)
        yield folder


def _write_checkpoint(path: Path, umask: int = 0o022) -> None:
    vocab = CharVocab.from_text("hello container\n")
    config = ModelConfig(arch="lstm", vocab_size=len(vocab), embed_size=4, hidden_size=6)
    torch.manual_seed(0)
    old = os.umask(umask)
    try:
        save_checkpoint(path, build_model(config), vocab, training={"step": 1})
    finally:
        os.umask(old)


def _read_as(uid: int, path: Path) -> tuple[int, str]:
    """A child drops to ``uid`` and reads the checkpoint's metadata: (status, its error message).

    Status 0: read and recognised; 1: CheckpointError; 2: anything else.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no return from here, only os._exit
        code, message = 2, ""
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            read_metadata(path)
            code = 0
        except CheckpointError as exc:
            code, message = 1, str(exc)
        except BaseException as exc:
            message = repr(exc)
        finally:
            os.write(write_end, message.encode()[:4000])
            os._exit(code)
    os.close(write_end)
    # a forked child of a threaded process could in principle block on a lock it inherited;
    # never let that hang the suite
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
            pytest.fail("the child reading the checkpoint did not finish within 60 s")
        time.sleep(0.02)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    return os.waitstatus_to_exitcode(status), message


def test_checkpoint_is_world_readable_under_the_usual_umask(shared_dir: Path) -> None:
    _write_checkpoint(shared_dir / "m.safetensors")
    mode = stat.S_IMODE((shared_dir / "m.safetensors").stat().st_mode)
    assert mode == 0o644, f"checkpoint mode is {mode:o}"
    leftovers = sorted(p.name for p in shared_dir.iterdir() if p.name != "m.safetensors")
    assert leftovers == [], f"temporary files left beside the checkpoint: {leftovers}"


def test_checkpoint_respects_a_stricter_umask(shared_dir: Path) -> None:
    # the mode comes from the writer's umask, so an operator can still keep files private
    _write_checkpoint(shared_dir / "m.safetensors", umask=0o077)
    assert stat.S_IMODE((shared_dir / "m.safetensors").stat().st_mode) == 0o600


@needs_root
def test_container_user_reads_a_host_checkpoint(shared_dir: Path) -> None:
    _write_checkpoint(shared_dir / "m.safetensors")
    assert _read_as(CONTAINER_UID, shared_dir / "m.safetensors") == (0, "")


@needs_root
def test_container_user_is_refused_a_private_file(shared_dir: Path) -> None:
    # the failure the umask-based mode prevents: mkstemp's 0600 file, owned by root
    _write_checkpoint(shared_dir / "m.safetensors")
    (shared_dir / "m.safetensors").chmod(0o600)
    status, message = _read_as(CONTAINER_UID, shared_dir / "m.safetensors")
    assert status == 1
    # the reason names the cause and the remedy, not safetensors' "No such file or directory"
    assert "permission denied" in message and "mode 600" in message and "chmod a+r" in message
