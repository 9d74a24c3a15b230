import math

import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.esn import EchoStateLM
from models.registry import build_model
from models.scoring import score_id_sequences
from models.vocab import CharVocab
from training.esn import (
    accumulate_normal_equations,
    design_matrix,
    fit_calibration,
    fit_esn,
    fit_logit_scale,
    solve_ridge,
)


def esn(vocab_size: int, hidden: int = 20, **options: object) -> EchoStateLM:
    cfg = ModelConfig(arch="esn", vocab_size=vocab_size, hidden_size=hidden, options=options)
    model = build_model(cfg)
    assert isinstance(model, EchoStateLM)
    return model


def test_ridge_readout_equals_direct_least_squares() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 8, size=403)
    model = esn(8, hidden=20, seed=1)
    ridge = 1e-3
    gram, cross, count = accumulate_normal_equations(model, ids, streams=4, chunk=16, washout=5)
    chunked = solve_ridge(gram, cross, count, ridge)
    # direct: every stream in one go, the whole design matrix held, solved by lstsq
    rows = torch.from_numpy(ids[:400].reshape(4, 100))
    with torch.no_grad():
        states, _ = model.run_reservoir(rows[:, :-1])
        z = design_matrix(model, states[:, 5:].reshape(-1, 20), rows[:, 5:-1].reshape(-1)).double()
    y = torch.nn.functional.one_hot(rows[:, 6:].reshape(-1), 8).double()
    assert count == z.shape[0] == 4 * 94
    penalty = torch.eye(z.shape[1], dtype=torch.float64)[:-1] * math.sqrt(ridge * count)
    direct = torch.linalg.lstsq(
        torch.cat([z, penalty]), torch.cat([y, torch.zeros(z.shape[1] - 1, 8).double()])
    ).solution
    torch.testing.assert_close(chunked, direct, atol=1e-6, rtol=1e-5)


def test_logit_scale_minimises_validation_cross_entropy() -> None:
    torch.manual_seed(0)
    scores = torch.randn(500, 6)
    targets = torch.where(torch.rand(500) < 0.6, scores.argmax(1), torch.randint(0, 6, (500,)))
    best = fit_logit_scale(scores, targets)

    def loss(s: float) -> float:
        return float(torch.nn.functional.cross_entropy(s * scores.double(), targets))

    assert best > 0
    for other in (best * 0.9, best * 1.1, best + 0.05, best - 0.05):
        assert loss(best) <= loss(other)
    scale, offsets = fit_calibration(scores, targets)

    def loss_with(s: float, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(s * scores + b, targets))

    assert loss_with(scale, offsets) <= loss(best) + 1e-9
    nudge = torch.zeros(6)
    nudge[2] = 0.05
    for s, b in ((scale * 1.05, offsets), (scale, offsets + nudge), (scale, offsets - nudge)):
        assert loss_with(scale, offsets) <= loss_with(s, b)


@pytest.mark.parametrize("ridge", [1e-5, 1e-3])
def test_fit_gives_a_calibrated_model_that_beats_unigrams(tiny_corpus: str, ridge: float) -> None:
    vocab = CharVocab.from_text(tiny_corpus)
    ids = vocab.encode_array(tiny_corpus).astype(np.int64)
    split = int(len(ids) * 0.9)
    model = esn(len(vocab), hidden=120, ridge=ridge, leak_rate=0.7)
    fit = fit_esn(model, ids[:split], ids[split:], streams=8, chunk=64, washout=20)
    counts = np.bincount(ids[:split], minlength=len(vocab)) + 1
    probs = counts / counts.sum()
    unigram_bpc = float(-np.log2(probs[ids[split:]]).mean())
    assert fit.val_bpc < 0.6 * unigram_bpc
    assert fit.logit_scale > 1.0
    assert float(model.logit_scale) == pytest.approx(fit.logit_scale)
    # the model's own forward gives the same figure through the scoring path, within the
    # difference of starting one stream at BOS instead of several mid-text
    (score,) = score_id_sequences(model, [ids[split:]])
    assert score.bits_per_char == pytest.approx(fit.val_bpc, abs=0.15)
    assert fit.to_dict()["algorithm"] == "esn-ridge"


def test_charlm_train_arch_esn_fits_and_saves(tiny_corpus: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from models.checkpoint import load_checkpoint
    from training.cli import train_main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_corpus * 3, encoding="utf-8")
    out = tmp_path / "esn.safetensors"
    args = ["--data", str(corpus), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    args += ["--arch", "esn", "--hidden-size", "100", "--batch-size", "8", "--seq-len", "64"]
    args += ["--arch-option", "leak_rate=0.7"]
    assert train_main(args) == 0
    printed = capsys.readouterr().out
    assert "esn: ridge readout" in printed and "bits/char" in printed
    loaded = load_checkpoint(out)
    assert loaded.config.arch == "esn" and loaded.config.options == {"leak_rate": 0.7}
    summary = loaded.training
    assert summary["algorithm"] == "esn-ridge"
    assert summary["best_val_bits_per_char"] < 2.5  # uniform would be log2(vocab) ~ 4.6
    assert float(loaded.model.logit_scale) == pytest.approx(summary["logit_scale"])
    # the default preset, auto, turns on weight averaging for the models it sizes, not here
    assert loaded.train_config["preset"] == "auto" and loaded.train_config["ema"] == 0.0


def test_charlm_train_rejects_an_algorithm_for_esn(tiny_corpus: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from training.cli import train_main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_corpus, encoding="utf-8")
    args = ["--data", str(corpus), "--out", str(tmp_path / "x.safetensors")]
    args += ["--cache-dir", str(tmp_path / "cache"), "--arch", "esn", "--algorithm", "rtrl"]
    with pytest.raises(SystemExit) as exc:
        train_main(args)
    assert exc.value.code == 2


def test_charlm_train_refuses_weight_averaging_for_esn(tiny_corpus: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from training.cli import train_main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_corpus, encoding="utf-8")
    out = tmp_path / "x.safetensors"
    args = ["--data", str(corpus), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit) as exc:
        train_main([*args, "--arch", "esn", "--ema", "0.999"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "charlm-train: error: architecture 'esn' does not support ema (got 0.999)"
    )
    assert not out.exists()
