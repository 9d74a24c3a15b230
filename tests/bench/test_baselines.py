"""The bare baselines hold the served model's weights and sample with the plain library."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.baselines import load_bare_lstm, sampling_loop
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.vocab import CharVocab


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(3)
    model = build_model(ModelConfig("lstm", 20, embed_size=8, hidden_size=16, num_layers=2))
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, CharVocab(list("abcdefghijklmnopqr")))
    return path


def test_the_bare_model_gives_the_served_models_logits(checkpoint: Path) -> None:
    served = load_checkpoint(checkpoint).model.eval()
    bare = load_bare_lstm(checkpoint)
    assert bare.rnn.num_layers == 2 and bare.rnn.hidden_size == 16
    ids = torch.randint(0, 20, (3, 11), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, _ = served(ids)
        got, _ = bare(ids)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_the_sampling_loop_reports_its_batch_and_a_positive_rate(checkpoint: Path) -> None:
    before = torch.backends.mkldnn.enabled
    for setting in (True, False):
        torch.backends.mkldnn.enabled = setting
        try:
            timing = sampling_loop(load_bare_lstm(checkpoint), batch_size=5, steps=4, warmup=1)
            assert torch.backends.mkldnn.enabled is setting, "the oneDNN setting is given back"
        finally:
            torch.backends.mkldnn.enabled = before
        assert timing.batch_size == 5 and timing.chars_per_s > 0
        assert timing.seconds_per_step == pytest.approx(5 / timing.chars_per_s)
