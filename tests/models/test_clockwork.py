import pytest
import torch

from models.base import concat_states, select_state
from models.checkpoint import load_checkpoint, save_checkpoint
from models.clockwork import ClockworkCell, split_sizes
from models.config import ModelConfig
from models.registry import build_model
from models.vocab import CharVocab


def cell(periods: list[int], sizes: list[int], input_size: int = 3) -> ClockworkCell:
    torch.manual_seed(0)
    return ClockworkCell(input_size, sizes, periods).double()


@pytest.mark.parametrize("periods", [[1, 2, 4, 8], [1, 3, 5, 6], [2, 3, 4, 7]])
def test_module_changes_only_on_its_ticks(periods: list[int]) -> None:
    layer = cell(periods, [2, 2, 2, 2])
    x = torch.randn(2, 20, 3, dtype=torch.double)
    h0 = torch.randn(2, 8, dtype=torch.double)
    out, _, step = layer(x, h0, torch.zeros(2, dtype=torch.long))
    assert step.tolist() == [20, 20]
    states = torch.cat([h0.unsqueeze(1), out], dim=1)  # states[:, t + 1] is after step t
    for i, period in enumerate(periods):
        block = slice(2 * i, 2 * i + 2)
        for t in range(20):
            moved = not torch.equal(states[:, t + 1, block], states[:, t, block])
            assert moved == (t % period == 0), (i, t)


def test_modules_never_read_faster_ones() -> None:
    layer = cell([1, 3, 9], [3, 2, 4], input_size=0)
    matrix = layer.recurrent_matrix()
    assert torch.count_nonzero(matrix[3:5, :3]) == 0
    assert torch.count_nonzero(matrix[5:, :5]) == 0
    # perturb the fastest module: the slow modules' trajectories do not change
    h0 = torch.randn(1, 9, dtype=torch.double)
    other = h0.clone()
    other[:, :3] += 1.0
    steps = torch.zeros(1, dtype=torch.long)
    a, _, _ = layer(None, h0, steps, length=30)
    b, _, _ = layer(None, other, steps, length=30)
    torch.testing.assert_close(a[..., 3:], b[..., 3:])
    assert not torch.allclose(a[..., :3], b[..., :3])


def test_parameter_count_is_block_triangular() -> None:
    layer = cell([1, 2], [3, 2], input_size=4)
    # input 5x4, blocks 3x5 and 2x2, bias 5
    assert sum(p.numel() for p in layer.parameters()) == 20 + 15 + 4 + 5


def test_rows_at_different_clock_phases_match_running_alone() -> None:
    torch.manual_seed(1)
    model = build_model(
        ModelConfig(arch="clockwork", vocab_size=9, embed_size=4, hidden_size=8, num_layers=1)
    ).eval()
    ids = torch.randint(0, 9, (3, 12))
    with torch.no_grad():
        states = []
        for row, warmup in enumerate([0, 1, 3]):  # three rows at clock 0, 1 and 3
            state = model.initial_state(1)
            if warmup:
                _, state = model(ids[row : row + 1, :warmup], state)
            states.append(state)
        batched, batched_state = model(ids, concat_states(states))
        for row in range(3):
            alone, alone_state = model(ids[row : row + 1], states[row])
            torch.testing.assert_close(batched[row : row + 1], alone)
            for a, b in zip(select_state(batched_state, [row]), alone_state, strict=True):
                torch.testing.assert_close(a, b)
    assert batched_state[1].tolist() == [12, 13, 15]


def test_bad_periods_are_named() -> None:
    for periods in ([], [2, 1], [1, 1], [0, 2], [1.5]):
        with pytest.raises(ValueError, match="periods"):
            build_model(ModelConfig(arch="clockwork", vocab_size=5, options={"periods": periods}))
    with pytest.raises(ValueError, match="cannot split"):
        split_sizes(3, 4)


def test_checkpoint_round_trip_keeps_the_clock(tmp_path) -> None:  # type: ignore[no-untyped-def]
    vocab = CharVocab(list("abcdefg"))
    cfg = ModelConfig(
        arch="clockwork",
        vocab_size=len(vocab),
        embed_size=4,
        hidden_size=6,
        num_layers=2,
        options={"periods": [1, 3, 5]},
    )
    torch.manual_seed(2)
    model = build_model(cfg).eval()
    save_checkpoint(tmp_path / "cw.safetensors", model, vocab)
    loaded = load_checkpoint(tmp_path / "cw.safetensors").model
    ids = torch.randint(0, len(vocab), (2, 11))
    with torch.no_grad():
        a, _ = model(ids)
        b, sb = loaded(ids)
    torch.testing.assert_close(a, b)
    assert sb[1].tolist() == [11, 11]


def test_inference_reuses_the_matrix_until_a_block_changes() -> None:
    layer = cell([1, 2], [3, 2])
    with torch.no_grad():
        first = layer.recurrent_matrix()
        assert layer.recurrent_matrix() is first
        layer.recurrent_blocks[1].add_(1.0)  # an optimizer step or load_state_dict does this
        second = layer.recurrent_matrix()
        assert second is not first
        torch.testing.assert_close(second[3:, 3:], layer.recurrent_blocks[1])
    with torch.enable_grad():
        assert layer.recurrent_matrix().requires_grad
