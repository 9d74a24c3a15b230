"""The resume file: everything needed to continue a run exactly, as safetensors. Never pickle.

Beside ``X.safetensors`` (the best model, what the server loads) a run keeps
``X.resume.safetensors`` with:

- tensors ``model/<name>`` (the current weights), ``optim/<param index>/<key>`` (optimizer
  state), ``state/<i>`` (the carried recurrent state of every stream, all ranks stacked) and
  ``rng/torch`` (``rng/cuda`` on a GPU): the exact bit patterns, so the continuation is exact;
- with weight averaging (``--ema``), tensors ``average/<name>`` (``training.averaging``); a file
  without them continues with an average started from its weights;
- metadata ``charlm.resume``: JSON with the training config, step, data position, schedule clock,
  best validation loss, early-stopping counter, the optimizer's non-tensor settings, the corpus
  fingerprint and the vocabulary.

The file is written atomically (``models.files.atomic_write_bytes``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from models.files import atomic_write_bytes

RESUME_FORMAT = "charlm-resume"
RESUME_VERSION = 1
_META_KEY = "charlm.resume"


class ResumeError(Exception):
    """A resume file that is missing, unreadable or belongs to another run."""


def resume_path(checkpoint: str | os.PathLike[str]) -> Path:
    """``dir/name.safetensors`` -> ``dir/name.resume.safetensors``."""
    path = Path(checkpoint)
    stem = path.name.removesuffix(".safetensors")
    return path.with_name(f"{stem}.resume.safetensors")


@dataclass
class ResumeState:
    """What a run carries from one process to the next."""

    info: dict[str, Any]  # JSON-able: config, step, position, clock, best, ...
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch optimizer state_dict
    carried: tuple[torch.Tensor, ...] = ()
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    algorithm: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. RTRL's sensitivity
    average: dict[str, torch.Tensor] = field(default_factory=dict)  # the weight average's


def check_same_run(
    info: dict[str, Any], fingerprint: str, vocab: dict[str, Any], batch_size: int, world_size: int
) -> None:
    """A ``ResumeError`` unless ``info`` (a resume file's) is a state of the run on this data
    (``fingerprint``), with this vocabulary, training as many streams (``batch_size`` per
    process x ``world_size`` processes) as it did: any number of processes will do."""
    if info["corpus_fingerprint"] != fingerprint:
        raise ResumeError("the training data differ from the data the run started with")
    if info["vocab"] != vocab:
        raise ResumeError("the vocabulary differs from the one the run started with")
    saved_batch = int(info["train_config"]["batch_size"])
    streams = int(info["world_size"]) * saved_batch
    if streams != world_size * batch_size:
        raise ResumeError(
            f"the run trained {streams} streams ({saved_batch} per"
            f" process x {info['world_size']} processes); resume it with a batch size per"
            f" process x processes of {streams}, not {batch_size} x {world_size}"
        )


def _split_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer tensors to flat names; everything else (JSON-able) kept aside."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _stored(value: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """``value`` as the file stores it: on the CPU, contiguous, and a copy where it shares memory
    with a tensor already stored (tied weights), which safetensors refuses to write twice."""
    tensor = value.detach().to("cpu").contiguous()
    if tensor.untyped_storage().data_ptr() in seen:
        tensor = tensor.clone()
    seen.add(tensor.untyped_storage().data_ptr())
    return tensor


def save_resume(path: str | os.PathLike[str], resume: ResumeState) -> None:
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, value in resume.model.items():
        tensors[f"model/{name}"] = _stored(value, seen)
    optim_tensors, optim_rest = _split_optimizer(resume.optimizer)
    tensors.update(optim_tensors)
    for i, value in enumerate(resume.carried):
        tensors[f"state/{i}"] = _stored(value, seen)
    for name, value in resume.rng.items():
        tensors[f"rng/{name}"] = _stored(value, seen)
    for name, value in resume.algorithm.items():
        tensors[f"algorithm/{name}"] = _stored(value, seen)
    for name, value in resume.average.items():
        tensors[f"average/{name}"] = _stored(value, seen)
    info = {
        "format": RESUME_FORMAT,
        "version": RESUME_VERSION,
        **resume.info,
        "optimizer": optim_rest,
        "num_carried": len(resume.carried),
    }
    metadata = {_META_KEY: json.dumps(info, sort_keys=True)}
    atomic_write_bytes(path, safetensors_save(tensors, metadata=metadata))


def load_resume(path: str | os.PathLike[str]) -> ResumeState:
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"{path}: no resume file (was the run started with this --out?)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own types for bad headers and truncation
        raise ResumeError(f"{path}: unreadable resume file ({exc})") from exc
    try:
        info = json.loads(metadata[_META_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ResumeError(f"{path}: not a charlm resume file") from exc
    if info.get("format") != RESUME_FORMAT or info.get("version") != RESUME_VERSION:
        raise ResumeError(f"{path}: resume format {info.get('version')!r} is not supported")
    model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    rng = {k.removeprefix("rng/"): v for k, v in tensors.items() if k.startswith("rng/")}
    algorithm = {
        k.removeprefix("algorithm/"): v for k, v in tensors.items() if k.startswith("algorithm/")
    }
    average = {
        k.removeprefix("average/"): v for k, v in tensors.items() if k.startswith("average/")
    }
    carried = tuple(tensors[f"state/{i}"] for i in range(int(info["num_carried"])))
    rest = info.pop("optimizer")
    optim_state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, index, key = name.split("/", 2)
            optim_state.setdefault(int(index), {})[key] = value
    for index, entry in rest["scalars"].items():
        optim_state.setdefault(int(index), {}).update(entry)
    optimizer = {"state": optim_state, "param_groups": rest["param_groups"]}
    return ResumeState(
        info=info,
        model=model,
        optimizer=optimizer,
        carried=carried,
        rng=rng,
        algorithm=algorithm,
        average=average,
    )
