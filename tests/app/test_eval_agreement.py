"""/v1/score, ``charlm-eval`` and training validation agree on the same text (one scoring
convention everywhere), for a left-to-right model and for both bidirectional ones.

The checkpoints come from ``charlm-train`` and ``charlm-eval`` runs in this process: nothing is
skipped when the console scripts are not installed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from models.checkpoint import load_checkpoint
from tests.app.conftest import make_settings
from tests.support import make_corpus
from training.checkpoint_cli import eval_main
from training.cli import train_main

ARCHS = ["lstm", "bilstm", "bigru"]
TEXT = "alpha 1 ahpla.\nbeta 2 ateb.\ngamma Ω ammag.\n"
# longer than one scoring chunk (2,048 characters): a bidirectional model reads it in pieces
LONG_TEXT = make_corpus(200)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One checkpoint per architecture, trained briefly by charlm-train with its own validation
    file (``val.txt``)."""
    path = tmp_path_factory.mktemp("agreement")
    (path / "train.txt").write_text(make_corpus(), encoding="utf-8")
    (path / "val.txt").write_text(make_corpus(8)[::-1], encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARLM_NUM_THREADS", "1")  # the CLIs choose their own thread count
        for arch in ARCHS:
            args = ["--data", str(path / "train.txt"), "--val-data", str(path / "val.txt")]
            args += ["--out", str(path / f"{arch}.safetensors"), "--arch", arch]
            args += ["--cache-dir", str(path / "cache"), "--preset", "tiny", "--device", "cpu"]
            args += ["--hidden-size", "32", "--batch-size", "4", "--seq-len", "16"]
            args += ["--max-steps", "40", "--eval-interval", "20", "--sample-chars", "0"]
            assert train_main(args) == 0
        yield path


@pytest.fixture(scope="module")
def client(folder: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(folder))) as test_client:
        yield test_client


def charlm_eval(checkpoint: Path, text_file: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(checkpoint), "--data", str(text_file)]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("arch", ARCHS)
def test_score_matches_charlm_eval(
    arch: str,
    client: TestClient,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHARLM_NUM_THREADS", "1")
    causal = arch == "lstm"
    for name, text in (("short", TEXT), ("long", LONG_TEXT)):
        path = tmp_path / f"{name}.txt"
        path.write_bytes(text.encode("utf-8"))
        report = charlm_eval(folder / f"{arch}.safetensors", path, capsys)
        response = client.post("/v1/score", json={"model": arch, "texts": [text]})
        assert response.status_code == 200, response.text
        assert response.json()["mode"] == ("causal" if causal else "pll")
        assert report["likelihood"] == ("exact" if causal else "pseudo")
        served = response.json()["results"][0]
        assert report["num_chars"] == served["num_chars"] == len(text)
        assert report["num_unknown"] == served["num_unknown"] == text.count("Ω")
        assert math.isclose(report["bits_per_char"], served["bits_per_char"], rel_tol=1e-5)
        assert math.isclose(report["perplexity"], served["perplexity"], rel_tol=1e-5)
        assert math.isclose(
            -report["nats_per_char"] * report["num_chars"], served["logprob"], rel_tol=1e-5
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_training_validation_matches_score(arch: str, client: TestClient, folder: Path) -> None:
    """The kept checkpoint's validation figure is /v1/score's on the validation text."""
    training = load_checkpoint(folder / f"{arch}.safetensors").training
    text = (folder / "val.txt").read_text(encoding="utf-8")
    response = client.post("/v1/score", json={"model": arch, "texts": [text]})
    served = response.json()["results"][0]
    assert training["val_chars"] == served["num_chars"] == len(text)
    # the same computation on the same weights; dropping the last character of the right
    # context moved the figure by about 1e-5
    assert math.isclose(
        training["best_val_nats_per_char"] * len(text), -served["logprob"], rel_tol=1e-6
    )
