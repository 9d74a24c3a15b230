"""Real-time recurrent learning for the Elman network (Williams & Zipser 1989).

RTRL carries, beside the hidden state ``h_t`` (H,), its sensitivity to every recurrent parameter,
``S_t = dh_t / dtheta`` (H, P), forward in time:

    S_t = D_t (W_hh S_{t-1} + dpre_t / dtheta),   D_t = diag(1 - h_t^2)

and the loss gradient is ``sum_t (dL_t / dh_t) S_t``. Gradients are exact (equal to BPTT's over
the same stretch) with memory independent of the sequence length: nothing is unrolled, so the
state of the whole stream since its start shapes the gradient, not a truncated window. The price
is the ``W_hh S`` product: H x H x P with P ~ H^2 recurrent weights, O(H^4) time and O(H^3)
memory per step and stream. Sensible for tiny networks (H of a few dozen) and for online learning
on streams that never end; for anything else truncated BPTT is far cheaper.

``theta`` is the embedding (it feeds the recurrence), ``W_ih``, ``b_ih``, ``W_hh``, ``b_hh`` of the
single ``nn.RNN`` tanh layer; the readout's gradient needs no sensitivity. Only ``rnn`` models with
one layer and no dropout are supported (``check_elman``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import CharLM, State


def unwrap_elman(module: nn.Module) -> CharLM:
    """The model inside a (possibly DistributedDataParallel-wrapped) module, checked."""
    model = getattr(module, "module", module)
    if not isinstance(model, CharLM):
        raise TypeError(f"expected a charlm model, got {type(model).__name__}")
    check_elman(model)
    return model


def check_elman(model: CharLM) -> None:
    """Raise ``ValueError`` unless ``model`` is a one-layer ``rnn`` without dropout, tying or
    another regulariser."""
    cfg = model.config
    if cfg.arch != "rnn" or cfg.num_layers != 1 or cfg.dropout != 0.0 or cfg.tie_weights:
        raise ValueError(
            "RTRL and EKF training support the 'rnn' architecture with num_layers=1, dropout=0 "
            f"and untied weights (got arch={cfg.arch!r}, num_layers={cfg.num_layers}, "
            f"dropout={cfg.dropout}, tie_weights={cfg.tie_weights})"
        )
    if cfg.regularisers():
        raise ValueError(
            f"RTRL and EKF training apply no {', '.join(cfg.regularisers())}: leave it off"
        )


@dataclass
class ElmanWeights:
    """The Elman model's tensors, and where each recurrent one sits in the flat ``theta``."""

    embedding: Tensor  # (V, E)
    w_ih: Tensor  # (H, E)
    b_ih: Tensor  # (H,)
    w_hh: Tensor  # (H, H)
    b_hh: Tensor  # (H,)
    head_w: Tensor  # (V, H)
    head_b: Tensor  # (V,)

    @classmethod
    def of(cls, model: nn.Module) -> ElmanWeights:
        names = ["embedding.weight", "rnn.weight_ih_l0", "rnn.bias_ih_l0", "rnn.weight_hh_l0"]
        names += ["rnn.bias_hh_l0", "head.weight", "head.bias"]
        return cls(*(model.get_parameter(name) for name in names))

    def recurrent(self) -> list[Tensor]:
        return [self.embedding, self.w_ih, self.b_ih, self.w_hh, self.b_hh]

    def offsets(self) -> list[int]:
        """Start of each recurrent tensor in ``theta``, and its total length last."""
        starts = [0]
        for tensor in self.recurrent():
            starts.append(starts[-1] + tensor.numel())
        return starts


def zero_sensitivity(weights: ElmanWeights, batch: int) -> Tensor:
    """``dh / dtheta`` of a state that no parameter produced: zeros (B, H, P)."""
    hidden = weights.w_hh.shape[0]
    return weights.w_hh.new_zeros(batch, hidden, weights.offsets()[-1])


@torch.no_grad()
def rtrl_step(
    weights: ElmanWeights, token: Tensor, h: Tensor, sens: Tensor
) -> tuple[Tensor, Tensor]:
    """Advance ``h`` (B, H) and ``S`` (B, H, P) by one character ``token`` (B,)."""
    batch, hidden = h.shape
    embed = weights.embedding.shape[1]
    off_e, off_wih, off_bih, off_whh, off_bhh, _ = weights.offsets()
    x = weights.embedding[token]  # (B, E)
    pre = x @ weights.w_ih.T + weights.b_ih + h @ weights.w_hh.T + weights.b_hh
    h_new = torch.tanh(pre)
    grow = torch.matmul(weights.w_hh, sens)  # (B, H, P): the O(H^4) product
    # immediate terms dpre_k/dtheta, added in place into their blocks
    cols = off_e + token.unsqueeze(1) * embed + torch.arange(embed, device=h.device)  # (B, E)
    grow.scatter_add_(
        2, cols.unsqueeze(1).expand(batch, hidden, embed), weights.w_ih.expand(batch, -1, -1)
    )
    block = grow[:, :, off_wih:off_bih].view(batch, hidden, hidden, embed)
    torch.diagonal(block, dim1=1, dim2=2).add_(x.unsqueeze(-1))  # d pre_k / d W_ih[k, :] = x
    for start in (off_bih, off_bhh):
        torch.diagonal(grow[:, :, start : start + hidden], dim1=1, dim2=2).add_(1.0)
    block = grow[:, :, off_whh:off_bhh].view(batch, hidden, hidden, hidden)
    torch.diagonal(block, dim1=1, dim2=2).add_(h.unsqueeze(-1))  # d pre_k / d W_hh[k, :] = h
    grow.mul_((1.0 - h_new * h_new).unsqueeze(-1))
    return h_new, grow


@torch.no_grad()
def rtrl_gradients(
    model: CharLM, inputs: Tensor, targets: Tensor, state: State, sens: Tensor | None
) -> tuple[Tensor, list[Tensor], State, Tensor]:
    """Mean cross-entropy over ``inputs``/``targets`` (B, T), its gradient for every parameter
    (in ``model.parameters()`` order), the next state and the carried sensitivity."""
    check_elman(model)
    weights = ElmanWeights.of(model)
    batch, steps = inputs.shape
    h = state[0][:, 0]  # (B, H): the contract's state is (B, L, H) with L = 1
    if sens is None:
        sens = zero_sensitivity(weights, batch)
    theta_grad = torch.zeros(sens.shape[-1], dtype=sens.dtype, device=sens.device)
    head_w_grad = torch.zeros_like(weights.head_w)
    head_b_grad = torch.zeros_like(weights.head_b)
    total = torch.zeros((), dtype=h.dtype, device=h.device)
    scale = 1.0 / (batch * steps)
    for t in range(steps):
        h, sens = rtrl_step(weights, inputs[:, t], h, sens)
        logits = h @ weights.head_w.T + weights.head_b  # (B, V)
        total += F.cross_entropy(logits, targets[:, t], reduction="sum")
        delta = torch.softmax(logits, dim=-1)
        delta[torch.arange(batch, device=h.device), targets[:, t]] -= 1.0  # dL/dlogits, (B, V)
        delta *= scale
        head_w_grad += delta.T @ h
        head_b_grad += delta.sum(0)
        dh = delta @ weights.head_w  # (B, H)
        theta_grad += torch.einsum("bh,bhp->p", dh, sens)
    pieces = list(theta_grad.split([t.numel() for t in weights.recurrent()]))
    by_tensor = {id(t): g.view_as(t) for t, g in zip(weights.recurrent(), pieces, strict=True)}
    by_tensor[id(weights.head_w)] = head_w_grad
    by_tensor[id(weights.head_b)] = head_b_grad
    grads = [by_tensor[id(p)] for p in model.parameters()]
    return total * scale, grads, (h.unsqueeze(1),), sens


class RealTimeRecurrentLearning:
    """``--algorithm rtrl``: exact gradients carried forward, applied once per chunk.

    The sensitivity is carried across chunks with the state (never truncated); it restarts at
    zero when the batch size changes (a new set of streams). Same factory signature as the loop's
    other algorithms; the optimizer, clipping and schedule are the loop's.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        grad_clip: float,
        device: torch.device,
    ) -> None:
        self.model = unwrap_elman(module)
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.sens: Tensor | None = None

    def __call__(self, inputs: Tensor, targets: Tensor, state: State) -> tuple[Tensor, State]:
        if self.sens is not None and self.sens.shape[0] != inputs.shape[0]:
            self.sens = None
        loss, grads, new_state, self.sens = rtrl_gradients(
            self.model, inputs, targets, state, self.sens
        )
        for param, grad in zip(self.model.parameters(), grads, strict=True):
            param.grad = grad.clone()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return loss.detach(), new_state

    def carried(self) -> dict[str, Tensor]:
        return {} if self.sens is None else {"sensitivity": self.sens}

    def restore_carried(self, tensors: dict[str, Tensor]) -> None:
        self.sens = tensors.get("sensitivity")

    def reset_streams(self) -> None:
        self.sens = None  # a fresh state does not depend on the weights
