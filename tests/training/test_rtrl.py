from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from models.config import ModelConfig
from models.registry import build_model
from training.report import Reporter
from training.rtrl import RealTimeRecurrentLearning, rtrl_gradients


def elman(hidden: int = 5, vocab: int = 7) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="rnn", vocab_size=vocab, embed_size=3, hidden_size=hidden, num_layers=1)
    model = build_model(cfg).double()
    with torch.no_grad():  # larger recurrent weights: a harder test of the carried sensitivity
        model.rnn.weight_hh_l0.mul_(3.0)
    return model


def bptt_gradients(model, inputs, targets, state):  # type: ignore[no-untyped-def]
    model.zero_grad()
    logits, new_state = model(inputs, state)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()], new_state


def test_gradients_equal_bptt() -> None:
    model = elman()
    torch.manual_seed(1)
    ids = torch.randint(0, 7, (3, 9))
    state = (torch.randn(3, 1, 5, dtype=torch.float64) * 0.5,)
    loss, grads, new_state, _ = rtrl_gradients(model, ids[:, :-1], ids[:, 1:], state, None)
    ref_loss, ref_grads, ref_state = bptt_gradients(model, ids[:, :-1], ids[:, 1:], state)
    torch.testing.assert_close(loss, ref_loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(new_state[0], ref_state[0], atol=1e-12, rtol=0)
    for (name, _), grad, ref in zip(model.named_parameters(), grads, ref_grads, strict=True):
        assert float(ref.abs().max()) > 0, name
        torch.testing.assert_close(grad, ref, atol=1e-6, rtol=0, msg=name)
        torch.testing.assert_close(grad, ref, atol=1e-10, rtol=1e-8, msg=name)


def test_carried_sensitivity_is_not_truncated() -> None:
    """Two chunks with the sensitivity carried give the gradient of BPTT over both, unbroken."""
    model = elman()
    torch.manual_seed(2)
    ids = torch.randint(0, 7, (2, 13))
    state = model.initial_state(2)
    _, first, mid_state, sens = rtrl_gradients(model, ids[:, :6], ids[:, 1:7], state, None)
    _, second, _, _ = rtrl_gradients(model, ids[:, 6:12], ids[:, 7:13], mid_state, sens)
    _, ref, _ = bptt_gradients(model, ids[:, :12], ids[:, 1:13], state)
    for a, b, r in zip(first, second, ref, strict=True):
        torch.testing.assert_close((a + b) / 2, r, atol=1e-10, rtol=1e-8)


def test_rtrl_training_step_lowers_the_loss() -> None:
    model = elman(hidden=8, vocab=5).float()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    step = RealTimeRecurrentLearning(model, opt, grad_clip=1.0, device=torch.device("cpu"))
    pattern = torch.tensor([2, 3, 4, 3] * 40)
    streams = torch.stack([pattern, pattern.roll(1)])
    state = model.initial_state(2)
    losses = []
    for start in range(0, 150, 10):
        loss, state = step(
            streams[:, start : start + 10], streams[:, start + 1 : start + 11], state
        )
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_only_small_elman_models() -> None:
    lstm = build_model(ModelConfig(arch="lstm", vocab_size=5, hidden_size=4, num_layers=1))
    with pytest.raises(ValueError, match="'rnn' architecture"):
        RealTimeRecurrentLearning(
            lstm, torch.optim.SGD(lstm.parameters()), 0.0, torch.device("cpu")
        )
    deep = build_model(ModelConfig(arch="rnn", vocab_size=5, hidden_size=4, num_layers=2))
    with pytest.raises(ValueError, match="num_layers=1"):
        RealTimeRecurrentLearning(
            deep, torch.optim.SGD(deep.parameters()), 0.0, torch.device("cpu")
        )
    dropped = build_model(
        ModelConfig(arch="rnn", vocab_size=5, hidden_size=4, num_layers=1, weight_drop=0.2)
    )
    with pytest.raises(ValueError, match="apply no weight_drop"):
        RealTimeRecurrentLearning(
            dropped, torch.optim.SGD(dropped.parameters()), 0.0, torch.device("cpu")
        )


@pytest.mark.parametrize("algorithm", ["rtrl", "ekf"])
def test_charlm_train_algorithm_flag(algorithm: str, tiny_corpus: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from models.checkpoint import load_checkpoint
    from training.cli import train_main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_corpus, encoding="utf-8")
    out = tmp_path / f"{algorithm}.safetensors"
    args = ["--data", str(corpus), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    args += ["--arch", "rnn", "--num-layers", "1", "--hidden-size", "6", "--embed-size", "4"]
    args += ["--algorithm", algorithm, "--batch-size", "2", "--seq-len", "8"]
    args += ["--max-steps", "4", "--eval-interval", "4", "--sample-chars", "0"]
    assert train_main(args) == 0
    loaded = load_checkpoint(out)
    assert loaded.train_config["algorithm"] == algorithm
    assert loaded.training["step"] == 4


class StopAfter(Reporter):
    """Asks the trainer to stop once ``step`` steps are done, as SIGINT does."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.trainer: Any = None

    def train(self, record: dict[str, Any]) -> None:
        if record["step"] >= self.step:
            self.trainer.stop.requested = True


@pytest.mark.parametrize("algorithm", ["rtrl", "ekf"])
def test_a_resumed_run_continues_the_algorithms_own_tensors(
    algorithm: str, tiny_corpus: str, tmp_path: Path
) -> None:
    from training.config import TrainConfig
    from training.data import load_corpus
    from training.loop import Trainer
    from training.resume import load_resume, resume_path

    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text(tiny_corpus, encoding="utf-8")
    corpus = load_corpus([str(corpus_file)], cache_dir=tmp_path / "cache")
    config = TrainConfig(
        arch="rnn", algorithm=algorithm, num_layers=1, hidden_size=6, embed_size=4,
        batch_size=2, seq_len=8, max_steps=8, eval_interval=100, sample_chars=0, lr=1e-2,
        log_interval=1,
    )  # fmt: skip
    whole = Trainer(config, corpus, tmp_path / "whole.safetensors")
    whole.run()
    first = Trainer(config, corpus, tmp_path / "parts.safetensors", reporter=StopAfter(4))
    first.reporter.trainer = first  # type: ignore[attr-defined]
    assert first.run().stop_reason == "interrupted"
    saved = load_resume(resume_path(tmp_path / "parts.safetensors"))
    assert "sensitivity" in saved.algorithm  # carried across chunks, so saved with the run
    second = Trainer(config, corpus, tmp_path / "parts.safetensors", resume=True)
    assert second.step == 4
    second.run()
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], tensor, atol=1e-6, rtol=0)
