"""Helpers for the training tests: tiny corpora written to disk and small configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import TrainConfig, config_from_preset


@pytest.fixture
def corpus_file(tmp_path: Path, tiny_corpus: str) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(tiny_corpus * 3, encoding="utf-8")
    return path


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _one_thread_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    # the CLIs choose their own thread count; in tests they share the machine
    monkeypatch.setenv("CHARLM_NUM_THREADS", "1")


def tiny_config(**overrides: object) -> TrainConfig:
    """A model small enough to train a few hundred steps in seconds on one thread."""
    values: dict[str, object] = {
        "embed_size": 16,
        "hidden_size": 48,
        "num_layers": 1,
        "seq_len": 24,
        "batch_size": 4,
        "lr": 1e-2,
        "warmup_steps": 5,
        "eval_interval": 50,
        "log_interval": 1,
        "sample_chars": 20,
        "device": "cpu",
    }
    values.update(overrides)
    return config_from_preset("tiny", **values)
