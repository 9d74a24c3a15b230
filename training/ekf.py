"""Decoupled extended-Kalman-filter training of the Elman network.

The weights are the state of a Kalman filter and each character a measurement (Singhal & Wu 1989;
for recurrent networks Williams 1992 and Puskorius & Feldkamp 1994, whose *decoupled* EKF keeps
a separate covariance block per group of weights). The measurement is the predicted distribution
``y_t = softmax(logits_t)`` (V,), its target the one-hot next character. Per character:

    H_g = dy_t / dw_g                      (V, n_g)  from RTRL's sensitivities (``training.rtrl``)
    A   = (R + sum_g H_g P_g H_g^T)^{-1}   (V, V)    R = I / learning_rate
    K_g = P_g H_g^T A                      (n_g, V)
    w_g += K_g (target - y_t)
    P_g += Q - K_g H_g P_g                 Q = process_noise * I

Groups are node-decoupled: the incoming weights of each hidden unit (with its biases), of each
output unit, and each character's embedding row. Cost per character: the RTRL step (O(H^4)) plus
``sum_g V n_g^2 + V^2 n_g`` for the filter, and O(sum_g n_g^2) memory for the covariances. It is a
second-order method that often needs far fewer passes than gradient descent on small recurrent
networks; it does not scale past a few thousand weights. Updates are applied character by
character, stream by stream (rows of a batch are independent streams, each with its own
sensitivity), so batching saves nothing here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import State
from training.rtrl import ElmanWeights, rtrl_step, unwrap_elman, zero_sensitivity


class DecoupledEKF:
    """``--algorithm ekf``: the filter above, same factory signature as the loop's algorithms.

    ``learning_rate`` sets the measurement noise ``R = I / learning_rate``; the loop's optimizer is
    not used (its learning rate is not the filter's: the filter's step comes from ``P``).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        grad_clip: float = 0.0,
        device: torch.device | None = None,
        *,
        learning_rate: float = 1.0,
        initial_covariance: float = 10.0,
        process_noise: float = 1e-4,
    ) -> None:
        self.model = unwrap_elman(module)
        self.weights = ElmanWeights.of(self.model)
        self.noise = 1.0 / learning_rate
        self.process_noise = process_noise
        w = self.weights
        hidden, embed = w.w_ih.shape
        vocab = w.embedding.shape[0]
        off_e, off_wih, off_bih, off_whh, off_bhh, _ = w.offsets()
        units = torch.arange(hidden).unsqueeze(1)
        # theta indices of each group: (G, n) per family
        self.hidden_index = torch.cat(
            [
                off_wih + units * embed + torch.arange(embed),
                off_bih + units,
                off_whh + units * hidden + torch.arange(hidden),
                off_bhh + units,
            ],
            dim=1,
        )
        self.embed_index = off_e + torch.arange(vocab).unsqueeze(1) * embed + torch.arange(embed)
        dtype, device = w.w_hh.dtype, w.w_hh.device
        self.hidden_index = self.hidden_index.to(device)
        self.embed_index = self.embed_index.to(device)

        def eye(groups: int, size: int) -> Tensor:
            return torch.eye(size, dtype=dtype, device=device).expand(groups, size, size).clone()

        self.cov_hidden = eye(hidden, self.hidden_index.shape[1]) * initial_covariance
        self.cov_embed = eye(vocab, embed) * initial_covariance
        self.cov_output = eye(vocab, hidden + 1) * initial_covariance
        self.sens: Tensor | None = None

    def _update(self, token: Tensor, target: int, h: Tensor, sens: Tensor) -> tuple[Tensor, float]:
        """One character of one stream: ``h`` (H,), ``sens`` (H, P); returns the new h, loss."""
        w = self.weights
        h, sens = rtrl_step(w, token.view(1), h.unsqueeze(0), sens.unsqueeze(0))
        h, sens = h[0], sens[0]
        logits = w.head_w @ h + w.head_b  # (V,)
        y = torch.softmax(logits, dim=0)
        loss = float(F.cross_entropy(logits.unsqueeze(0), torch.tensor([target], device=h.device)))
        dy = torch.diag(y) - torch.outer(y, y)  # (V, V): d softmax / d logits
        jac_theta = dy @ w.head_w @ sens  # (V, P): dy / dtheta through h
        jac_hidden = jac_theta[:, self.hidden_index].permute(1, 0, 2)  # (H, V, n)
        jac_embed = jac_theta[:, self.embed_index].permute(1, 0, 2)  # (Vocab, V, E)
        # output unit v: dy / d[head_w[v], head_b[v]] = dy[:, v] (x) [h, 1]
        features = torch.cat([h, h.new_ones(1)])
        jac_output = dy.T.unsqueeze(-1) * features  # (Vocab, V, H + 1)
        families = [
            (jac_hidden, self.cov_hidden),
            (jac_embed, self.cov_embed),
            (jac_output, self.cov_output),
        ]
        vocab = y.shape[0]
        innovation = torch.eye(vocab, dtype=y.dtype, device=y.device) * self.noise
        products = []
        for jac, cov in families:
            hp = torch.bmm(jac, cov)  # (G, V, n): H_g P_g
            innovation = innovation + torch.bmm(hp, jac.transpose(1, 2)).sum(0)
            products.append(hp)
        inverse = torch.linalg.inv(innovation)  # (V, V)
        error = -y
        error[target] += 1.0
        steps = []
        for (_jac, cov), hp in zip(families, products, strict=True):
            gain = hp.transpose(1, 2) @ inverse  # (G, n, V): P_g H_g^T A (P symmetric)
            steps.append(gain @ error)  # (G, n)
            cov.sub_(torch.bmm(gain, hp))
            torch.diagonal(cov, dim1=1, dim2=2).add_(self.process_noise)
            cov.copy_(0.5 * (cov + cov.transpose(1, 2)))  # keep P symmetric against round-off
        with torch.no_grad():
            theta = torch.cat([t.reshape(-1) for t in w.recurrent()])
            theta.index_add_(0, self.hidden_index.reshape(-1), steps[0].reshape(-1))
            theta.index_add_(0, self.embed_index.reshape(-1), steps[1].reshape(-1))
            start = 0
            for tensor in w.recurrent():
                tensor.copy_(theta[start : start + tensor.numel()].view_as(tensor))
                start += tensor.numel()
            w.head_w.add_(steps[2][:, :-1])
            w.head_b.add_(steps[2][:, -1])
        self._last_sens = sens
        return h, loss

    @torch.no_grad()
    def __call__(self, inputs: Tensor, targets: Tensor, state: State) -> tuple[Tensor, State]:
        batch, steps = inputs.shape
        if self.sens is None or self.sens.shape[0] != batch:
            self.sens = zero_sensitivity(self.weights, batch)
        hidden = state[0][:, 0].clone()  # (B, H)
        total = 0.0
        for row in range(batch):  # each stream updates the weights in turn, step by step
            h, sens = hidden[row], self.sens[row]
            for t in range(steps):
                h, loss = self._update(inputs[row, t], int(targets[row, t]), h, sens)
                sens = self._last_sens
                total += loss
            hidden[row] = h
            self.sens[row] = sens
        return torch.tensor(total / (batch * steps)), (hidden.unsqueeze(1),)

    def carried(self) -> dict[str, Tensor]:
        tensors = {
            "cov_hidden": self.cov_hidden,
            "cov_embed": self.cov_embed,
            "cov_output": self.cov_output,
        }
        if self.sens is not None:
            tensors["sensitivity"] = self.sens
        return tensors

    def restore_carried(self, tensors: dict[str, Tensor]) -> None:
        for name in ("cov_hidden", "cov_embed", "cov_output"):
            if name in tensors:
                getattr(self, name).copy_(tensors[name])
        self.sens = tensors.get("sensitivity")

    def reset_streams(self) -> None:
        self.sens = None  # the covariances describe the weights and stay
