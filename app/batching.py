"""Tensor work of the scheduler: reading prompts together, the decode batch, scoring groups.

A recurrent model's state has a fixed size per row (batch on dim 0 of every state tensor), so rows
join and leave the running batch by stacking and selecting state rows: there is no cache to page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from app.engine_requests import GenerationRequest
from models.base import CharLM, State, concat_states, select_state


def advance_prompts(
    model: CharLM, rows: Sequence[GenerationRequest], max_steps: int
) -> list[tuple[GenerationRequest, State, Tensor]]:
    """Feed each row up to ``max_steps`` more of its prompt ids, all rows in one staircase.

    Rows are sorted longest segment first; one forward covers the steps that every still-active
    row has, then the rows whose segment ends there drop out (they must not read padding: that
    would change their recurrent state). So ``k`` distinct segment lengths cost ``k`` forwards of
    shrinking batches and no step is wasted. Returns ``(row, state (1 row), logits (V,))`` for the
    rows whose prompt is now fully read; the others keep their partial state for the next call.
    """
    if not rows:
        return []
    segments = [min(len(r.ids) - r.prompt_pos, max_steps) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: -segments[i])
    longest = segments[order[0]]
    ids = np.zeros((len(rows), longest), dtype=np.int64)  # (R, T); the tail of short rows unread
    for slot, i in enumerate(order):
        row = rows[i]
        ids[slot, : segments[i]] = row.ids[row.prompt_pos : row.prompt_pos + segments[i]]
    device = model.device
    batch_ids = torch.from_numpy(ids).to(device)
    states = [
        rows[i].prompt_state if rows[i].prompt_state is not None else model.initial_state(1, device)
        for i in order
    ]
    state = concat_states(states)  # type: ignore[arg-type]
    done: list[tuple[GenerationRequest, State, Tensor]] = []
    start = 0
    for end in sorted(set(segments)):
        active = sum(1 for s in segments if s >= end)  # a prefix of ``order``
        state = tuple(s[:active] for s in state)
        logits, state = model(batch_ids[:active, start:end], state)  # (active, t, V)
        for slot in range(active):
            i = order[slot]
            if segments[i] != end:
                continue
            row = rows[i]
            row.prompt_pos += end
            row_state = tuple(s[slot : slot + 1].clone() for s in state)
            if row.prompt_pos == len(row.ids):
                row.prompt_state = None
                done.append((row, row_state, logits[slot, -1].clone()))
            else:
                row.prompt_state = row_state
        start = end
    return done


@dataclass
class DecodeBatch:
    """The rows generating now: their state and the logits of each row's next character."""

    rows: list[GenerationRequest]
    state: State | None = None  # each tensor (R, ...)
    logits: Tensor | None = None  # (R, V)

    def __len__(self) -> int:
        return len(self.rows)

    def keep(self, keep: Sequence[int]) -> None:
        """Drop every row not in ``keep`` (indices in order)."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.state, self.logits = None, None
            return
        assert self.state is not None and self.logits is not None
        index = torch.as_tensor(keep, dtype=torch.long, device=self.logits.device)
        self.state = select_state(self.state, index)
        self.logits = self.logits.index_select(0, index)

    def join(self, joined: Sequence[tuple[GenerationRequest, State, Tensor]]) -> None:
        """Append rows that have read their prompt."""
        if not joined:
            return
        states = [s for _, s, _ in joined]
        logits = torch.stack([lg for _, _, lg in joined])
        if self.state is not None and self.logits is not None:
            states.insert(0, self.state)
            logits = torch.cat([self.logits, logits])
        self.rows.extend(r for r, _, _ in joined)
        self.state = concat_states(states)
        self.logits = logits


def plan_score_groups(
    lengths: Sequence[int], max_rows: int, max_elements: int = 64 * 4096
) -> list[list[int]]:
    """Split items (by index) into padded forwards of similar lengths.

    Items are sorted by length; a group closes when it holds ``max_rows`` items, when padding to
    its longest item would exceed ``max_elements`` ids, or when the next item is more than a
    quarter (plus 16) longer than the group's shortest, which bounds the padding wasted.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            shortest = lengths[current[0]]
            too_many = len(current) >= max_rows
            too_big = (len(current) + 1) * lengths[i] > max_elements
            too_uneven = lengths[i] > shortest * 1.25 + 16
            if too_many or too_big or too_uneven:
                groups.append(current)
                current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups
