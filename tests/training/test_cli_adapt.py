"""``charlm-eval --adapt``: adaptive scoring of files, the same figures as models.adapt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from models.adapt import DEFAULT_METHOD, DEFAULT_SEGMENT, AdaptSettings, adaptive_score_texts
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from tests.support import make_corpus, train_tiny_model
from training.checkpoint_cli import eval_main

REPEATED = "gamma delta beta alpha. " * 30


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adapt-eval")
    model, vocab = train_tiny_model(make_corpus(), steps=150)
    save_checkpoint(folder / "tiny.safetensors", model, vocab)
    torch.manual_seed(0)
    config = ModelConfig("bigru", len(vocab), embed_size=8, hidden_size=16)
    save_checkpoint(folder / "bi.safetensors", build_model(config).eval(), vocab)
    (folder / "repeated.txt").write_text(REPEATED, encoding="utf-8")
    return {
        "tiny": folder / "tiny.safetensors",
        "bi": folder / "bi.safetensors",
        "text": folder / "repeated.txt",
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    assert eval_main(list(argv)) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_adapt_lowers_the_loss_and_reports_its_settings(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--checkpoint", str(files["tiny"]), "--data", str(files["text"])]
    static = run(capsys, *common)
    adapted = run(capsys, *common, "--adapt", "--adapt-rate", "0.01", "--adapt-segment", "16")
    assert "adapt" not in static
    assert adapted["adapt"] == {"rate": 0.01, "segment": 16, "method": DEFAULT_METHOD}
    assert adapted["num_chars"] == static["num_chars"] == len(REPEATED)
    assert adapted["bits_per_char"] < static["bits_per_char"] - 0.5
    loaded = load_checkpoint(files["tiny"])
    settings = AdaptSettings(rate=0.01, segment=16)
    (want,) = adaptive_score_texts(loaded.model, loaded.vocab, [REPEATED], settings=settings)
    assert adapted["nats_per_char"] == pytest.approx(want.nats_per_char, rel=1e-6)
    defaults = run(capsys, *common, "--adapt")
    assert defaults["adapt"]["segment"] == DEFAULT_SEGMENT


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--adapt-rate", "0.001"], "--adapt-rate and --adapt-segment need --adapt"),
        (["--adapt", "--adapt-rate", "0.5"], "rate must be in"),
        (["--adapt", "--adapt-segment", "2"], "segment must be in"),
    ],
)
def test_bad_adapt_flags_exit_2_naming_the_problem(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        eval_main(["--checkpoint", str(files["tiny"]), "--data", str(files["text"]), *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_model_that_cannot_adapt_is_refused(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        eval_main(["--checkpoint", str(files["bi"]), "--data", str(files["text"]), "--adapt"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "charlm-eval: error:" in err and "both sides" in err
