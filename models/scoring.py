"""Scoring: the log-probability of texts, character by character, with the state carried.

The start-of-text context: every text is scored as if it began a fresh document. The model starts
from ``initial_state`` and first reads ``BOS_ID``; so the first character is scored too, given
nothing. An optional ``context`` is read after ``BOS_ID`` and conditions the text without being
scored. Characters outside the vocabulary are scored as ``UNK_ID`` and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from models.base import CharLM, State
from models.vocab import BOS_ID, UNK_ID, CharVocab

#: exp(709) is close to the largest float: ``perplexity`` stops there, so the figure stays finite
MAX_LOG_PERPLEXITY = 709.0
# bound on the (B, T, V) float32 log-probabilities held at once: ~64 MB
_MAX_LOGIT_ELEMENTS = 16 * 1024 * 1024
_MAX_CHUNK = 2048


def bits_per_char(nats_per_char: float) -> float:
    """A loss in nats per character as bits per character (divided by ln 2)."""
    return nats_per_char / math.log(2)


def perplexity(nats_per_char: float) -> float:
    """``exp(nats per character)``, at most ``exp(MAX_LOG_PERPLEXITY)`` (finite, for JSON)."""
    return math.exp(min(nats_per_char, MAX_LOG_PERPLEXITY))


class PerCharFigures:
    """``bits_per_char`` and ``perplexity`` of a class's ``nats_per_char``."""

    @property
    def nats_per_char(self) -> float:
        raise NotImplementedError

    @property
    def bits_per_char(self) -> float:
        return bits_per_char(self.nats_per_char)

    @property
    def perplexity(self) -> float:
        return perplexity(self.nats_per_char)


@dataclass
class TextScore(PerCharFigures):
    """Per-character natural-log probabilities of one text, and the optional top-k."""

    logprobs: Tensor  # (N,) float32
    num_unknown: int
    top_ids: Tensor | None = None  # (N, k) long
    top_logprobs: Tensor | None = None  # (N, k) float32
    logprob: float = field(init=False)  # the sum, in float64

    def __post_init__(self) -> None:
        # summed once, where the score is made: a server's model thread, not its event loop
        self.logprob = float(self.logprobs.double().sum())

    @property
    def num_chars(self) -> int:
        return int(self.logprobs.numel())

    @property
    def nats_per_char(self) -> float:
        return -self.logprob / self.num_chars if self.num_chars else 0.0


def row_score(
    sequence: np.ndarray | Sequence[int],
    row: int,
    span: slice,
    logprobs: Tensor,
    top_ids: Tensor | None = None,
    top_logprobs: Tensor | None = None,
) -> TextScore:
    """The ``TextScore`` of ``sequence`` from ``span`` of ``row`` of batch tensors (B, T, ...)."""

    def part(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else tensor[row, span].clone()

    return TextScore(
        logprobs=logprobs[row, span].clone(),
        num_unknown=int(np.count_nonzero(np.asarray(sequence) == UNK_ID)),
        top_ids=part(top_ids),
        top_logprobs=part(top_logprobs),
    )


def target_logprobs(
    logits: Tensor, targets: Tensor, top_k: int = 0
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The log-probability of each target under its logits, and the top ``top_k`` alternatives.

    ``logits`` (..., V), ``targets`` (...) long -> log-probabilities (...) float32 and, when
    ``top_k``, their ids and log-probabilities (..., k). Without the top-k, the log-softmax and
    the gather are one fused op (``cross_entropy``: the same figures, no (..., V) result kept).
    """
    vocab = logits.shape[-1]
    if not top_k:
        flat = nn.functional.cross_entropy(
            logits.reshape(-1, vocab).float(), targets.reshape(-1), reduction="none"
        )
        return flat.neg().view(targets.shape), None, None
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    values, indices = logprobs.topk(top_k, dim=-1)
    return picked, indices, values


def chunk_length(batch_size: int, vocab_size: int) -> int:
    """Time steps per forward so that the log-probabilities stay within a fixed memory bound."""
    return max(1, min(_MAX_CHUNK, _MAX_LOGIT_ELEMENTS // max(1, batch_size * vocab_size)))


IdSequence = np.ndarray | Sequence[int]


def scoring_streams(
    sequences: Sequence[IdSequence], contexts: Sequence[IdSequence] | None
) -> tuple[Sequence[IdSequence], list[np.ndarray]]:
    """The contexts (none by default) and each stream read: ``BOS_ID``, context, text (int64)."""
    if contexts is None:
        contexts = [[] for _ in sequences]
    if len(contexts) != len(sequences):
        raise ValueError("contexts and sequences must have the same length")
    streams = [
        np.concatenate([[BOS_ID], np.asarray(c, dtype=np.int64), np.asarray(s, dtype=np.int64)])
        for s, c in zip(sequences, contexts, strict=True)
    ]
    return contexts, [stream.astype(np.int64) for stream in streams]


@torch.inference_mode()
def score_id_sequences(
    model: CharLM,
    sequences: Sequence[IdSequence],
    contexts: Sequence[IdSequence] | None = None,
    top_k: int = 0,
) -> list[TextScore]:
    """Score several id sequences in one padded batch (padding trails, so it changes nothing)."""
    if not sequences:
        return []
    device = model.device
    contexts, streams = scoring_streams(sequences, contexts)  # targets: context, text
    lengths = [len(s) - 1 for s in streams]  # number of predicted positions
    batch = len(streams)
    total = max(lengths)
    padded = np.full((batch, total + 1), BOS_ID, dtype=np.int64)
    for i, stream in enumerate(streams):
        padded[i, : len(stream)] = stream
    ids = torch.from_numpy(padded).to(device)
    vocab_size = model.config.vocab_size
    k = min(top_k, vocab_size)
    logprobs = torch.zeros(batch, total)
    top_ids = torch.zeros(batch, total, k, dtype=torch.long) if k else None
    top_lp = torch.zeros(batch, total, k) if k else None
    state: State = model.initial_state(batch, device)
    step = chunk_length(batch, vocab_size)
    for start in range(0, total, step):
        stop = min(start + step, total)
        logits, state = model(ids[:, start:stop], state)  # (B, t, V)
        picked, indices, values = target_logprobs(logits, ids[:, start + 1 : stop + 1], k)
        logprobs[:, start:stop] = picked.cpu()
        if top_ids is not None and top_lp is not None:
            assert indices is not None and values is not None
            top_lp[:, start:stop] = values.cpu()
            top_ids[:, start:stop] = indices.cpu()
    return [
        row_score(seq, i, slice(len(ctx), len(ctx) + len(seq)), logprobs, top_ids, top_lp)
        for i, (seq, ctx) in enumerate(zip(sequences, contexts, strict=True))
    ]


def score_texts(
    model: CharLM,
    vocab: CharVocab,
    texts: Sequence[str],
    context: str = "",
    top_k: int = 0,
) -> list[TextScore]:
    """Score each text (see the module docstring for the start-of-text context)."""
    ctx = vocab.encode_array(context) if context else np.zeros(0, dtype=np.int64)
    return score_id_sequences(
        model, [vocab.encode_array(t) for t in texts], [ctx for _ in texts], top_k=top_k
    )


def score_text(model: CharLM, vocab: CharVocab, text: str, context: str = "") -> TextScore:
    return score_texts(model, vocab, [text], context=context)[0]
