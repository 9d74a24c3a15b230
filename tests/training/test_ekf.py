import pytest
import torch

from models.config import ModelConfig
from models.registry import build_model
from training.ekf import DecoupledEKF


def elman(vocab: int = 6, hidden: int = 6) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="rnn", vocab_size=vocab, embed_size=3, hidden_size=hidden, num_layers=1)
    return build_model(cfg)


def test_loss_falls_on_a_small_task() -> None:
    # a periodic text whose next character needs one step of memory: 2 3 4 3 2 3 4 3 ...
    model = elman()
    ekf = DecoupledEKF(model)
    pattern = torch.tensor([2, 3, 4, 3] * 60 + [2])
    state = model.initial_state(1)
    losses = []
    for start in range(0, 240, 20):
        chunk = pattern[start : start + 21].unsqueeze(0)
        loss, state = ekf(chunk[:, :-1], chunk[:, 1:], state)
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.2 * losses[0], losses
    # below half of ln 2: it has learnt the memory that tells which character follows a 3
    assert losses[-1] < 0.35, losses
    # the covariances stay symmetric and positive definite
    for cov in (ekf.cov_hidden, ekf.cov_embed, ekf.cov_output):
        torch.testing.assert_close(cov, cov.transpose(1, 2))
        assert bool((torch.linalg.eigvalsh(cov) > 0).all())


def test_groups_cover_every_recurrent_weight_once() -> None:
    model = elman()
    ekf = DecoupledEKF(model)
    covered = torch.cat([ekf.hidden_index.reshape(-1), ekf.embed_index.reshape(-1)]).sort().values
    total = ekf.weights.offsets()[-1]
    assert torch.equal(covered, torch.arange(total))


def test_rejects_other_architectures() -> None:
    gru = build_model(ModelConfig(arch="gru", vocab_size=5, hidden_size=4, num_layers=1))
    with pytest.raises(ValueError, match="'rnn' architecture"):
        DecoupledEKF(gru)
