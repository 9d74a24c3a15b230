import os
import pickle
import stat
from pathlib import Path

import pytest
import torch

from models.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from models.config import ModelConfig
from models.files import atomic_write_bytes
from models.registry import build_model
from models.vocab import CharVocab


def make(arch: str = "lstm", tie: bool = False):
    vocab = CharVocab.from_text("hello world\n")
    size = 8 if tie else 10
    cfg = ModelConfig(
        arch=arch,
        vocab_size=len(vocab),
        embed_size=8,
        hidden_size=size,
        num_layers=2,
        tie_weights=tie,
    )
    torch.manual_seed(1)
    return build_model(cfg), vocab


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_round_trip_is_exact(tmp_path: Path, arch: str) -> None:
    model, vocab = make(arch)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, vocab, train_config={"lr": 0.01}, training={"step": 7})
    loaded = load_checkpoint(path)
    assert loaded.vocab == vocab and loaded.config == model.config
    assert loaded.train_config == {"lr": 0.01} and loaded.training == {"step": 7}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    assert not loaded.model.training


def test_tied_weights_stay_tied(tmp_path: Path) -> None:
    model, vocab = make("gru", tie=True)
    save_checkpoint(tmp_path / "t.safetensors", model, vocab)
    loaded = load_checkpoint(tmp_path / "t.safetensors").model
    assert loaded.head.weight.data_ptr() == loaded.embedding.weight.data_ptr()


def test_file_mode_follows_umask(tmp_path: Path) -> None:
    model, vocab = make()
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "m.safetensors", model, vocab)
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode)
    assert mode == 0o644


def test_interrupted_write_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, vocab = make()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, vocab, training={"step": 1})
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, vocab, training={"step": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert load_checkpoint(path).training == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.parametrize("damage", ["truncate", "random", "pickle", "foreign", "missing"])
def test_bad_files_give_clear_errors(tmp_path: Path, damage: str) -> None:
    model, vocab = make()
    path = tmp_path / "bad.safetensors"
    save_checkpoint(path, model, vocab)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        path.write_bytes(os.urandom(4096))
    elif damage == "pickle":
        path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    elif damage == "foreign":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_checkpoint(path)


def test_wrong_shapes_are_named(tmp_path: Path) -> None:
    model, vocab = make()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, vocab)
    meta = read_metadata(path)
    cfg = ModelConfig.from_dict({**model.config.to_dict(), "hidden_size": 12})
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["charlm.model_config"] = cfg.to_json()
    atomic_write_bytes(path, save(tensors, metadata=meta))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path)


def test_an_untied_architecture_claiming_tied_weights_loads_as_trained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # written before building such a model refused tie_weights: the claim had no effect
    vocab = CharVocab.from_text("hello world\n")
    config = ModelConfig(arch="clockwork", vocab_size=len(vocab), embed_size=8, hidden_size=8)
    model = build_model(config)
    path = tmp_path / "cw.safetensors"
    save_checkpoint(path, model, vocab)
    from safetensors import safe_open
    from safetensors.torch import save

    meta = read_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["charlm.model_config"] = config.replace(tie_weights=True).to_json()
    atomic_write_bytes(path, save(tensors, metadata=meta))
    with caplog.at_level("WARNING", logger="models.checkpoint"):
        loaded = load_checkpoint(path)
    assert loaded.config == config and not loaded.config.tie_weights
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    assert "'clockwork' does not tie weights" in caplog.text
