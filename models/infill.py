"""Gap filling and pseudo-log-likelihood scoring with bidirectional models.

Pseudo-log-likelihood (Besag 1975; used for masked language models by Salazar et al. 2020): the
sum over characters of ``log p(c_t | every other character)``. A bidirectional model here predicts
each character from both sides in one pass (see ``models.bidirectional``), so the PLL of a text
costs one forward. It is not a probability of the text: its bits per character are not comparable
with a left-to-right model's (they are lower, since each character also sees its right context).

Infilling: the characters marked by a mask character are chosen to maximise each one's conditional
given all the others, by iterated conditional modes (Besag 1986): a left-to-right pass picks each
gap character given what is filled so far, then sweeps re-pick each one given the rest until no
choice changes (or a sweep limit is hit). Each pick is one forward pass over the text.

Alternatives per gap (``top_k``): a beam search over the gap's characters, left to right. At each
position every beam proposes its ``k`` likeliest characters, and the expanded beams are ranked by
the pseudo-log-likelihood of the whole text with that gap filled so (one batched pass per step);
the best ``k`` go on. The gap is filled with the best alternative, which is at least as good as the
iterated-conditional-modes fill it starts from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from models.base import CharLM
from models.bidirectional import BidirectionalLM
from models.scoring import IdSequence, TextScore, chunk_length, row_score, scoring_streams
from models.vocab import BOS_ID, UNK_ID, CharVocab

MAX_SWEEPS = 3
#: beams kept per gap when alternatives are asked for
MAX_ALTERNATIVES = 5


class InfillError(ValueError):
    """An infill request that cannot be served (no gap, bad mask, unidirectional model)."""


def _require_bidirectional(model: CharLM) -> None:
    if model.can_generate:
        raise InfillError(
            f"architecture {model.config.arch!r} reads left to right only; "
            "infilling and pseudo-log-likelihood need a bidirectional model (bilstm, bigru)"
        )


@torch.inference_mode()
def pll_score_id_sequences(
    model: CharLM,
    sequences: Sequence[IdSequence],
    contexts: Sequence[IdSequence] | None = None,
    top_k: int = 0,
) -> list[TextScore]:
    """Per-character ``log p(c_t | all other characters)`` of each sequence (after BOS, context)."""
    _require_bidirectional(model)
    contexts, streams = scoring_streams(sequences, contexts)
    vocab_size = model.config.vocab_size
    k = min(top_k, vocab_size)
    results: list[TextScore] = []
    # rows per forward so the (B, T, V) log-probabilities stay within scoring's memory bound;
    # a stream longer than that bound goes alone, its logits computed in pieces
    steps = chunk_length(1, vocab_size)
    longest = max((len(s) for s in streams), default=1)
    rows = max(1, steps // longest)
    for first in range(0, len(streams), rows):
        group = streams[first : first + rows]
        lengths = torch.tensor([len(s) for s in group])
        padded = torch.full((len(group), int(lengths.max())), BOS_ID, dtype=torch.long)
        for i, stream in enumerate(group):
            padded[i, : len(stream)] = torch.from_numpy(stream.astype(np.int64))
        picked, top_lp, top_ids = _pll_logprobs(model, padded, lengths, steps, k)
        for i, stream in enumerate(group):
            span = slice(len(contexts[first + i]), len(stream) - 1)  # the text, after its context
            results.append(row_score(sequences[first + i], i, span, picked, top_ids, top_lp))
    return results


def _pll_logprobs(
    model: CharLM, padded: Tensor, lengths: Tensor, steps: int, k: int
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-position log-probability of ``padded[:, 1:]`` (B, T - 1), and the top ``k``.

    One forward when the batch fits in ``steps`` positions; otherwise (one stream, no padding)
    the model's ``logits_in_pieces``, which gives the same figures in bounded memory.
    """
    ids = padded.to(model.device)
    targets = padded[:, 1:]  # (B, T - 1): row t of the logits predicts ids[:, t + 1]
    predicted = targets.shape[1]
    if ids.shape[1] > steps and isinstance(model, BidirectionalLM):
        pieces: Iterable[tuple[int, Tensor]] = model.logits_in_pieces(ids, steps)
    else:
        pieces = [(0, model(ids, None, lengths=lengths)[0])]
    picked = torch.zeros(targets.shape)
    top_lp = torch.zeros(*targets.shape, k) if k else None
    top_ids = torch.zeros(*targets.shape, k, dtype=torch.long) if k else None
    for start, logits in pieces:
        stop = min(start + logits.shape[1], predicted)  # the last row predicts past the end
        logprobs = torch.log_softmax(logits[:, : stop - start].float(), dim=-1).cpu()
        picked[:, start:stop] = logprobs.gather(-1, targets[:, start:stop, None]).squeeze(-1)
        if top_lp is not None and top_ids is not None:
            top_lp[:, start:stop], top_ids[:, start:stop] = logprobs.topk(k, dim=-1)
    return picked, top_lp, top_ids


def pll_score_texts(
    model: CharLM, vocab: CharVocab, texts: Sequence[str], context: str = "", top_k: int = 0
) -> list[TextScore]:
    """Pseudo-log-likelihood of each text, read after BOS and ``context`` like ``score_texts``."""
    ctx = vocab.encode_array(context) if context else np.zeros(0, dtype=np.int64)
    return pll_score_id_sequences(
        model, [vocab.encode_array(t) for t in texts], [ctx for _ in texts], top_k=top_k
    )


@dataclass
class FilledGap:
    """One run of masked characters: where it starts in the text, and what was chosen."""

    start: int
    text: str
    #: per masked position: (character, probability) best first, given the final fill
    candidates: list[list[tuple[str, float]]] = field(default_factory=list)
    #: other fills of the whole gap with the text's pseudo-log-likelihood, best first
    alternatives: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class InfillResult:
    text: str
    gaps: list[FilledGap]
    #: pseudo-log-likelihood (natural log) of the filled text, and its characters' count
    pll: float
    num_chars: int


def _conditionals(model: CharLM, ids: Tensor, specials: bool = False) -> Tensor:
    """(T - 1, V) log-probabilities of each stream position given the rest.

    ``specials=False`` excludes ``<unk>`` and ``<bos>``, which no gap may be filled with.
    """
    logits, _ = model(ids.unsqueeze(0))
    logits = logits[0, :-1].float()
    if specials:
        return torch.log_softmax(logits, dim=-1)
    logits[:, UNK_ID] = float("-inf")
    logits[:, BOS_ID] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


def _plls(model: CharLM, streams: Tensor) -> Tensor:
    """(B,) pseudo-log-likelihood of each stream (B, T), every character after BOS counted."""
    logits, _ = model(streams)
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logprobs.gather(-1, streams[:, 1:].unsqueeze(-1)).squeeze(-1).sum(dim=1)


def _beam_search_gap(
    model: CharLM, stream: Tensor, positions: list[int], width: int
) -> tuple[Tensor, Tensor]:
    """The ``width`` best fills of the stream ``positions`` (one gap): streams (b, T), PLLs (b,)."""
    beams = stream.unsqueeze(0)  # (1, T), the current fill first
    scores = _plls(model, beams)
    for pos in positions:
        logits, _ = model(beams)
        proposals = logits[:, pos - 1].float()  # (b, V): row pos - 1 predicts stream[pos]
        proposals[:, [UNK_ID, BOS_ID]] = float("-inf")
        top = proposals.topk(min(width, proposals.shape[-1] - 2), dim=-1).indices  # (b, w)
        expanded = beams.repeat_interleave(top.shape[1], dim=0)
        expanded[:, pos] = top.reshape(-1)
        expanded = torch.cat([beams, expanded]).unique(dim=0)  # keep the beams themselves too
        scores = _plls(model, expanded)
        order = scores.argsort(descending=True)[:width]
        beams, scores = expanded[order], scores[order]
    return beams, scores


@torch.inference_mode()
def infill_text(
    model: CharLM,
    vocab: CharVocab,
    text: str,
    mask: str = "_",
    top_k: int = 0,
    max_sweeps: int = MAX_SWEEPS,
) -> InfillResult:
    """Replace every ``mask`` character of ``text`` by the model's choice (see module docstring)."""
    _require_bidirectional(model)
    if len(mask) != 1:
        raise InfillError(f"mask must be exactly one character, got {mask!r}")
    holes = [i for i, ch in enumerate(text) if ch == mask]
    if not holes:
        raise InfillError(f"text has no masked character {mask!r} to fill")
    stream = torch.tensor([BOS_ID, *vocab.encode(text)], dtype=torch.long, device=model.device)
    # stream index of text position i is i + 1; logits row i predicts stream index i + 1
    for i in holes:
        stream[i + 1] = UNK_ID
    for i in holes:  # first pass, left to right: unfilled holes to the right read as <unk>
        stream[i + 1] = int(_conditionals(model, stream)[i].argmax())
    for _ in range(max_sweeps):
        changed = False
        for i in holes:
            best = int(_conditionals(model, stream)[i].argmax())
            if best != int(stream[i + 1]):
                stream[i + 1] = best
                changed = True
        if not changed:
            break
    runs: list[list[int]] = []  # stream positions of each gap
    for i in holes:
        if runs and runs[-1][-1] == i:
            runs[-1].append(i + 1)
        else:
            runs.append([i + 1])
    alternatives: list[list[tuple[str, float]]] = []
    if top_k:
        for run in runs:
            beams, scores = _beam_search_gap(model, stream, run, min(top_k, MAX_ALTERNATIVES))
            stream = beams[0].clone()  # the best fill of this gap, given the others
            alternatives.append(
                [
                    (vocab.decode(b[run].tolist()), float(s))
                    for b, s in zip(beams, scores, strict=True)
                ]
            )
    final = _conditionals(model, stream)
    chars = list(text)
    for i in holes:
        chars[i] = vocab.token(int(stream[i + 1]))
    filled = "".join(chars)
    gaps: list[FilledGap] = []
    for i in holes:
        if gaps and gaps[-1].start + len(gaps[-1].text) == i:
            gap = gaps[-1]
            gap.text += chars[i]
        else:
            gap = FilledGap(start=i, text=chars[i])
            if alternatives:
                gap.alternatives = alternatives[len(gaps)]
            gaps.append(gap)
        if top_k:
            values, indices = final[i].topk(min(top_k, final.shape[-1] - 2))
            gap.candidates.append(
                [
                    (vocab.token(int(j)), float(v.exp()))
                    for v, j in zip(values, indices, strict=True)
                ]
            )
    targets = stream[1:].unsqueeze(-1)
    pll = float(_conditionals(model, stream, specials=True).gather(-1, targets).sum())
    return InfillResult(text=filled, gaps=gaps, pll=pll, num_chars=len(text))
