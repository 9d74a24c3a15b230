"""No pickle on any load path: the source says so (scanned with ``ast``) and a full load of every
kind of file charlm reads, good and hostile, never calls an unpickler."""

from __future__ import annotations

import ast
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError, load_checkpoint
from tests.reliability.conftest import ModelsFolder
from tests.support import REPO

PACKAGES = ("models", "training", "app")
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}


def python_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_calls(source: str, filename: str) -> list[str]:
    """``torch.load`` without ``weights_only=True``, ``np.load`` with ``allow_pickle`` other than
    ``False``, any import of a pickling module, ``eval``/``exec``."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                if name and name.split(".")[0] in FORBIDDEN_MODULES:
                    problems.append(f"{where}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        dotted = ast.unparse(func)
        if dotted in ("eval", "exec"):
            problems.append(f"{where}: calls {dotted}")
        if isinstance(func, ast.Attribute) and func.attr == "load":
            owner = ast.unparse(func.value)
            if owner == "torch" and not _is_true(_keyword(node, "weights_only")):
                problems.append(f"{where}: torch.load without weights_only=True")
            if owner in ("np", "numpy"):
                allow = _keyword(node, "allow_pickle")
                if not (isinstance(allow, ast.Constant) and allow.value is False):
                    problems.append(f"{where}: np.load without allow_pickle=False")
    return problems


def test_the_scanner_catches_what_it_should() -> None:
    bad = (
        "import pickle\nimport torch, numpy as np\nfrom joblib import load\n"
        "torch.load('x')\ntorch.load('x', weights_only=False)\nnp.load('y')\n"
        "np.load('y', allow_pickle=True)\neval('1')\n"
    )
    assert len(unsafe_calls(bad, "bad.py")) == 7
    good = "import torch, numpy as np\ntorch.load('x', weights_only=True)\n"
    good += "np.load('y', allow_pickle=False)\n"
    assert unsafe_calls(good, "good.py") == []


def test_no_load_path_can_unpickle() -> None:
    problems = []
    files = list(python_files())
    assert len(files) > 20
    for path in files:
        problems += unsafe_calls(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert problems == []


@pytest.fixture
def unpickling_forbidden(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way to unpickle raises (and is recorded) while the fixture is active."""
    calls: list[str] = []

    def refuse(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} called on a load path")

        return call

    real_torch_load = torch.load

    def torch_load(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("weights_only") is not True:
            calls.append("torch.load")
            raise AssertionError("torch.load without weights_only=True")
        return real_torch_load(*args, **kwargs)

    real_np_load = np.load

    def np_load(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("allow_pickle", False) is not False:
            calls.append("np.load")
            raise AssertionError("np.load with allow_pickle")
        return real_np_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", torch_load)
    monkeypatch.setattr(np, "load", np_load)
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse(f"pickle.{name}"))
    return calls


def test_loading_every_file_of_a_hostile_folder_never_unpickles(
    models_folder: ModelsFolder, unpickling_forbidden: list[str]
) -> None:
    loaded, refused = [], []
    for path in sorted(models_folder.path.glob("*.safetensors")):
        try:
            load_checkpoint(path)
            loaded.append(path.stem)
        except CheckpointError:
            refused.append(path.stem)
    assert sorted(loaded) == ["bi", "tiny"]
    assert sorted(refused) == sorted(models_folder.hostile.names)
    assert unpickling_forbidden == []
    assert not models_folder.hostile.marker.exists()


def test_a_training_resume_and_the_corpus_cache_never_unpickle(
    tmp_path: Path, unpickling_forbidden: list[str]
) -> None:
    """A short run writes its resume file and corpus cache; a resumed run reads both."""
    from training.cli import train_main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("alpha beta gamma delta\n" * 200, encoding="utf-8")
    out = tmp_path / "run.safetensors"
    args = ["--data", str(corpus), "--out", str(out), "--preset", "tiny", "--hidden-size", "16"]
    args += ["--embed-size", "8", "--seq-len", "16", "--batch-size", "4", "--eval-interval", "5"]
    args += ["--sample-chars", "0", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert train_main([*args, "--max-steps", "5"]) == 0
    assert train_main([*args, "--max-steps", "10", "--resume"]) == 0
    assert unpickling_forbidden == []
    assert load_checkpoint(out).training["step"] == 10
