"""Tensor work of the scheduler around the decode batch (``app.engine.decode``): reading prompts
together, and the process's oneDNN setting.

A recurrent model's state has a fixed size per row (batch on dim 0 of every state tensor), so a row
that has read its prompt joins the decode batch by stacking its state rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from app.engine.requests import GenerationRequest
from models.base import CharLM, State, concat_states


def use_onednn(enabled: bool) -> None:
    """Switch oneDNN (mkldnn) for the forwards that follow; a process-wide flag, set only when it
    changes, so a round of decode steps alone never touches it. Its LSTM kernel is ~3x slower
    than PyTorch's own for one-character steps of small batches, yet faster over long sequences
    (measured on CPU): decode steps run without it; prompts, scoring and an idle engine leave
    the process's setting."""
    if torch.backends.mkldnn.enabled != enabled:
        torch.backends.mkldnn.enabled = enabled  # type: ignore[assignment]


def staircase(
    model: CharLM, inputs: Sequence[np.ndarray], states: Sequence[State | None]
) -> list[tuple[State, Tensor]]:
    """Run each row over its own ids (lengths may differ), all rows in one batch.

    Rows are sorted longest first; one forward covers the steps every still-active row has, then
    the rows whose input ends there drop out (they must not read padding: that would change their
    recurrent state). So ``k`` distinct lengths cost ``k`` forwards of shrinking batches and no
    step is wasted. Returns, per row in the given order, its state after its last id (1 row) and
    its logits ``(T_i, V)``.
    """
    lengths = [len(ids) for ids in inputs]
    order = sorted(range(len(inputs)), key=lambda i: -lengths[i])
    device = model.device
    padded = np.zeros((len(inputs), lengths[order[0]]), dtype=np.int64)  # (R, T)
    for slot, i in enumerate(order):
        padded[slot, : lengths[i]] = inputs[i]
    ids = torch.from_numpy(padded).to(device)
    fresh = model.initial_state(1, device)
    state = concat_states([s if (s := states[i]) is not None else fresh for i in order])
    pieces: list[list[Tensor]] = [[] for _ in inputs]
    out: list[tuple[State, Tensor] | None] = [None] * len(inputs)
    start = 0
    for end in sorted(set(lengths)):
        active = sum(1 for n in lengths if n >= end)  # a prefix of ``order``
        state = tuple(s[:active] for s in state)
        logits, state = model(ids[:active, start:end], state)  # (active, t, V)
        for slot in range(active):
            i = order[slot]
            pieces[i].append(logits[slot])
            if lengths[i] == end:
                row_state = tuple(s[slot : slot + 1].clone() for s in state)
                out[i] = (row_state, torch.cat(pieces[i]) if len(pieces[i]) > 1 else pieces[i][0])
        start = end
    return [o for o in out if o is not None]


def advance_prompts(
    model: CharLM, rows: Sequence[GenerationRequest], max_steps: int
) -> list[tuple[GenerationRequest, State, Tensor]]:
    """Feed each row up to ``max_steps`` more of its prompt ids, all rows in one staircase.

    Returns ``(row, state (1 row), logits (V,))`` for the rows whose prompt is now fully read;
    the others keep their partial state for the next call.
    """
    if not rows:
        return []
    segments = [r.ids[r.prompt_pos : r.prompt_pos + max_steps] for r in rows]
    results = staircase(model, segments, [r.prompt_state for r in rows])
    done: list[tuple[GenerationRequest, State, Tensor]] = []
    for row, segment, (state, logits) in zip(rows, segments, results, strict=True):
        row.prompt_pos += len(segment)
        if row.prompt_pos == len(row.ids):
            row.prompt_state = None
            done.append((row, state, logits[-1].clone()))
        else:
            row.prompt_state = state
    return done
