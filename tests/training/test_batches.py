from __future__ import annotations

import numpy as np
import pytest

from training.batches import StreamBatcher, StreamError


def test_rows_continue_from_chunk_to_chunk() -> None:
    ids = np.arange(1000, dtype=np.int32)
    batcher = StreamBatcher(ids, batch_size=4, seq_len=10)
    x1, y1, new1 = batcher.next_batch()
    x2, _, new2 = batcher.next_batch()
    assert new1 and not new2
    assert x1.shape == (4, 10)
    assert (y1[:, :-1] == x1[:, 1:]).all()
    assert (x2[:, 0] == y1[:, -1]).all()  # row b of chunk 2 follows row b of chunk 1
    assert x1[1, 0].item() == 250  # four streams of 250 characters


def test_epoch_wraps_with_new_offset_and_flags_reset() -> None:
    ids = np.arange(400, dtype=np.int32)
    batcher = StreamBatcher(ids, batch_size=2, seq_len=16, seed=3)
    offsets = set()
    last_epoch = -1
    for _ in range(60):
        x, _, new_epoch = batcher.next_batch()
        epoch = batcher.position.epoch
        assert new_epoch == (epoch != last_epoch)  # the flag comes exactly with a new pass
        last_epoch = epoch
        offsets.add(batcher.position.offset)
        assert 0 <= batcher.position.offset < 16
        assert x[0, 0].item() == batcher.position.offset + batcher.position.pos - 16
    assert batcher.position.epoch >= 4
    assert len(offsets) > 1  # chunk boundaries move between passes


def test_ranks_take_disjoint_rows() -> None:
    ids = np.arange(800, dtype=np.int32)
    x0, _, _ = StreamBatcher(ids, 2, 8, rank=0, world_size=2).next_batch()
    x1, _, _ = StreamBatcher(ids, 2, 8, rank=1, world_size=2).next_batch()
    assert x0[:, 0].tolist() == [0, 200]
    assert x1[:, 0].tolist() == [400, 600]


def test_too_short_text_is_a_clear_error() -> None:
    with pytest.raises(StreamError, match=r"too short.*--batch-size or --seq-len"):
        StreamBatcher(np.arange(100, dtype=np.int32), batch_size=8, seq_len=32)
