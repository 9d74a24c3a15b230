"""Contiguous streams for truncated backpropagation through time.

The training stream is cut into ``num_streams`` equal rows (char-rnn's and PyTorch's
word_language_model's batching); step ``k`` reads columns ``[pos, pos + seq_len]`` of every row,
so row ``b`` of one batch continues row ``b`` of the previous one and the recurrent state can be
carried across. With several processes, rank ``r`` takes rows ``[r * B, (r + 1) * B)``.

Each epoch starts the rows at a fresh random offset below ``seq_len`` (so chunk boundaries move
from epoch to epoch); the carried state is reset at that point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


class StreamError(ValueError):
    """A corpus too short for the requested batch layout."""


@dataclass
class StreamPosition:
    """Where the batcher is: everything needed to continue exactly after a resume."""

    epoch: int = 0
    offset: int = 0  # this epoch's random start column
    pos: int = 0  # next chunk's first column, relative to ``offset``


class StreamBatcher:
    """Yields ``(inputs, targets)`` of shape (B, T) int64 and says when an epoch starts."""

    def __init__(
        self,
        ids: np.ndarray,
        batch_size: int,
        seq_len: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        if batch_size < 1 or seq_len < 1:
            raise StreamError("batch size and sequence length must be positive")
        num_streams = batch_size * world_size
        stream_len = len(ids) // num_streams
        # one chunk needs seq_len + 1 characters, plus room for the random offset
        needed = num_streams * (2 * seq_len + 1)
        if stream_len < 2 * seq_len + 1:
            raise StreamError(
                f"training text is too short: {len(ids)} characters, but {num_streams} streams"
                f" of sequence length {seq_len} need at least {needed};"
                " lower --batch-size or --seq-len, or add text"
            )
        rows = ids[: num_streams * stream_len].reshape(num_streams, stream_len)
        self.rows = rows[rank * batch_size : (rank + 1) * batch_size]  # (B, L) view
        self.seq_len = seq_len
        self.seed = seed
        self.position = StreamPosition()
        self.position.offset = self._offset_for(0)

    @property
    def stream_len(self) -> int:
        return int(self.rows.shape[1])

    @property
    def chunks_per_epoch(self) -> int:
        return (self.stream_len - 1 - self.seq_len) // self.seq_len + 1

    def _offset_for(self, epoch: int) -> int:
        # epoch 0 starts at column 0 (the stream's true beginning); later epochs shift
        if epoch == 0:
            return 0
        rng = np.random.default_rng([self.seed, epoch])
        return int(rng.integers(0, self.seq_len))

    def state_dict(self) -> dict[str, int]:
        """The position, JSON-able: ``epoch``, ``offset`` and ``pos``."""
        return asdict(self.position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = StreamPosition(
            epoch=int(state["epoch"]), offset=int(state["offset"]), pos=int(state["pos"])
        )

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The next chunk and whether it starts a new pass (the caller resets the state)."""
        p = self.position
        start = p.offset + p.pos
        new_epoch = p.pos == 0
        if start + self.seq_len + 1 > self.stream_len:
            p.epoch += 1
            p.offset = self._offset_for(p.epoch)
            p.pos = 0
            start = p.offset
            new_epoch = True
        chunk = np.asarray(self.rows[:, start : start + self.seq_len + 1], dtype=np.int64)
        p.pos += self.seq_len
        tensor = torch.from_numpy(chunk)
        return tensor[:, :-1], tensor[:, 1:], new_epoch
