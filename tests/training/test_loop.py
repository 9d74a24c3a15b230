from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import training.validation
from models.checkpoint import load_checkpoint
from models.scoring import score_texts
from training.data import load_corpus
from training.evaluate import evaluate_docs
from training.loop import Trainer
from training.report import Reporter, metrics_path, plot_path
from training.resume import ResumeError, load_resume, resume_path

from .conftest import tiny_config


def _losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in metrics_path(out).read_text().splitlines()]
    return [r["train_loss"] for r in records if r["kind"] == "train"]


class StopAt(Reporter):
    """Asks the trainer to stop after ``step``, the way SIGINT does."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.trainer: Trainer | None = None

    def train(self, record: dict[str, Any]) -> None:
        if record["step"] >= self.step and self.trainer is not None:
            self.trainer.stop.requested = True


def test_few_hundred_steps_learn_far_below_uniform(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    config = tiny_config(max_steps=300, eval_interval=100)
    out = tmp_path / "m.safetensors"
    result = Trainer(config, corpus, out).run()
    uniform = math.log(len(corpus.vocab))
    assert result.stop_reason == "max_steps" and result.step == 300
    assert result.best_val_nats < 0.4 * uniform, (result.best_val_nats, uniform)
    assert _losses(out)[-1] < 0.4 * uniform
    # the kept checkpoint is the best one, and scores the validation text as evaluation did
    loaded = load_checkpoint(out)
    assert loaded.training["best_val_nats_per_char"] == pytest.approx(result.best_val_nats)
    val_text = loaded.vocab.decode(corpus.val_docs[0].tolist())
    (score,) = score_texts(loaded.model, loaded.vocab, [val_text])
    assert score.nats_per_char == pytest.approx(result.best_val_nats, rel=1e-6)
    assert plot_path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stopped_and_resumed_run_equals_uninterrupted_run(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    # dropout, stream restarts and an epoch boundary inside the run make RNG and data position
    # matter
    config = tiny_config(
        max_steps=60, eval_interval=25, dropout=0.2, num_layers=2, batch_size=8, state_reset=0.1
    )
    whole = tmp_path / "whole.safetensors"
    Trainer(config, corpus, whole).run()

    parts = tmp_path / "parts.safetensors"
    stopper = StopAt(33)
    first = Trainer(config, corpus, parts, reporter=stopper)
    stopper.trainer = first
    result = first.run()
    assert result.stop_reason == "interrupted" and result.step == 33
    assert load_resume(resume_path(parts)).info["step"] == 33
    second = Trainer(config, corpus, parts, resume=True)
    assert second.step == 33
    assert second.run().step == 60

    expected, got = _losses(whole), _losses(parts)
    assert len(expected) == len(got) == 60
    assert got == pytest.approx(expected, abs=1e-6)
    a, b = load_checkpoint(whole), load_checkpoint(parts)
    for name, tensor in a.model.state_dict().items():
        torch.testing.assert_close(tensor, b.model.state_dict()[name], atol=1e-6, rtol=0)


def test_resume_refuses_other_data(tmp_path: Path, corpus_file: Path, cache_dir: Path) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    out = tmp_path / "m.safetensors"
    Trainer(tiny_config(max_steps=5), corpus, out).run()
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text() + "more", encoding="utf-8")
    changed = load_corpus([str(other)], cache_dir=cache_dir)
    with pytest.raises(Exception, match="training data differ"):
        Trainer(tiny_config(max_steps=5), changed, out, resume=True)


def test_early_stopping_and_time_budget(tmp_path: Path, corpus_file: Path, cache_dir: Path) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    # a learning rate this small cannot improve much: patience ends the run
    config = tiny_config(
        lr=1e-9, weight_decay=0.0, warmup_steps=0, eval_interval=2, patience=2, max_steps=500
    )
    result = Trainer(config, corpus, tmp_path / "a.safetensors").run()
    assert result.stop_reason == "early_stop" and result.step < 50
    # no step limit: only the time budget can end this run, however fast the machine; the
    # budget is wall time, of which the steps are a part
    timed = Trainer(tiny_config(max_time=0.5, max_steps=None, sample_chars=0), corpus, None).run()
    assert timed.stop_reason == "max_time" and 0 < timed.train_seconds < timed.wall_seconds < 5


def test_evaluation_equals_scoring_per_document(tmp_path: Path, cache_dir: Path) -> None:
    torch.manual_seed(0)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("the cat sat on the mat. " * 10, encoding="utf-8")
    b.write_text("the mat sat. " * 4, encoding="utf-8")
    corpus = load_corpus([str(a), str(b)], val_fraction=0.3, cache_dir=cache_dir)
    trainer = Trainer(tiny_config(), corpus, None)
    texts = [corpus.vocab.decode(d.tolist()) for d in corpus.val_docs]
    assert len(texts) == 2  # the tail spans the end of a.txt and all of b.txt
    scores = score_texts(trainer.model, corpus.vocab, texts)
    result = evaluate_docs(trainer.model, corpus.val_docs)
    assert result.num_chars == sum(s.num_chars for s in scores)
    assert result.total_nats == pytest.approx(-sum(s.logprob for s in scores), rel=1e-6)


def test_sgd_with_nesterov_momentum_learns(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    config = tiny_config(optimizer="sgd", lr=0.5, max_steps=80, eval_interval=80, sample_chars=0)
    trainer = Trainer(config, corpus, tmp_path / "sgd.safetensors")
    group = trainer.optimizer.param_groups[0]
    assert isinstance(trainer.optimizer, torch.optim.SGD) and group["nesterov"]
    result = trainer.run()
    losses = _losses(tmp_path / "sgd.safetensors")
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert result.best_val_nats < 0.7 * math.log(len(corpus.vocab))


def test_trainer_state_dict_is_the_resume_file(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    out = tmp_path / "m.safetensors"
    trainer = Trainer(tiny_config(max_steps=12, eval_interval=5), corpus, out)
    trainer.run()
    state = trainer.state_dict()
    saved = load_resume(resume_path(out))
    # the file holds the state, and the file format is unchanged
    assert set(saved.info) == set(state.info) | {"format", "version", "num_carried"}
    assert {
        "train_config", "step", "train_seconds", "position", "best_val", "best_step",
        "bad_evals", "last_eval_step", "wall_seconds", "eval_seconds", "num_evals",
        "eval_estimate", "eval_chars", "world_size", "corpus_fingerprint", "vocab",
    } == set(state.info)  # fmt: skip
    assert saved.info["best_step"] == trainer.progress.best_step in (5, 10, 12)
    assert saved.info["last_eval_step"] == 12 and saved.info["step"] == 12
    other = Trainer(tiny_config(max_steps=12, eval_interval=5), corpus, None)
    other.load_state_dict(saved)
    assert (other.step, other.progress) == (12, trainer.progress)
    # the clocks go on from where they were: the budget spans the run's processes
    assert other.clock.elapsed == saved.info["wall_seconds"] > 0
    times = other.validation.times
    assert (times.total, times.count) == (saved.info["eval_seconds"], 3)
    for name, tensor in trainer.model.state_dict().items():
        torch.testing.assert_close(other.model.state_dict()[name], tensor, atol=0, rtol=0)


def test_load_state_dict_refuses_another_layout(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    trainer = Trainer(tiny_config(max_steps=3), corpus, None)
    state = trainer.state_dict()
    state.info["world_size"] = 2  # 2 x 4 streams: another global batch than 1 x 4
    with pytest.raises(ResumeError, match=r"the run trained 8 streams \(4 per process x 2"):
        trainer.load_state_dict(state)
    with pytest.raises(ResumeError, match="needs the checkpoint path"):
        Trainer(tiny_config(max_steps=3), corpus, None, resume=True)


class Ticks:
    """A wall clock that moves 10 ms each time it is read: the run's timing, machine-free."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.reads * 0.01


def test_a_wall_time_budget_ends_the_schedule_and_leaves_room_for_the_final_validation(
    tmp_path: Path, corpus_file: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    # files take 5 ticks here, not 50: the first validation comes after a few hundred steps
    monkeypatch.setattr(training.validation, "FILES_SECONDS", 0.05)
    config = tiny_config(
        max_time=20.0, max_steps=None, eval_interval=None, eval_share=0.02, sample_chars=0
    )
    out = tmp_path / "m.safetensors"
    result = Trainer(config, corpus, out, clock=Ticks()).run()
    records = [json.loads(line) for line in metrics_path(out).read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    (summary,) = [r for r in records if r["kind"] == "summary"]
    assert result.stop_reason == "max_time" and result.step > 50
    # validation, checkpoint and plot included, the run ends within its budget, give or take a
    # few reads of this clock (in a real run, reading the clock costs next to nothing)
    assert 19.5 <= result.wall_seconds <= 20.05
    assert summary["wall_seconds"] == pytest.approx(result.wall_seconds, abs=0.02)
    # the learning rate has annealed to its final value by the last step
    final_lr = config.lr * config.final_lr_fraction
    assert train[-1]["step"] == result.step
    assert train[-1]["lr"] == pytest.approx(final_lr, rel=0.02)
    assert all(a["lr"] >= b["lr"] for a, b in itertools.pairwise(train[config.warmup_steps :]))
    # without an interval, intermediate validations keep to their share of the wall time
    assert len(evals) >= 2 and evals[-1]["step"] == result.step
    assert all(r["eval_share"] <= config.eval_share for r in evals[:-1])
    assert summary["num_evals"] == result.num_evals == len(evals)
    assert summary["eval_total_seconds"] == pytest.approx(result.eval_seconds, abs=1e-3)
    assert summary["eval_share"] == pytest.approx(result.eval_seconds / result.wall_seconds, 1e-3)


def test_every_validation_reports_its_time(
    tmp_path: Path, corpus_file: Path, cache_dir: Path
) -> None:
    corpus = load_corpus([str(corpus_file)], cache_dir=cache_dir)
    out = tmp_path / "m.safetensors"
    result = Trainer(tiny_config(max_steps=20, eval_interval=10), corpus, out).run()
    records = [json.loads(line) for line in metrics_path(out).read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20] and records[-1]["kind"] == "summary"
    for r in evals:
        assert 0 <= r["val_seconds"] <= r["eval_seconds"] <= r["eval_total_seconds"]
        assert r["eval_total_seconds"] <= r["wall_seconds"] + 1e-3 and 0 <= r["eval_share"] <= 1
    assert (
        evals[1]["eval_total_seconds"]
        >= evals[0]["eval_total_seconds"] + evals[1]["eval_seconds"] - 2e-4  # 4-decimal rounding
    )
    assert 0 < result.eval_seconds < result.wall_seconds and result.num_evals == 2
    assert load_checkpoint(out).training["num_evals"] in (1, 2)
