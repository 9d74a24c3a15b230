"""Shared fixtures: tiny corpora and models built inside the tests; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support import make_corpus

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    # tests run beside each other on small machines; tiny models gain nothing from more threads
    torch.set_num_threads(1)


@pytest.fixture
def tiny_corpus() -> str:
    """A small generated text with structure a model can learn in a few hundred steps."""
    return make_corpus(200)
