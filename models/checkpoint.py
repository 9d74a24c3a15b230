"""The checkpoint format: one safetensors file, weights plus JSON metadata. Never pickle.

Metadata keys (all strings, as safetensors requires):

- ``charlm.format`` = ``charlm-checkpoint`` and ``charlm.format_version``
- ``charlm.model_config``: the ``ModelConfig`` as JSON; the model is rebuilt through the registry
- ``charlm.vocab``: the ``CharVocab`` as JSON
- ``charlm.train_config``: the training configuration (JSON object, free-form for this module)
- ``charlm.training``: the training summary (step, best validation bpc, corpus fingerprint, ...)
- ``charlm.created``: ISO 8601 UTC time of the write
- ``charlm.aliases``: weights that share storage with another (tied weights), stored once
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from models.base import CharLM
from models.config import ModelConfig
from models.files import atomic_write_bytes
from models.registry import build_model, model_class
from models.vocab import CharVocab, VocabError

logger = logging.getLogger(__name__)

FORMAT_NAME = "charlm-checkpoint"
FORMAT_VERSION = 1
_PREFIX = "charlm."


class CheckpointError(Exception):
    """A checkpoint that cannot be read: missing, truncated, corrupt, foreign or inconsistent."""


@dataclass
class LoadedCheckpoint:
    path: Path
    model: CharLM
    vocab: CharVocab
    config: ModelConfig
    train_config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    created: str = ""


def save_checkpoint(
    path: str | os.PathLike[str],
    model: CharLM,
    vocab: CharVocab,
    *,
    train_config: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> None:
    """Write the model and its metadata atomically (see ``models.files.atomic_write_bytes``)."""
    if len(vocab) != model.config.vocab_size:
        raise ValueError(
            f"vocabulary has {len(vocab)} entries but the model expects {model.config.vocab_size}"
        )
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    owners: dict[tuple[int, tuple[int, ...]], str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in owners and tensor.numel() > 0:
            aliases[name] = owners[key]
            continue
        owners[key] = name
        value = tensor.detach().to("cpu")
        if value.is_floating_point():
            value = value.float()
        tensors[name] = value.contiguous()
    metadata = {
        _PREFIX + "format": FORMAT_NAME,
        _PREFIX + "format_version": str(FORMAT_VERSION),
        _PREFIX + "model_config": model.config.to_json(),
        _PREFIX + "vocab": vocab.to_json(),
        _PREFIX + "train_config": json.dumps(train_config or {}, sort_keys=True),
        _PREFIX + "training": json.dumps(training or {}, sort_keys=True),
        _PREFIX + "created": datetime.now(UTC).isoformat(timespec="seconds"),
        _PREFIX + "aliases": json.dumps(aliases, sort_keys=True),
    }
    atomic_write_bytes(path, safetensors_save(tensors, metadata=metadata))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The checkpoint's metadata, checked for format and version, without reading weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not os.access(path, os.R_OK):
        # safetensors reports this as "No such file or directory"; name the real cause, which
        # is common when a server runs as another user than the one that wrote the file
        info = path.stat()
        raise CheckpointError(
            f"{path}: permission denied (mode {info.st_mode & 0o777:o}, owner uid {info.st_uid},"
            f" this process runs as uid {os.geteuid()}); make it readable, e.g. chmod a+r"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for any bad header
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if metadata.get(_PREFIX + "format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: safetensors file is not a charlm checkpoint")
    version = metadata.get(_PREFIX + "format_version", "")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported "
            f"(this charlm reads version {FORMAT_VERSION})"
        )
    return metadata


def _json_field(path: Path, metadata: dict[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[_PREFIX + key])
    except KeyError:
        raise CheckpointError(f"{path}: checkpoint metadata lacks {key!r}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint metadata {key!r} is not JSON ({exc})") from exc


def _untied_if_unsupported(path: Path, config: ModelConfig) -> ModelConfig:
    """``config`` without a ``tie_weights`` its architecture cannot apply. Such a claim comes from
    a checkpoint written before building the model refused it; the weights were never tied, so
    they load as they were trained."""
    try:
        can_tie = model_class(config.arch).can_tie_weights
    except ValueError:  # an unknown architecture: building the model names it
        return config
    if not config.tie_weights or can_tie:
        return config
    logger.warning(
        "%s: architecture %r does not tie weights; loading it untied, as it was trained",
        path,
        config.arch,
    )
    return config.replace(tie_weights=False)


def load_checkpoint(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> LoadedCheckpoint:
    """Rebuild the model through the registry and load its weights strictly, in eval mode."""
    path = Path(path)
    metadata = read_metadata(path)
    try:
        config = ModelConfig.from_dict(_json_field(path, metadata, "model_config"))
        vocab = CharVocab.from_dict(_json_field(path, metadata, "vocab"))
    except (TypeError, ValueError, VocabError) as exc:
        raise CheckpointError(f"{path}: invalid model metadata ({exc})") from exc
    if len(vocab) != config.vocab_size:
        raise CheckpointError(
            f"{path}: vocabulary has {len(vocab)} entries, model config says {config.vocab_size}"
        )
    aliases = _json_field(path, metadata, "aliases")
    config = _untied_if_unsupported(path, config)
    try:
        model = build_model(config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: cannot build the model ({exc})") from exc
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(f"{path}: weights are unreadable or truncated ({exc})") from exc
    for alias, owner in dict(aliases).items():
        if owner not in tensors:
            raise CheckpointError(f"{path}: alias {alias!r} points at missing tensor {owner!r}")
        tensors[alias] = tensors[owner]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the {config.arch!r} architecture"
            f" (missing: {missing or 'none'}; unexpected: {unexpected or 'none'})"
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)},"
                f" expected {tuple(expected[name].shape)}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values")
    model.load_state_dict(tensors, strict=True)
    model.to(device).eval()
    train_config = _json_field(path, metadata, "train_config")
    training = _json_field(path, metadata, "training")
    if not isinstance(train_config, dict) or not isinstance(training, dict):
        raise CheckpointError(f"{path}: train_config and training metadata must be JSON objects")
    return LoadedCheckpoint(
        path=path,
        model=model,
        vocab=vocab,
        config=config,
        train_config=train_config,
        training=training,
        created=metadata.get(_PREFIX + "created", ""),
    )
