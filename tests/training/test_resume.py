from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from training.resume import ResumeError, ResumeState, load_resume, resume_path, save_resume


def _state(step: int) -> ResumeState:
    torch.manual_seed(step)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return ResumeState(
        info={"step": step, "position": {"epoch": 1, "offset": 3, "pos": 64}},
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        carried=(torch.randn(2, 1, 5), torch.randn(2, 1, 5)),
        rng={"torch": torch.get_rng_state().unsqueeze(0)},
    )


def test_round_trip_is_exact(tmp_path: Path) -> None:
    path = resume_path(tmp_path / "m.safetensors")
    assert path.name == "m.resume.safetensors"
    state = _state(7)
    save_resume(path, state)
    loaded = load_resume(path)
    assert loaded.info["step"] == 7 and loaded.info["position"]["pos"] == 64
    for name, tensor in state.model.items():
        assert torch.equal(loaded.model[name], tensor)
    buffers = loaded.optimizer["state"]
    assert torch.equal(
        buffers[0]["momentum_buffer"], state.optimizer["state"][0]["momentum_buffer"]
    )
    assert loaded.optimizer["param_groups"][0]["nesterov"] is True
    # the optimizer accepts what came back
    model = torch.nn.Linear(3, 2)
    torch.optim.SGD(model.parameters(), lr=0.1).load_state_dict(loaded.optimizer)
    assert all(torch.equal(a, b) for a, b in zip(loaded.carried, state.carried, strict=True))
    assert torch.equal(loaded.rng["torch"], state.rng["torch"])


def test_interrupted_write_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.resume.safetensors"
    save_resume(path, _state(1))

    def crash(fd: int) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        save_resume(path, _state(2))
    monkeypatch.undo()
    assert load_resume(path).info["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_missing_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ResumeError, match="no resume file"):
        load_resume(tmp_path / "none.resume.safetensors")
    junk = tmp_path / "junk.resume.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ResumeError, match="unreadable"):
        load_resume(junk)


def test_the_weight_average_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "m.resume.safetensors"
    state = _state(3)
    save_resume(path, state)
    assert load_resume(path).average == {}  # a run without one, or a file from before them
    state.average = {
        "weight": torch.randn(2, 3),
        "bias": torch.randn(2),
        "@updates": torch.tensor(3),
    }
    save_resume(path, state)
    loaded = load_resume(path).average
    assert set(loaded) == set(state.average)
    assert all(torch.equal(loaded[name], tensor) for name, tensor in state.average.items())


def test_tied_weights_are_stored_and_come_back_equal(tmp_path: Path) -> None:
    embedding = torch.nn.Embedding(5, 4)
    head = torch.nn.Linear(4, 5)
    head.weight = embedding.weight  # one tensor under two names, as --tie-weights makes
    model = torch.nn.ModuleDict({"embedding": embedding, "head": head})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "tied.resume.safetensors"
    save_resume(path, ResumeState(info={"step": 1}, model=model.state_dict(),
                                  optimizer=optimizer.state_dict()))  # fmt: skip
    loaded = load_resume(path).model
    assert torch.equal(loaded["embedding.weight"], embedding.weight)
    assert torch.equal(loaded["head.weight"], embedding.weight)
    assert embedding.weight.data_ptr() == head.weight.data_ptr()  # the model's own untouched
