"""Adaptive scoring: dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018, "Dynamic
Evaluation of Neural Sequence Models").

A text is read in segments of ``segment`` predicted characters. Each segment is first scored by
the current weights, with the recurrent state carried from the segment before, exactly as static
scoring would score it; then one gradient step on that segment's mean loss moves the weights, so
the next segment is predicted by a model that has read the earlier ones. The state is carried
across the step (truncated back-propagation: the gradient stops at the segment's start). The
last segment gets no step: nothing is left to predict.

The steps change a private copy of the weights (``copy.deepcopy`` of the module, made once per
call and reset from the model's own weights before each text); the model passed in is never
written to, so a served model scores the same before and after. Each text of a call adapts from
the model's weights independently. An optional ``context`` is read (and adapted on) before its
text but not scored, as in ``models.scoring``.

Two update rules (``method``), with ``g`` the gradient of the segment's mean loss in nats:

- ``rms`` (the default): ``w -= rate * g / (sqrt(v) + eps)``, with ``v`` a running mean of
  ``g ** 2`` over the text's segments (bias-corrected, decay ``RMS_BETA``), so every weight moves
  by about ``rate`` a step whatever the scale of its gradient. Krause et al. take ``v`` from
  gradients of the training data; a server has none, so here it is gathered from the text itself.
- ``sgd``: ``w -= rate * g``; its rates are some 300 times larger (best near 0.3).

The rule, rate and segment length were chosen by a sweep (``bench/adaptive.py``, docs/scoring.md):
``rms`` beat ``sgd`` by 0.02 to 0.03 bits/char at every segment length. The copy runs in training
mode with every dropout set to zero, so its figures are those of evaluation mode and its backward
pass is one every device supports (cuDNN's recurrent layers have no backward in evaluation mode).

Cost: a forward and a backward pass per character instead of a forward, in segments of
``segment`` steps instead of long chunks; docs/scoring.md gives the measured figures.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from models.base import CharLM, State, detach_state
from models.scoring import IdSequence, TextScore, row_score, scoring_streams, target_logprobs
from models.vocab import CharVocab

AdaptMethod = Literal["sgd", "rms"]

#: defaults chosen by a sweep on the first 20,000 characters of tinyshakespeare's validation
#: text (docs/scoring.md)
DEFAULT_RATE = 1e-3
DEFAULT_SEGMENT = 50
DEFAULT_METHOD: AdaptMethod = "rms"
#: bounds of the settings: a rate of 4e-3 already measured worse than static scoring (``rms``;
#: ``sgd`` takes rates up to ``MAX_SGD_RATE``), longer segments gain less (and take more memory),
#: and segments shorter than 8 cost a backward pass every few characters
MIN_RATE, MAX_RATE, MAX_SGD_RATE = 0.0, 0.01, 1.0
MIN_SEGMENT, MAX_SEGMENT = 8, 1024
#: the running mean of squared gradients of the ``rms`` rule
RMS_BETA = 0.99
RMS_EPS = 1e-8


class AdaptError(ValueError):
    """The model cannot be scored adaptively (the message says why)."""


@dataclass(frozen=True)
class AdaptSettings:
    """How a text is adapted to: step size, segment length and update rule."""

    rate: float = DEFAULT_RATE
    segment: int = DEFAULT_SEGMENT
    method: AdaptMethod = DEFAULT_METHOD

    def __post_init__(self) -> None:
        high = MAX_SGD_RATE if self.method == "sgd" else MAX_RATE
        if not MIN_RATE < self.rate <= high:
            raise ValueError(f"rate must be in ({MIN_RATE:g}, {high:g}], got {self.rate}")
        if not MIN_SEGMENT <= self.segment <= MAX_SEGMENT:
            raise ValueError(
                f"segment must be in [{MIN_SEGMENT}, {MAX_SEGMENT}], got {self.segment}"
            )
        if self.method not in ("sgd", "rms"):
            raise ValueError(f"method must be 'sgd' or 'rms', got {self.method!r}")


def adapt_refusal(model: CharLM) -> str | None:
    """Why ``model`` cannot be scored adaptively, or None when it can."""
    arch = model.config.arch
    if not model.can_generate:
        return (
            f"a {arch} model predicts each character from both sides: it has no left-to-right"
            " loss to adapt with"
        )
    if not any(p.requires_grad for p in model.parameters()):
        return f"this {arch} model has no trainable weights to adapt"
    return None


def check_adaptable(model: CharLM) -> None:
    """Raise ``AdaptError`` when ``model`` cannot be scored adaptively."""
    reason = adapt_refusal(model)
    if reason is not None:
        raise AdaptError(reason)


class _Adapter:
    """A private copy of a model and the update rule that moves its weights."""

    def __init__(self, model: CharLM, settings: AdaptSettings) -> None:
        self.settings = settings
        self.source = [p for p in model.parameters() if p.requires_grad]
        self.model = copy.deepcopy(model)
        for module in self.model.modules():  # evaluation-mode figures in training mode
            if isinstance(module, nn.Dropout):
                module.p = 0.0
            elif isinstance(module, nn.RNNBase):
                module.dropout = 0.0
        self.model.train()
        self.weights = [p for p in self.model.parameters() if p.requires_grad]
        self.square_mean: list[Tensor] = []
        self.steps = 0

    def reset(self) -> None:
        """Back to the model's own weights, as before the first text."""
        with torch.no_grad():
            for weight, source in zip(self.weights, self.source, strict=True):
                weight.copy_(source)
        self.square_mean = [torch.zeros_like(w) for w in self.weights]
        self.steps = 0

    def update(self, loss: Tensor) -> None:
        """One step on ``loss`` (a scalar of the copy's weights)."""
        grads = torch.autograd.grad(loss, self.weights)
        rate = self.settings.rate
        self.steps += 1
        with torch.no_grad():
            for weight, grad, mean in zip(self.weights, grads, self.square_mean, strict=True):
                if self.settings.method == "rms":
                    mean.mul_(RMS_BETA).addcmul_(grad, grad, value=1.0 - RMS_BETA)
                    scale = (mean / (1.0 - RMS_BETA**self.steps)).sqrt_().add_(RMS_EPS)
                    weight.addcdiv_(grad, scale, value=-rate)
                else:
                    weight.add_(grad, alpha=-rate)


def adaptive_score_id_sequences(
    model: CharLM,
    sequences: Sequence[IdSequence],
    contexts: Sequence[IdSequence] | None = None,
    top_k: int = 0,
    settings: AdaptSettings | None = None,
) -> list[TextScore]:
    """Score each id sequence adaptively after ``BOS_ID`` and its context (module docstring)."""
    check_adaptable(model)
    settings = settings or AdaptSettings()
    contexts, streams = scoring_streams(sequences, contexts)
    k = min(top_k, model.config.vocab_size)
    scores = []
    # the server's worker runs under inference mode; the copy and its gradients must not
    with torch.inference_mode(False), torch.enable_grad():
        adapter = _Adapter(model, settings)
        for sequence, context, stream in zip(sequences, contexts, streams, strict=True):
            adapter.reset()
            logprobs, top_ids, top_lp = _read_adapting(adapter, stream, settings.segment, k)
            span = slice(len(context), len(context) + len(sequence))
            scores.append(row_score(sequence, 0, span, logprobs, top_ids, top_lp))
    return scores


def _read_adapting(
    adapter: _Adapter, stream: np.ndarray, segment: int, k: int
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Log-probabilities (1, N) of ``stream``'s N predicted ids (and top-k), segment by segment,
    with a step after each segment but the last."""
    model = adapter.model
    device = model.device
    ids = torch.from_numpy(stream).to(device).unsqueeze(0)  # (1, N + 1)
    total = ids.shape[1] - 1
    logprobs = torch.zeros(1, total)
    top_ids = torch.zeros(1, total, k, dtype=torch.long) if k else None
    top_lp = torch.zeros(1, total, k) if k else None
    state: State = model.initial_state(1, device)
    for start in range(0, total, segment):
        stop = min(start + segment, total)
        logits, state = model(ids[:, start:stop], state)  # (1, t, V)
        state = detach_state(state)
        picked, indices, values = target_logprobs(logits, ids[:, start + 1 : stop + 1], k)
        logprobs[:, start:stop] = picked.detach().cpu()
        if top_ids is not None and top_lp is not None:
            assert indices is not None and values is not None
            top_ids[:, start:stop] = indices.cpu()
            top_lp[:, start:stop] = values.detach().cpu()
        if stop < total:
            adapter.update(-picked.mean())
    return logprobs, top_ids, top_lp


def adaptive_score_texts(
    model: CharLM,
    vocab: CharVocab,
    texts: Sequence[str],
    context: str = "",
    top_k: int = 0,
    settings: AdaptSettings | None = None,
) -> list[TextScore]:
    """Score each text adaptively after ``BOS_ID`` and ``context`` (see the module docstring)."""
    ctx = vocab.encode_array(context) if context else np.zeros(0, dtype=np.int64)
    return adaptive_score_id_sequences(
        model,
        [vocab.encode_array(t) for t in texts],
        [ctx for _ in texts],
        top_k=top_k,
        settings=settings,
    )
