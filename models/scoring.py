"""Scoring: the log-probability of texts, character by character, with the state carried.

The start-of-text context: every text is scored as if it began a fresh document. The model starts
from ``initial_state`` and first reads ``BOS_ID``; so the first character is scored too, given
nothing. An optional ``context`` is read after ``BOS_ID`` and conditions the text without being
scored. Characters outside the vocabulary are scored as ``UNK_ID`` and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

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


@dataclass
class TextScore:
    """Per-character natural-log probabilities of one text, and the optional top-k."""

    logprobs: Tensor  # (N,) float32
    num_unknown: int
    top_ids: Tensor | None = None  # (N, k) long
    top_logprobs: Tensor | None = None  # (N, k) float32

    @property
    def num_chars(self) -> int:
        return int(self.logprobs.numel())

    @property
    def logprob(self) -> float:
        return float(self.logprobs.double().sum())

    @property
    def nats_per_char(self) -> float:
        return -self.logprob / self.num_chars if self.num_chars else 0.0

    @property
    def bits_per_char(self) -> float:
        return bits_per_char(self.nats_per_char)

    @property
    def perplexity(self) -> float:
        return perplexity(self.nats_per_char)


def chunk_length(batch_size: int, vocab_size: int) -> int:
    """Time steps per forward so that the log-probabilities stay within a fixed memory bound."""
    return max(1, min(_MAX_CHUNK, _MAX_LOGIT_ELEMENTS // max(1, batch_size * vocab_size)))


@torch.inference_mode()
def score_id_sequences(
    model: CharLM,
    sequences: Sequence[np.ndarray | Sequence[int]],
    contexts: Sequence[np.ndarray | Sequence[int]] | None = None,
    top_k: int = 0,
) -> list[TextScore]:
    """Score several id sequences in one padded batch (padding trails, so it changes nothing)."""
    if not sequences:
        return []
    if contexts is None:
        contexts = [[] for _ in sequences]
    if len(contexts) != len(sequences):
        raise ValueError("contexts and sequences must have the same length")
    device = model.device
    # stream i: BOS, context, text; targets: context, text
    streams = [
        np.concatenate(
            [[BOS_ID], np.asarray(ctx, dtype=np.int64), np.asarray(seq, dtype=np.int64)]
        ).astype(np.int64)
        for seq, ctx in zip(sequences, contexts, strict=True)
    ]
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
        logits, state = model(ids[:, start:stop], state)
        lp = torch.log_softmax(logits.float(), dim=-1)  # (B, t, V)
        targets = ids[:, start + 1 : stop + 1]
        logprobs[:, start:stop] = lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
        if top_ids is not None and top_lp is not None:
            values, indices = lp.topk(k, dim=-1)
            top_lp[:, start:stop] = values.cpu()
            top_ids[:, start:stop] = indices.cpu()
    results = []
    for i, (seq, ctx) in enumerate(zip(sequences, contexts, strict=True)):
        first, last = len(ctx), len(ctx) + len(seq)
        seq_arr = np.asarray(seq)
        results.append(
            TextScore(
                logprobs=logprobs[i, first:last].clone(),
                num_unknown=int(np.count_nonzero(seq_arr == UNK_ID)),
                top_ids=top_ids[i, first:last].clone() if top_ids is not None else None,
                top_logprobs=top_lp[i, first:last].clone() if top_lp is not None else None,
            )
        )
    return results


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
