"""Validation loss with the scoring convention the server uses, read exactly or as parallel streams.

The exact reading (``Reading(streams=1)``, what ``charlm-eval`` uses) scores each document as one
text, as ``/v1/score`` scores it: the model starts from ``initial_state``, reads ``BOS_ID`` first
and then every character, carrying the state through the whole document (``models.scoring``).

The parallel reading (training validation, ``Reading(streams=S)``) cuts long documents into
contiguous pieces of at least ``MIN_STREAM_CHARS`` characters, at most ``S`` pieces over the whole
text, and reads the pieces side by side as the rows of one batch; the state is carried within each
piece. A document's first piece starts exactly as the exact reading does. A later piece starts from
``initial_state`` too, reads ``BOS_ID`` and the ``warmup`` characters before it (read, not scored,
the ``context`` of ``models.scoring``) and then scores its own characters. Every character is
scored once; only the first characters of the later pieces see a shorter history than in the
exact reading, so the figure is an estimate of the exact one, close when ``warmup`` exceeds the
model's memory (docs/evaluation.md gives the measured difference).

A bidirectional model gives the pseudo-log-likelihood of each whole document, every character
seen with its full left and right context (``models.infill``), whatever the reading.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.base import CharLM
from models.infill import pll_score_id_sequences
from models.sampling import SamplingParams, generate
from models.scoring import PerCharFigures, chunk_length
from models.vocab import BOS_ID, UNK_ID, CharVocab

#: the shortest piece the parallel reading cuts a document into, in scored characters: with the
#: default warm-up the characters read but not scored stay under 1/8 of those scored
MIN_STREAM_CHARS = 1024
#: rows x time steps x hidden units of one forward on the CPU: about a million keeps a chunk's
#: activations in the cache (4 MB a tensor, 16 MB of LSTM gates); chunks of 2,048 steps read
#: 1.2-1.5x slower (docs/evaluation.md)
CPU_CHUNK_ELEMENTS = 1 << 20
#: the target ``cross_entropy`` skips: positions read but not scored (warm-up, padding)
_NOT_SCORED = -100


@dataclass(frozen=True)
class EvalResult(PerCharFigures):
    """Summed negative log-likelihood over ``num_chars`` characters."""

    total_nats: float
    num_chars: int
    num_unknown: int

    @property
    def nats_per_char(self) -> float:
        return self.total_nats / self.num_chars if self.num_chars else math.nan

    def to_dict(self) -> dict[str, float | int]:
        return {
            "nats_per_char": self.nats_per_char,
            "bits_per_char": self.bits_per_char,
            "perplexity": self.perplexity,
            "num_chars": self.num_chars,
            "num_unknown": self.num_unknown,
        }


@dataclass(frozen=True)
class Piece:
    """Characters ``[start, stop)`` of document ``doc``, scored after reading ``[context, start)``
    unscored."""

    doc: int
    context: int
    start: int
    stop: int

    @property
    def num_read(self) -> int:
        return self.stop - self.context


@dataclass(frozen=True)
class Reading:
    """How the documents are read: ``streams`` rows per forward, long documents cut into
    contiguous pieces of at least ``MIN_STREAM_CHARS`` characters, ``streams`` pieces at most
    unless there are more documents (see the module docstring); ``streams=1`` is the exact
    reading."""

    streams: int = 1
    warmup: int = 128

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise ValueError("streams must be >= 1")
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")

    def pieces(self, lengths: Sequence[int]) -> list[Piece]:
        """The pieces of documents of these ``lengths`` (empty ones have none), in order."""
        total = sum(lengths)
        if self.streams == 1:
            piece_len = max(total, 1)  # one piece per document
        else:
            piece_len = max(MIN_STREAM_CHARS, math.ceil(total / self.streams))
        out: list[Piece] = []
        for doc, length in enumerate(lengths):
            # no more pieces than streams over all documents (but one per document at least)
            count = max(1, length // piece_len) if length else 0
            # equal pieces within a document: the batch's rows end together, little padding
            bounds = [round(i * length / count) for i in range(count + 1)] if count else []
            for start, stop in itertools.pairwise(bounds):
                out.append(Piece(doc, max(0, start - self.warmup), start, stop))
        return out

    def batches(
        self, arrays: Sequence[np.ndarray]
    ) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
        """Each forward's texts and contexts (see ``models.scoring``) over the documents
        ``arrays`` (int64 ids)."""
        pieces = self.pieces([len(a) for a in arrays])
        # longest first: each batch's rows have similar lengths, so padding wastes little
        pieces.sort(key=lambda p: p.num_read, reverse=True)
        for first in range(0, len(pieces), self.streams):
            batch = pieces[first : first + self.streams]
            texts = [arrays[p.doc][p.start : p.stop] for p in batch]
            contexts = [arrays[p.doc][p.context : p.start] for p in batch]
            yield texts, contexts


EXACT = Reading(streams=1)


def limit_docs(docs: Sequence[np.ndarray], max_chars: int | None) -> list[np.ndarray]:
    """The leading documents (the last one cut) holding at most ``max_chars`` characters."""
    if max_chars is None:
        return list(docs)
    kept: list[np.ndarray] = []
    left = max_chars
    for doc in docs:
        if left <= 0:
            break
        kept.append(doc[:left])
        left -= len(kept[-1])
    return kept


def evaluate_docs(
    model: CharLM, docs: Sequence[np.ndarray], reading: Reading = EXACT
) -> EvalResult:
    """Score ``docs`` as ``reading`` says and sum (eval mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        if not model.can_generate:
            return _pseudo_likelihood(model, docs)
        arrays = [np.asarray(doc, dtype=np.int64) for doc in docs]
        batches = reading.batches(arrays)
        total = sum((read_batch(model, texts, contexts) for texts, contexts in batches), 0.0)
        unknown = sum(int(np.count_nonzero(a == UNK_ID)) for a in arrays)  # each scored once
        return EvalResult(total, sum(len(a) for a in arrays), unknown)
    finally:
        model.train(was_training)


def read_steps(model: CharLM, batch: int) -> int:
    """Time steps per forward when ``read_batch`` reads ``batch`` rows: on the CPU about
    ``CPU_CHUNK_ELEMENTS`` activations (16 steps at least), elsewhere as ``models.scoring``."""
    steps = chunk_length(batch, model.config.vocab_size)
    if model.device.type != "cpu":
        return steps
    return max(16, min(steps, CPU_CHUNK_ELEMENTS // (batch * model.config.hidden_size)))


@torch.inference_mode()
def read_batch(model: CharLM, texts: Sequence[np.ndarray], contexts: Sequence[np.ndarray]) -> float:
    """The negative log-likelihood of ``texts`` (int64 ids) summed, read as the rows of one
    batch with the convention of ``models.scoring``: each row reads ``BOS_ID``, its context
    (not scored) and its text, from ``initial_state``; one ``cross_entropy`` per forward scores
    every position, those not scored skipped, and the figures are summed in float64 (the sum of
    ``score_id_sequences``' figures; with the same chunks, the same figures)."""
    batch = len(texts)
    steps = max(len(c) + len(t) for t, c in zip(texts, contexts, strict=True))  # per row
    if not steps:
        return 0.0
    ids = np.full((batch, steps), BOS_ID, dtype=np.int64)  # (B, T): BOS, context, text[:-1]
    targets = np.full((batch, steps), _NOT_SCORED, dtype=np.int64)  # (B, T): the text
    for row, (text, context) in enumerate(zip(texts, contexts, strict=True)):
        ids[row, 1 : 1 + len(context)] = context
        ids[row, 1 + len(context) : len(context) + len(text)] = text[:-1]
        targets[row, len(context) : len(context) + len(text)] = text
    device = model.device
    inputs = torch.from_numpy(ids).to(device)
    wanted = torch.from_numpy(targets).to(device)
    vocab = model.config.vocab_size
    state = model.initial_state(batch, device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    chunk = read_steps(model, batch)
    for start in range(0, steps, chunk):
        logits, state = model(inputs[:, start : start + chunk], state)  # (B, t, V)
        nats = F.cross_entropy(  # (B * t,): 0 where not scored
            logits.reshape(-1, vocab).float(),
            wanted[:, start : start + chunk].reshape(-1),
            ignore_index=_NOT_SCORED,
            reduction="none",
        )
        total += nats.sum(dtype=torch.float64)  # float32 sums drift by 1e-7 of the total
    return float(total)


def sample_text(model: CharLM, vocab: CharVocab, chars: int) -> str | None:
    """``chars`` characters from the start of a text at temperature 0.8 with seed 0, as shown at
    each validation (``None`` when there are none or the model cannot generate)."""
    if not chars or not model.can_generate:
        return None
    was_training = model.training
    model.eval()
    try:
        (gen,) = generate(model, vocab, "", chars, SamplingParams(temperature=0.8), 0)
    finally:
        model.train(was_training)
    return gen.text


def _pseudo_likelihood(model: CharLM, docs: Sequence[np.ndarray]) -> EvalResult:
    total = 0.0
    chars = 0
    unknown = 0
    for doc in docs:
        if len(doc) == 0:
            continue
        ids = np.asarray(doc, dtype=np.int64)
        (score,) = pll_score_id_sequences(model, [ids])
        total -= score.logprob
        chars += score.num_chars
        unknown += int(np.count_nonzero(ids == UNK_ID))
    return EvalResult(total, chars, unknown)
