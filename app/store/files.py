"""The checkpoint files of a models folder: which there are, whether one changed, and reading one.

A file is known by what ``stat`` says of it (``FileIdentity``): a rename over it (how charlm
writes checkpoints) gives it a new inode, a write into it a new size or modification time. A
file is read whole, hashed and loaded; if its identity changed meanwhile (a copy still in
progress), the result is thrown away (``FileChangedError``) and the file read again later, so a
model is only ever built from bytes that stood still while they were read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from models.checkpoint import LoadedCheckpoint, load_checkpoint, read_metadata

CHECKPOINT_SUFFIX = ".safetensors"
RESUME_SUFFIX = ".resume.safetensors"
_HASH_CHUNK = 1 << 20


class FileChangedError(Exception):
    """The file changed or disappeared while it was being read."""


@dataclass(frozen=True)
class FileIdentity:
    """What ``stat`` says of a file: enough to see that it was replaced or written to."""

    inode: int
    size: int
    mtime_ns: int
    # changes with the mode or owner too: a file that failed for want of permission is read
    # again after a chmod, although its content is the same
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        info = path.stat()
        return cls(info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def same_content(self, other: FileIdentity | None) -> bool:
        """Whether the bytes are those ``other`` was taken of, as far as ``stat`` can tell."""
        return other is not None and (self.inode, self.size, self.mtime_ns) == (
            other.inode,
            other.size,
            other.mtime_ns,
        )

    @property
    def modified(self) -> int:
        """Modification time, Unix seconds."""
        return self.mtime_ns // 1_000_000_000


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint of the folder: its model id (the file name's stem), path and identity."""

    model_id: str
    path: Path
    identity: FileIdentity


def scan_folder(folder: Path) -> dict[str, CheckpointFile] | None:
    """Every ``*.safetensors`` file of ``folder`` (not charlm-train's resume state beside a
    checkpoint, nor its temporary files), by model id in name order; None when the folder cannot
    be listed (missing, unreadable), which must not be taken as "every model was removed"."""
    try:
        with os.scandir(folder) as listing:
            names = sorted(e.name for e in listing)
    except OSError:
        return None
    found: dict[str, CheckpointFile] = {}
    for name in names:
        if not name.endswith(CHECKPOINT_SUFFIX) or name.endswith(RESUME_SUFFIX):
            continue
        path = folder / name
        try:
            identity = FileIdentity.of(path)  # follows links, as loading does
        except OSError:
            continue  # removed since the listing (or a dangling link): not a model now
        model_id = name[: -len(CHECKPOINT_SUFFIX)]
        found[model_id] = CheckpointFile(model_id, path, identity)
    return found


@dataclass
class ReadCheckpoint:
    """A checkpoint file read whole while it stood still."""

    identity: FileIdentity
    sha256: str
    # None when the file holds the same bytes as the version serving (nothing to load again)
    checkpoint: LoadedCheckpoint | None


def read_checkpoint(
    path: Path, device: torch.device | str, serving_sha256: str | None = None
) -> ReadCheckpoint:
    """Hash and load ``path`` (blocking: run it in a thread).

    Raises ``CheckpointError`` for a file that is not a loadable checkpoint (truncated,
    corrupt, foreign, unreadable) and ``FileChangedError`` when the file changed or vanished
    while being read. A file with the SHA-256 ``serving_sha256`` is hashed but not loaded.
    """
    try:
        before = FileIdentity.of(path)
    except FileNotFoundError:
        raise FileChangedError(f"{path.name} disappeared") from None
    read_metadata(path)  # the header's checks first: clear reasons for foreign or unreadable files
    try:
        sha256 = file_sha256(path)
    except FileNotFoundError:
        raise FileChangedError(f"{path.name} disappeared") from None
    checkpoint = None if sha256 == serving_sha256 else load_checkpoint(path, device=device)
    try:
        after = FileIdentity.of(path)
    except FileNotFoundError:
        after = None
    if after != before:
        raise FileChangedError(f"{path.name} changed while it was being read")
    return ReadCheckpoint(before, sha256, checkpoint)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
