"""Weight averaging (``--ema``): the average itself, its swap into the model, the checkpoint
that keeps whichever weights validate better, resume, and the flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.base import CharLM
from models.checkpoint import load_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.scoring import score_texts
from models.vocab import CharVocab
from training.averaging import UPDATES_KEY, Validated, WeightAverage
from training.cli import train_main
from training.config import TrainConfig
from training.data import load_corpus
from training.evaluate import EvalResult, evaluate_docs, sample_text
from training.loop import Trainer
from training.report import metrics_path
from training.resume import load_resume, resume_path

from .conftest import tiny_config
from .test_loop import StopAt

REPO = Path(__file__).resolve().parents[2]


def _records(out: Path, kind: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in metrics_path(out).read_text().splitlines()]
    return [r for r in records if r["kind"] == kind]


def _tiny_lstm() -> CharLM:
    torch.manual_seed(0)
    config = ModelConfig(arch="lstm", vocab_size=12, embed_size=8, hidden_size=16, num_layers=1)
    return build_model(config)


def _train_a_little(model: torch.nn.Module, average: WeightAverage | None, steps: int) -> None:
    """A few AdamW steps on random ids, the average updated after each."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 12, (3, 10), generator=generator)
        logits, _ = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 12), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update()


def test_the_average_is_the_exponential_moving_average_with_its_warm_up() -> None:
    model = torch.nn.Linear(3, 2)
    decay = 0.5  # the warm-up's (1 + t) / (10 + t) reaches it at the ninth update
    average = WeightAverage(model, decay)
    expected = [p.detach().double().clone() for p in model.parameters()]
    generator = torch.Generator().manual_seed(0)
    decays = []
    for t in range(12):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        d = min(decay, (1 + t) / (10 + t))
        decays.append(average.current_decay())
        weights = [p.detach().double() for p in model.parameters()]
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights, strict=True)]
        average.update()
    assert decays[0] == pytest.approx(0.1) and decays[-1] == decay and decays[7] < decay
    assert average.updates == 12
    for got, want in zip(average.averages, expected, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-6)


def test_swap_evaluates_the_average_and_restores_the_raw_weights_exactly() -> None:
    model = _tiny_lstm()
    average = WeightAverage(model, 0.9)
    _train_a_little(model, average, 15)
    model.eval()
    docs = [np.arange(40) % 12]
    vocab = CharVocab("abcdefghij")  # and the two special ids: the model's 12
    raw = {name: p.detach().clone() for name, p in model.named_parameters()}
    pointers = [p.data_ptr() for p in model.parameters()]
    raw_sample = sample_text(model, vocab, 30)  # builds the fused inference step
    raw_figure = evaluate_docs(model, docs).nats_per_char
    # a model that holds the average from the start: what the swap must give
    reference = _tiny_lstm()
    with torch.no_grad():
        for p, a in zip(reference.parameters(), average.averages, strict=True):
            p.copy_(a)
    reference.eval()
    with average.swapped_in():
        for p, a in zip(model.parameters(), average.averages, strict=True):
            assert torch.equal(p, a)
        assert sample_text(model, vocab, 30) == sample_text(reference, vocab, 30)
        averaged_figure = evaluate_docs(model, docs).nats_per_char
        assert averaged_figure == pytest.approx(evaluate_docs(reference, docs).nats_per_char)
    assert averaged_figure != pytest.approx(raw_figure)  # the swap did change the weights
    for name, p in model.named_parameters():
        assert torch.equal(p, raw[name]), name  # bit for bit
    assert [p.data_ptr() for p in model.parameters()] == pointers  # the optimizer's tensors
    assert sample_text(model, vocab, 30) == raw_sample  # the cached step follows the weights
    assert evaluate_docs(model, docs).nats_per_char == raw_figure


def test_state_dict_round_trip_and_mismatch() -> None:
    model = _tiny_lstm()
    average = WeightAverage(model, 0.99)
    _train_a_little(model, average, 3)
    saved = {k: v.clone() for k, v in average.state_dict().items()}
    assert int(saved[UPDATES_KEY]) == 3
    other = WeightAverage(_tiny_lstm(), 0.99)
    other.load_state_dict(saved)
    assert other.updates == 3
    for a, b in zip(average.averages, other.averages, strict=True):
        assert torch.equal(a, b)
    wrong = dict(saved)
    wrong["extra.weight"] = wrong.pop(other.names[0])
    with pytest.raises(ValueError, match=f"missing: {other.names[0]}; unexpected: extra.weight"):
        other.load_state_dict(wrong)
    with pytest.raises(ValueError, match="must be in"):
        WeightAverage(model, 1.0)


def test_the_better_figure_counts() -> None:
    raw, better, worse = EvalResult(10.0, 10, 0), EvalResult(9.0, 10, 0), EvalResult(11.0, 10, 0)
    assert Validated(raw).weights == "raw" and Validated(raw).figures() == {}
    assert (Validated(raw, better).weights, Validated(raw, better).best) == ("ema", better)
    assert (Validated(raw, worse).weights, Validated(raw, worse).best) == ("raw", raw)
    assert Validated(raw, raw).weights == "raw"  # a tie keeps the raw weights
    assert Validated(raw, better).figures() == {
        "ema_val_nats": 0.9,
        "ema_val_bpc": better.bits_per_char,
        "weights": "ema",
    }


def test_the_setting_is_checked() -> None:
    with pytest.raises(ValueError, match=r"ema must be in \[0, 1\)"):
        TrainConfig(ema=1.0)
    with pytest.raises(ValueError, match=r"ema must be in \[0, 1\)"):
        TrainConfig(ema=-0.1)


def test_the_checkpoint_keeps_the_better_weights_and_says_which(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    out = tmp_path / "m.safetensors"
    trainer = Trainer(tiny_config(max_steps=60, eval_interval=15, ema=0.9), corpus, out)
    result = trainer.run()
    evals = _records(out, "eval")
    assert [r["step"] for r in evals] == [15, 30, 45, 60]
    for r in evals:  # both figures each time; the better one counts
        assert r["weights"] == ("ema" if r["ema_val_nats"] < r["val_nats"] else "raw")
    counted = [min(r["val_nats"], r["ema_val_nats"]) for r in evals]
    assert result.best_val_nats == min(counted)
    best = evals[counted.index(min(counted))]
    assert result.best_step == best["step"]
    # the checkpoint holds those weights, says which, and loads and scores like any other
    loaded = load_checkpoint(out)
    assert loaded.training["weights"] == best["weights"]
    assert loaded.training["ema_decay"] == 0.9 and loaded.training["step"] == best["step"]
    val_text = loaded.vocab.decode(corpus.val_docs[0].tolist())
    (score,) = score_texts(loaded.model, loaded.vocab, [val_text])
    assert score.nats_per_char == pytest.approx(result.best_val_nats, rel=1e-6)
    # either kind of weights can be the one kept: the average, or the raw weights
    average = trainer.stepper.average
    assert average is not None
    trainer.files.save_model("ema")
    kept = load_checkpoint(out)
    assert kept.training["weights"] == "ema" and kept.training["ema_updates"] == 60
    for name, a in zip(average.names, average.averages, strict=True):
        assert torch.equal(kept.model.state_dict()[name], a)
    trainer.files.save_model("raw")
    kept = load_checkpoint(out)
    assert kept.training["weights"] == "raw"
    for name, p in trainer.model.state_dict().items():
        assert torch.equal(kept.model.state_dict()[name], p)
    # a validation's sample is drawn from the weights it found better
    vocab, chars = corpus.vocab, trainer.config.sample_chars
    with average.swapped_in():
        from_average = sample_text(trainer.model, vocab, chars)
    from_raw = sample_text(trainer.model, vocab, chars)
    assert from_average != from_raw  # 60 steps apart enough for seed 0 to read differently
    assert trainer.files.sample("ema") == from_average and trainer.files.sample("raw") == from_raw


def test_averaging_never_changes_the_training(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    config = tiny_config(max_steps=30, eval_interval=10, dropout=0.1)
    plain, averaged = tmp_path / "plain.safetensors", tmp_path / "averaged.safetensors"
    off = Trainer(config, corpus, plain)
    assert off.stepper.average is None
    off.run()
    Trainer(config.replace(ema=0.9), corpus, averaged).run()
    # the same steps, the same raw weights, the same raw validation figures
    keys = ("step", "train_loss", "lr")
    assert [[r[k] for k in keys] for r in _records(plain, "train")] == [
        [r[k] for k in keys] for r in _records(averaged, "train")
    ]
    a, b = load_resume(resume_path(plain)), load_resume(resume_path(averaged))
    for name, tensor in a.model.items():
        assert torch.equal(tensor, b.model[name]), name
    keys = ("step", "val_nats", "val_chars")
    assert [[r[k] for k in keys] for r in _records(plain, "eval")] == [
        [r[k] for k in keys] for r in _records(averaged, "eval")
    ]
    # without averaging: no average, no figures of one, and the checkpoint holds the raw weights
    assert a.average == {} and set(b.average) == {*off.stepper.model.state_dict(), UPDATES_KEY}
    assert not any("ema_val_nats" in r or "weights" in r for r in _records(plain, "eval"))
    assert load_checkpoint(plain).training["weights"] == "raw"
    assert "ema_decay" not in load_checkpoint(plain).training


def test_a_resumed_run_keeps_the_average_exactly(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    config = tiny_config(max_steps=40, eval_interval=15, dropout=0.2, state_reset=0.1, ema=0.95)
    whole = tmp_path / "whole.safetensors"
    Trainer(config, corpus, whole).run()

    parts = tmp_path / "parts.safetensors"
    stopper = StopAt(23)
    first = Trainer(config, corpus, parts, reporter=stopper)
    stopper.trainer = first
    assert first.run().step == 23
    assert int(load_resume(resume_path(parts)).average[UPDATES_KEY]) == 23
    second = Trainer(config, corpus, parts, resume=True)
    assert second.run().step == 40

    a, b = load_resume(resume_path(whole)).average, load_resume(resume_path(parts)).average
    assert set(a) == set(b) and int(a[UPDATES_KEY]) == 40
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name  # bit for bit
    assert load_checkpoint(whole).training["weights"] == load_checkpoint(parts).training["weights"]
    for name, tensor in load_checkpoint(whole).model.state_dict().items():
        assert torch.equal(tensor, load_checkpoint(parts).model.state_dict()[name]), name


def test_a_run_without_an_average_resumes_with_one_from_its_weights(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    out = tmp_path / "m.safetensors"
    Trainer(tiny_config(max_steps=10, eval_interval=5), corpus, out).run()
    assert load_resume(resume_path(out)).average == {}  # as a file from before averaging
    resumed = Trainer(tiny_config(max_steps=20, eval_interval=5, ema=0.9), corpus, out, resume=True)
    average = resumed.stepper.average
    assert average is not None and average.updates == 0
    for p, a in zip(resumed.model.parameters(), average.averages, strict=True):
        assert torch.equal(p, a)
    resumed.run()
    saved = load_resume(resume_path(out))
    assert int(saved.average[UPDATES_KEY]) == 10
    assert "ema_val_nats" in _records(out, "eval")[-1]


def test_the_flag_trains_with_an_average(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    out = tmp_path / "m.safetensors"
    code = train_main(
        [
            "--data", str(corpus_file), "--out", str(out), "--cache-dir", str(cache_dir),
            "--preset", "tiny", "--hidden-size", "32", "--batch-size", "4", "--seq-len", "16",
            "--max-steps", "20", "--eval-interval", "10", "--sample-chars", "0",
            "--device", "cpu", "--ema", "0.9",
        ]
    )  # fmt: skip
    assert code == 0
    loaded = load_checkpoint(out)
    assert loaded.train_config["ema"] == 0.9 and loaded.training["ema_decay"] == 0.9
    assert loaded.training["weights"] in ("ema", "raw")
    assert all("ema_val_nats" in r for r in _records(out, "eval"))


@pytest.mark.slow
def test_two_processes_keep_one_average(tmp_path: Path, corpus_file: Path, cache_dir: Path) -> None:
    out = tmp_path / "ddp" / "m.safetensors"
    args = [
        "--data", str(corpus_file), "--out", str(out), "--cache-dir", str(cache_dir),
        "--preset", "tiny", "--hidden-size", "32", "--batch-size", "4", "--seq-len", "16",
        "--sample-chars", "0", "--device", "cpu", "--max-steps", "12", "--eval-interval", "6",
        "--ema", "0.9",
    ]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "training", *args]  # fmt: skip
    env = {**os.environ, "CHARLM_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = load_resume(resume_path(out))
    assert int(saved.average[UPDATES_KEY]) == 12
    assert [("ema_val_nats" in r) for r in _records(out, "eval")] == [True, True]
    loaded = load_checkpoint(out)
    assert loaded.training["world_size"] == 2 and loaded.training["ema_decay"] == 0.9
    # one process of 8 streams resumes the run of 2 x 4 with the same average
    config = TrainConfig.from_dict(saved.info["train_config"]).replace(batch_size=8)
    resumed = Trainer(config, load_corpus([str(corpus_file)], cache_dir=cache_dir), None)
    resumed.load_state_dict(saved)
    average = resumed.stepper.average
    assert average is not None and average.updates == 12
    for name, tensor in zip(average.names, average.averages, strict=True):
        assert torch.equal(tensor, saved.average[name])
