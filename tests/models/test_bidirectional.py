import pytest
import torch

from models.bidirectional import reverse_within
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import ModelConfig
from models.registry import build_model, model_class
from models.vocab import CharVocab


def bi(arch: str, layers: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=11, embed_size=6, hidden_size=8, num_layers=layers)
    return build_model(cfg).eval()


@pytest.mark.parametrize("arch", ["bilstm", "bigru"])
def test_cannot_generate(arch: str) -> None:
    assert model_class(arch).can_generate is False


@pytest.mark.parametrize("arch", ["bilstm", "bigru"])
def test_prediction_sees_both_sides_but_never_its_target(arch: str) -> None:
    model = bi(arch)
    ids = torch.randint(2, 11, (1, 12))
    with torch.no_grad():
        base, _ = model(ids)
        for t in range(11):  # logits[:, t] predicts ids[:, t + 1]
            for j in range(12):
                other = ids.clone()
                other[0, j] = 2 + (int(ids[0, j]) - 1) % 9
                changed, _ = model(other)
                moved = not torch.allclose(changed[0, t], base[0, t])
                assert moved == (j != t + 1), (t, j)


def test_padding_never_enters_the_right_context() -> None:
    model = bi("bilstm")
    ids = torch.randint(2, 11, (2, 9))
    with torch.no_grad():
        alone, _ = model(ids[:1, :6])
        padded = ids.clone()
        padded[0, 6:] = 1
        batch, _ = model(padded, lengths=torch.tensor([6, 9]))
        full, _ = model(ids[1:])
    torch.testing.assert_close(batch[:1, :6], alone)
    torch.testing.assert_close(batch[1:], full)


def test_reverse_within_keeps_padding_in_place() -> None:
    x = torch.arange(10).view(2, 5)
    out = reverse_within(x, torch.tensor([3, 5]))
    assert out.tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]


def test_carried_state_continues_the_left_context() -> None:
    model = bi("bigru")
    ids = torch.randint(2, 11, (1, 10))
    with torch.no_grad():
        _, state = model(ids[:, :4])
        with_left, _ = model(ids[:, 4:], state)
        without, _ = model(ids[:, 4:])
    assert not torch.allclose(with_left, without)


def test_checkpoint_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    vocab = CharVocab(list("abcdefghi"))
    model = bi("bilstm", layers=3)
    save_checkpoint(tmp_path / "bi.safetensors", model, vocab)
    loaded = load_checkpoint(tmp_path / "bi.safetensors").model
    ids = torch.randint(0, 11, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], model(ids)[0])


@pytest.mark.parametrize("arch", ["bilstm", "bigru"])
@pytest.mark.parametrize("steps", [1, 2, 5, 22, 23, 40])
def test_logits_in_pieces_equal_one_forward(arch: str, steps: int) -> None:
    model = bi(arch)
    ids = torch.randint(2, 11, (3, 23))
    with torch.no_grad():
        whole, _ = model(ids)
        pieces = list(model.logits_in_pieces(ids, steps))
    assert [start for start, _ in pieces] == list(range(0, 23, steps))
    assert all(logits.shape[1] <= steps for _, logits in pieces)
    torch.testing.assert_close(torch.cat([logits for _, logits in pieces], dim=1), whole)
