"""The decode batch: the rows generating now, every per-row quantity a tensor or an array in row
order, so that a step is whole-batch tensor work.

A step draws every row's next character (``models.sampling.choose_next_rows``) with the row's own
uniform number (``models.rng``: a hash of its seed and its position) and writes the ids into a
preallocated buffer; nothing per row runs in Python. What happens to a row only now and then is
done apart, for the rows concerned: decoding its ids into text (``texts``, at the publishing
cadence), seeing that it reached ``max_chars`` (when ``length_due`` says one may have), a stop
string, a deadline, a cancellation.

Columns: the id buffer ``ids`` (R, K) and the block of uniform numbers ``uniforms`` (K, R) share
their columns; a step fills column ``col``. Row ``r`` draws its character number
``base[r] + c`` at column ``c`` (a row that joins at column ``c`` has ``base = -c``); when the
block is used up (``full``) the caller decodes every row and ``renew`` starts the next block.
Rows join and leave by stacking and selecting rows (``torch.cat``, ``index_select`` and numpy
indexing); a recurrent state has a fixed size per row (batch on dim 0), so there is no cache to
page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from app.engine.batching import use_onednn
from app.engine.requests import GenerationRequest
from models import rng
from models.base import CharLM, State, concat_states
from models.sampling import RowSettings, choose_next_rows
from models.vocab import CharVocab

#: steps per block: columns of the id buffer and of the block of uniform numbers
BLOCK = 128


def code_point_table(vocab: CharVocab) -> np.ndarray:
    """id -> code point (uint32); the special ids, which the sampler never picks, map to U+FFFD."""
    table = np.full(len(vocab), 0xFFFD, dtype=np.uint32)
    for i in range(len(vocab)):
        token = vocab.token(i)
        if len(token) == 1:
            table[i] = ord(token)
    return table


class DecodeBatch:
    """The rows generating now: their state, the logits of their next character, their settings,
    seeds and positions, and the ids drawn but not yet decoded."""

    def __init__(self, vocab: CharVocab, device: torch.device, block: int = BLOCK) -> None:
        self.device, self.block = device, block
        self.rows: list[GenerationRequest] = []
        self.state: State | None = None  # each tensor (R, ...)
        self.logits: Tensor | None = None  # (R, V) of the next character
        self.next_ids: Tensor | None = None  # (R,) drawn at the last step, not read yet
        self.settings: RowSettings | None = None
        self.ids = torch.zeros((0, block), dtype=torch.long, device=device)  # (R, K)
        self.uniforms = torch.zeros((block, 0), dtype=torch.float64, device=device)  # (K, R)
        self.col = 0  # the column the next step fills
        self.seeds = np.zeros(0, dtype=np.int64)
        self.base = np.zeros(0, dtype=np.int64)  # character number drawn at column 0
        self.starts = np.zeros(0, dtype=np.int64)  # first column not decoded yet
        self.max_chars = np.zeros(0, dtype=np.int64)
        self.deadlines = np.zeros(0, dtype=np.float64)
        self.fresh = np.zeros(0, dtype=bool)  # rows that have drawn no character yet
        self.any_fresh = False
        self.deadline = math.inf  # the earliest deadline of a row
        self.length_due = math.inf  # the column at which the first row reaches ``max_chars``
        self._table = code_point_table(vocab)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def full(self) -> bool:
        """Every column of the block is filled: decode all rows, then ``renew``."""
        return self.col == self.block

    def produced(self) -> np.ndarray:
        """Characters each row has drawn (R,)."""
        return self.base + self.col

    # ------------------------------------------------------------------ the step
    def choose(self) -> None:
        """Draw every row's next id (R,) into the id buffer and ``next_ids``."""
        assert self.logits is not None and self.settings is not None
        next_ids = choose_next_rows(self.logits, self.settings, self.uniforms[self.col])
        self.ids[:, self.col] = next_ids
        self.next_ids = next_ids
        self.col += 1

    def read(self, model: CharLM) -> None:
        """Feed each row the id it drew: the logits of the next character follow."""
        assert self.state is not None and self.next_ids is not None
        use_onednn(False)
        logits, self.state = model.step(self.next_ids.unsqueeze(-1), self.state)  # (R, 1, V)
        self.logits = logits[:, -1]
        self.next_ids = None

    # ------------------------------------------------------------------ rare, per row
    def take_fresh(self) -> np.ndarray:
        """The rows that drew their first character at the last step (they are not fresh now)."""
        index = np.flatnonzero(self.fresh)
        self.fresh[:] = False
        self.any_fresh = False
        return index

    def texts(self, index: np.ndarray) -> list[str]:
        """The characters rows ``index`` drew since they were last decoded, as text; they count
        as decoded from now on."""
        col = self.col
        starts = self.starts[index]
        first = int(starts.min()) if len(starts) else col
        if first == col:
            return [""] * len(index)
        ids = self.ids[torch.from_numpy(index).to(self.device), first:col].cpu().numpy()
        width = col - first
        text = self._table[ids].tobytes().decode("utf-32-le", errors="surrogatepass")
        self.starts[index] = col
        return [
            text[i * width + s - first : (i + 1) * width] for i, s in enumerate(starts.tolist())
        ]

    def reached_length(self) -> np.ndarray:
        """Rows that have drawn their ``max_chars`` characters."""
        return np.flatnonzero(self.produced() >= self.max_chars)

    def renew(self) -> None:
        """Start the next block: every row has been decoded (``texts``) up to the last column."""
        assert self.full and bool((self.starts == self.col).all())
        self.base += self.block
        self.col = 0
        self.starts[:] = 0
        self.uniforms = self._uniform_block(self.seeds, self.base)
        self._update_bounds()

    def keep(self, keep: np.ndarray) -> None:
        """Drop every row not in ``keep`` (indices in order)."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep.tolist()]
        if not self.rows:
            self._clear()
            return
        assert self.state is not None and self.logits is not None and self.settings is not None
        index = torch.from_numpy(keep).to(self.device)
        self.state = tuple(s.index_select(0, index) for s in self.state)
        self.logits = self.logits.index_select(0, index)
        if self.next_ids is not None:
            self.next_ids = self.next_ids.index_select(0, index)
        self.settings = self.settings.select(index)
        self.ids = self.ids.index_select(0, index)
        self.uniforms = self.uniforms.index_select(1, index)
        for name in ("seeds", "base", "starts", "max_chars", "deadlines", "fresh"):
            setattr(self, name, getattr(self, name)[keep])
        self.any_fresh = bool(self.fresh.any())
        self._update_bounds()

    def join(self, joined: Sequence[tuple[GenerationRequest, State, Tensor]]) -> None:
        """Append rows that have read their prompt: ``(request, state (1 row), logits (V,))``."""
        if not joined:
            return
        rows = [r for r, _, _ in joined]
        n = len(rows)
        seeds = np.array([r.seed for r in rows], dtype=np.int64)
        base = np.full(n, -self.col, dtype=np.int64)
        states = [s for _, s, _ in joined]
        logits = torch.stack([lg for _, _, lg in joined])
        settings = RowSettings.of([r.sampling for r in rows], self.device)
        if self.rows:
            assert self.state is not None and self.logits is not None and self.settings
            states.insert(0, self.state)
            logits = torch.cat([self.logits, logits])
            settings = self.settings.cat(settings)
        self.rows.extend(rows)
        self.state = concat_states(states)
        self.logits = logits
        self.settings = settings
        self.ids = torch.cat([self.ids, self.ids.new_zeros((n, self.block))])
        self.uniforms = torch.cat([self.uniforms, self._uniform_block(seeds, base)], dim=1)
        self.seeds = np.concatenate([self.seeds, seeds])
        self.base = np.concatenate([self.base, base])
        self.starts = np.concatenate([self.starts, np.full(n, self.col, dtype=np.int64)])
        self.max_chars = np.concatenate(
            [self.max_chars, np.array([r.params.max_chars for r in rows], dtype=np.int64)]
        )
        self.deadlines = np.concatenate(
            [self.deadlines, np.array([r.deadline for r in rows], dtype=np.float64)]
        )
        self.fresh = np.concatenate([self.fresh, np.ones(n, dtype=bool)])
        self.any_fresh = True
        self._update_bounds()

    # ------------------------------------------------------------------ helpers
    def _uniform_block(self, seeds: np.ndarray, base: np.ndarray) -> Tensor:
        """The numbers rows with ``seeds`` and ``base`` draw at each column (K, n)."""
        columns = torch.arange(self.block, dtype=torch.int64, device=self.device).unsqueeze(1)
        positions = torch.from_numpy(base).to(self.device).unsqueeze(0) + columns
        return rng.uniforms(torch.from_numpy(seeds).to(self.device).unsqueeze(0), positions)

    def _update_bounds(self) -> None:
        self.deadline = float(self.deadlines.min()) if self.rows else math.inf
        self.length_due = int((self.max_chars - self.base).min()) if self.rows else math.inf

    def _clear(self) -> None:
        self.rows = []
        self.state = self.logits = self.next_ids = self.settings = None
        self.ids = self.ids[:0]
        self.uniforms = self.uniforms[:, :0]
        for name in ("seeds", "base", "starts", "max_chars", "deadlines", "fresh"):
            setattr(self, name, getattr(self, name)[:0])
        self.any_fresh = False
        self.col = 0
        self._update_bounds()
