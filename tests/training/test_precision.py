from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.config import TrainConfig
from training.data import load_corpus
from training.loop import Trainer
from training.precision import autocast_dtype, cpu_has_bf16_matmul

from .conftest import tiny_config

CPU = torch.device("cpu")


def test_fp32_never_autocasts_and_bf16_always_does() -> None:
    assert autocast_dtype("fp32", CPU) is None
    assert autocast_dtype("bf16", CPU) is torch.bfloat16


def test_auto_follows_the_cpu_bf16_hardware() -> None:
    expected = torch.bfloat16 if cpu_has_bf16_matmul() else None
    assert autocast_dtype("auto", CPU) is expected


def test_unknown_precision_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp8", CPU)
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")
    with pytest.raises(ValueError, match="bptt algorithm only"):
        TrainConfig(precision="bf16", algorithm="rtrl", arch="rnn")


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_training_step_computes_in_the_configured_precision(
    tmp_path: Path, corpus_file: Path, cache_dir: Path, precision: str, dtype: torch.dtype
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    trainer = Trainer(
        tiny_config(max_steps=3, precision=precision), corpus, tmp_path / "m.safetensors"
    )
    seen: list[torch.dtype] = []
    head = trainer.model.head
    assert isinstance(head, torch.nn.Module)
    head.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    trainer.run()
    # training steps ran in ``dtype``; the weights stay float32 and evaluation runs in float32
    assert seen[0] == dtype
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert trainer.progress.best_val < float("inf")
