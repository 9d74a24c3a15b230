"""Tensor work of the scheduler: reading prompts together, the decode batch, scoring groups, and the
process's oneDNN setting around them.

A recurrent model's state has a fixed size per row (batch on dim 0 of every state tensor), so rows
join and leave the running batch by stacking and selecting state rows: there is no cache to page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from app.engine.requests import GenerationRequest
from models.base import CharLM, State, concat_states, select_state
from models.sampling import RowSettings, choose_next_rows


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


@dataclass
class DecodeBatch:
    """The rows generating now: their state and the logits of each row's next character.

    The rows' sampling settings as tensors are built once per composition of the batch (rows
    joining or leaving), not at every step.
    """

    rows: list[GenerationRequest]
    state: State | None = None  # each tensor (R, ...)
    logits: Tensor | None = None  # (R, V)
    _settings: RowSettings | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def settings(self) -> RowSettings:
        """Every row's sampling settings, in row order."""
        if self._settings is None:
            assert self.logits is not None
            self._settings = RowSettings.of([r.sampling for r in self.rows], self.logits.device)
        return self._settings

    def choose(self) -> Tensor:
        """The next id of every row (R,), each drawn with its own settings and generator."""
        assert self.logits is not None
        settings = self.settings
        uniforms = None
        if not settings.all_greedy:
            uniforms = torch.tensor([r.next_uniform() for r in self.rows])
        # with the uniforms given (or every row greedy), no generator is read here
        return choose_next_rows(self.logits, settings, (), uniforms)

    def read(self, model: CharLM, next_ids: Tensor) -> None:
        """Feed each row its chosen id (R,): the logits of the next character follow."""
        assert self.state is not None
        use_onednn(False)
        logits, self.state = model(next_ids.unsqueeze(-1), self.state)  # (R, 1, V)
        self.logits = logits[:, -1]

    def keep(self, keep: Sequence[int]) -> None:
        """Drop every row not in ``keep`` (indices in order)."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        self._settings = None
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
        self._settings = None
