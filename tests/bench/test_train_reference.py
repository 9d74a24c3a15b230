"""The reference loop of ``bench.train``: its schedule, dropout, optimizer and arithmetic."""

from __future__ import annotations

import pytest
import torch

from bench.train_reference import ReferenceTrainer, cosine_lr


def test_the_rate_falls_along_a_cosine_from_peak_to_final() -> None:
    assert cosine_lr(2e-3, 2e-4, 0.0) == pytest.approx(2e-3)
    assert cosine_lr(2e-3, 2e-4, 0.5) == pytest.approx(1.1e-3)
    assert cosine_lr(2e-3, 2e-4, 1.0) == pytest.approx(2e-4)
    assert cosine_lr(2e-3, 2e-4, 3.0) == pytest.approx(2e-4), "past the budget it stays final"


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_the_reference_trains_with_dropout_fused_adamw_and_the_given_arithmetic(
    tiny_corpus: str, dtype: torch.dtype | None
) -> None:
    trainer = ReferenceTrainer(
        tiny_corpus, batch_size=2, seq_len=8, lr=(2e-3, 2e-4), budget=10.0,
        autocast_dtype=dtype, seed=0,
    )  # fmt: skip
    assert trainer.model.drop.p == 0.1 and trainer.model.lstm.dropout == 0.1
    assert trainer.optimizer.defaults["fused"] is True
    trainer.advance(1e-9)  # one step
    assert trainer.step == 1
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(2e-3, rel=1e-3), "the first step runs at the peak rate"
    assert 0 < trainer.evaluate() < 10
