"""/v1/score and ``charlm-eval`` agree on the same text (one scoring convention everywhere)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHARLM_EVAL = Path(sys.executable).parent / "charlm-eval"


def test_score_matches_charlm_eval(client: Any, tiny_checkpoint: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("training.cli") is None or not CHARLM_EVAL.exists():
        pytest.skip("charlm-eval is not installed (training.cli missing)")
    text = "alpha 1 ahpla.\nbeta 2 ateb.\ngamma Ω ammag.\n"
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    result = subprocess.run(
        [str(CHARLM_EVAL), "--checkpoint", str(tiny_checkpoint), "--data", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout)
    served = client.post("/v1/score", json={"texts": [text]}).json()["results"][0]
    assert report["num_chars"] == served["num_chars"] == len(text)
    assert report["num_unknown"] == served["num_unknown"] == 1
    assert math.isclose(report["bits_per_char"], served["bits_per_char"], rel_tol=1e-5)
    assert math.isclose(report["perplexity"], served["perplexity"], rel_tol=1e-5)
    assert math.isclose(
        -report["nats_per_char"] * report["num_chars"], served["logprob"], rel_tol=1e-5
    )
