"""What the reliability tests and scripts share: tiny real checkpoints, hostile model files, a
real ``charlm-serve`` process on 127.0.0.1 and a way to read its memory.

Nothing here downloads anything; every server listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.checkpoint import save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.vocab import CharVocab
from tests.support import make_corpus, train_tiny_model

GOOD_MODEL = "tiny"


def write_good_model(folder: Path, name: str = GOOD_MODEL, steps: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model, vocab = train_tiny_model(make_corpus(), steps=steps, hidden_size=32)
    path = folder / f"{name}.safetensors"
    save_checkpoint(path, model, vocab, training={"step": steps, "corpus": "generated"})
    return path


def write_bidirectional_model(folder: Path, name: str = "bi") -> Path:
    """An untrained one-layer ``bilstm`` over the same vocabulary: it scores (pll) and infills."""
    torch.manual_seed(1)
    vocab = CharVocab.from_text(make_corpus())
    config = ModelConfig(
        arch="bilstm", vocab_size=len(vocab), embed_size=8, hidden_size=16, num_layers=1
    )
    path = folder / f"{name}.safetensors"
    save_checkpoint(path, build_model(config).eval(), vocab)
    return path


class _Marker:
    """Unpickling this object runs ``os.mkdir(marker)``: proof that a loader executed it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@dataclass
class HostileFiles:
    """The bad checkpoints written by ``write_hostile_models`` and the pickle's marker file."""

    names: dict[str, str] = field(default_factory=dict)  # model id -> what is wrong with it
    marker: Path = Path()


def write_hostile_models(folder: Path, good: Path, marker: Path) -> HostileFiles:
    """Beside ``good``: a truncated copy, random bytes, a safetensors file whose metadata is not
    a charlm checkpoint's (and one with a corrupt model config), and a pickle renamed to
    ``.safetensors`` whose payload would create ``marker`` if it were ever unpickled."""
    data = good.read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "random.safetensors").write_bytes(os.urandom(4096))
    save_file({"w": torch.zeros(3)}, str(folder / "foreign.safetensors"), {"format": "pt"})
    meta = {
        "charlm.format": "charlm-checkpoint",
        "charlm.format_version": "1",
        "charlm.model_config": '{"arch": "no-such-arch", "vocab_size": -3}',
        "charlm.vocab": "[not json",
    }
    save_file({"w": torch.zeros(3)}, str(folder / "wrongmeta.safetensors"), meta)
    payload = pickle.dumps({"weights": _Marker(marker)})
    (folder / "pickled.safetensors").write_bytes(payload)
    # the same payload as a torch.save file (a zip holding data.pkl), also renamed
    torch.save({"weights": _Marker(marker)}, folder / "torchsave.safetensors")
    return HostileFiles(
        names={
            "truncated": "truncated file",
            "random": "random bytes",
            "foreign": "safetensors without charlm metadata",
            "wrongmeta": "charlm metadata that is invalid",
            "pickled": "a pickle renamed to .safetensors",
            "torchsave": "a torch.save zip renamed to .safetensors",
        },
        marker=marker,
    )


# ---------------------------------------------------------------------------- live servers
def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
