"""The one-character step of the fused recurrent models as a few plain tensor operations.

Generating text reads one character per stream per step. At batch 1 on a CPU, ``nn.LSTM`` spends
about as long around its recurrent matrix product as inside it (a 1x512 LSTM: ~160 us a call, of
which the (512, 2048) product is ~75 us), and ``nn.Embedding`` and ``nn.Linear`` add a call each.
The step here computes the same figures (to float rounding) with fewer, cheaper operations:

- the embedding, the first layer's input weights and its biases fold into one table (V, G*H): a
  row lookup replaces the input product, since ``W_ih embed(id) + b`` depends on the id alone;
- every weight matrix is kept transposed and contiguous, ``(B, H) @ (H, G*H)``, the layout in
  which MKL's product runs fastest at batch 1 (measured: ~20% faster than ``F.linear``'s);
- the LSTM's gates are reordered ``i, f, o, g``, so one sigmoid and one tanh cover all four.

``torch.compile`` (inductor) and ``torch.jit.trace`` of the same step were measured slower or no
faster at batch 1 on CPU (the call overhead of a compiled graph exceeds the fusion it buys), so
the step stays eager. The model's ``forward`` remains the reference: ``step`` falls back to it
whenever gradients, training mode or a device other than the CPU are involved (unmeasured there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.base import State

Cell = Callable[["StepLayer", Tensor, State], State]


@dataclass(frozen=True)
class StepLayer:
    """One layer's weights in the step's layout (G gates of H units)."""

    input_t: Tensor | None  # (I, G*H), None for the first layer (its input is the table's row)
    hidden_t: Tensor  # (H, G*H)
    bias: Tensor  # (G*H,): input and hidden biases (the GRU keeps its hidden one apart)
    hidden_bias: Tensor | None  # (G*H,): the GRU's, inside the reset gate
    split: tuple[int, int]  # the gates a sigmoid covers, the rest: (3H, H) LSTM, (2H, H) GRU

    def input_part(self, x: Tensor) -> Tensor:
        """``x`` (B, I) through the input weights and bias -> (B, G*H); the first layer's
        ``x`` is already its table row."""
        return x if self.input_t is None else torch.addmm(self.bias, x, self.input_t)


def lstm_cell(layer: StepLayer, x: Tensor, state: State) -> State:
    h, c = state  # (B, H) each; gates in the order i, f, o, g
    gates = torch.addmm(layer.input_part(x), h, layer.hidden_t)  # (B, 4H)
    ifo, g = gates.split(layer.split, dim=1)
    i, f, o = torch.sigmoid(ifo).chunk(3, dim=1)
    c = torch.addcmul(f * c, i, torch.tanh(g))
    return o * torch.tanh(c), c


def gru_cell(layer: StepLayer, x: Tensor, state: State) -> State:
    (h,) = state  # (B, H); gates in PyTorch's order r, z, n
    assert layer.hidden_bias is not None
    input_rz, input_n = layer.input_part(x).split(layer.split, dim=1)  # (B, 2H), (B, H)
    hidden_rz, hidden_n = torch.addmm(layer.hidden_bias, h, layer.hidden_t).split(layer.split, 1)
    r, z = torch.sigmoid(input_rz + hidden_rz).chunk(2, dim=1)
    n = torch.tanh(torch.addcmul(input_n, r, hidden_n))
    return (torch.addcmul(n, z, h - n),)  # (1 - z) n + z h


def rnn_tanh_cell(layer: StepLayer, x: Tensor, state: State) -> State:
    return (torch.tanh(torch.addmm(layer.input_part(x), state[0], layer.hidden_t)),)


def _lstm_order(hidden: int, device: torch.device) -> Tensor:
    """Rows of PyTorch's gates ``i, f, g, o`` in the order ``i, f, o, g``."""
    i_f, g = torch.arange(2 * hidden), torch.arange(2 * hidden, 3 * hidden)
    return torch.cat([i_f, torch.arange(3 * hidden, 4 * hidden), g]).to(device)


class FusedStep:
    """``(ids (B, 1), state) -> (logits (B, 1, V), state)`` of an embedding, a stacked
    ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (batch first, state (B, L, H) per tensor) and a linear
    head, built from their weights (a snapshot: build a new one when the weights change)."""

    @torch.no_grad()
    def __init__(self, embedding: nn.Embedding, rnn: nn.RNNBase, head: nn.Linear) -> None:
        hidden, dtype = rnn.hidden_size, head.weight.dtype
        order: Tensor | None = None
        self.cell: Cell
        if isinstance(rnn, nn.LSTM):
            self.cell, order = lstm_cell, _lstm_order(hidden, head.weight.device)
        elif isinstance(rnn, nn.GRU):
            self.cell = gru_cell
        elif isinstance(rnn, nn.RNN) and rnn.nonlinearity == "tanh":
            self.cell = rnn_tanh_cell
        else:
            raise ValueError(f"no fused step for {rnn!r}")
        if not rnn.batch_first or rnn.bidirectional or rnn.proj_size:
            raise ValueError("the fused step needs a batch-first, one-way, unprojected layer")
        gru = isinstance(rnn, nn.GRU)
        self.layers: list[StepLayer] = []
        table: Tensor | None = None
        for i in range(rnn.num_layers):
            w_ih, w_hh = getattr(rnn, f"weight_ih_l{i}"), getattr(rnn, f"weight_hh_l{i}")
            b_ih = getattr(rnn, f"bias_ih_l{i}", None)
            b_hh = getattr(rnn, f"bias_hh_l{i}", None)
            zeros = torch.zeros(w_ih.shape[0], dtype=w_ih.dtype, device=w_ih.device)
            b_ih = zeros if b_ih is None else b_ih
            b_hh = zeros if b_hh is None else b_hh
            bias, hidden_bias = (b_ih, b_hh) if gru else (b_ih + b_hh, None)
            if order is not None:
                w_ih, w_hh, bias = w_ih[order], w_hh[order], bias[order]
            input_t: Tensor | None = w_ih.T.contiguous()
            if i == 0:  # (V, G*H) in float64, rounded once: the lookup is as exact as the product
                table = (embedding.weight.double() @ w_ih.double().T + bias.double()).to(dtype)
                input_t = None
            split = (w_hh.shape[0] - hidden, hidden)
            self.layers.append(
                StepLayer(input_t, w_hh.T.contiguous(), bias.contiguous(), hidden_bias, split)
            )
        assert table is not None
        self.table = table.contiguous()
        self.head_t = head.weight.T.contiguous()  # (H, V)
        self.head_bias = (
            head.bias if head.bias is not None else torch.zeros_like(head.weight[:, 0])
        ).contiguous()

    def __call__(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        x = self.table.index_select(0, ids.reshape(-1))  # (B, G*H): layer 0's input part
        if len(self.layers) == 1:  # the common case, without the loop's stacking
            out = self.cell(self.layers[0], x, tuple(s.select(1, 0) for s in state))
            logits = torch.addmm(self.head_bias, out[0], self.head_t)  # (B, V)
            return logits.unsqueeze(1), tuple(s.unsqueeze(1) for s in out)
        new_parts: list[State] = []
        for i, layer in enumerate(self.layers):
            # each state tensor (B, L, H); this layer's (B, H) is a view
            out = self.cell(layer, x, tuple(s.select(1, i) for s in state))
            new_parts.append(out)
            x = out[0]
        logits = torch.addmm(self.head_bias, x, self.head_t)  # (B, V)
        stacked = tuple(torch.stack(parts, dim=1) for parts in zip(*new_parts, strict=True))
        return logits.unsqueeze(1), stacked
