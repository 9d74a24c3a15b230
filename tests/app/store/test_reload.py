"""The store follows its models folder while serving: new files serve, a changed file's new
version takes new requests while the old one finishes its own, removed files drain away, and a
bad or half-written file never replaces a version that serves.

Real checkpoints of tiny random-weight models, real engines; the store's checks are called
directly (no polling), and what runs in the background is awaited with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from app.engine.errors import EngineClosedError
from app.engine.params import FinishReason, GenerationParams
from app.metrics import Metrics
from app.settings import Settings
from app.store import (
    ModelChange,
    ModelNotFoundError,
    ModelStore,
    ModelUnavailableError,
    tracking_model_use,
)
from models.vocab import CharVocab
from tests.support import write_random_checkpoint

DEADLINE_S = 60.0


def make_store(folder: Path) -> ModelStore:
    settings = Settings(
        models_dir=folder, reload_interval_s=0, shutdown_grace_s=5, request_timeout_s=60
    )
    return ModelStore(settings, Metrics())


async def until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        assert loop.time() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.01)


def size_of(alphabet: str) -> int:
    return len(CharVocab.from_text(alphabet))


def vocab_size(store: ModelStore, model_id: str) -> int:
    checkpoint = store.find(model_id).checkpoint
    assert checkpoint is not None
    return len(checkpoint.vocab)


def test_a_new_file_serves_after_a_check(tmp_path: Path) -> None:
    async def main() -> None:
        store = make_store(tmp_path)
        await store.load()
        assert store.ready_ids() == []
        sha = write_random_checkpoint(tmp_path / "fresh.safetensors", "abc")
        (tmp_path / "fresh.resume.safetensors").write_bytes(b"resume state, not a model")
        assert await store.refresh() == [ModelChange("fresh", "added", sha256=sha)]
        entry = store.resolve("fresh")
        assert entry.sha256 == sha and entry.loaded_at is not None
        assert entry.identity is not None
        assert entry.identity.size == (tmp_path / "fresh.safetensors").stat().st_size
        assert entry.engine is not None
        [score] = await entry.engine.score(["abc"])
        assert score.num_chars == 3
        assert await store.refresh() == []  # nothing changed since
        await store.stop(1)

    asyncio.run(main())


def test_a_changed_file_swaps_while_the_old_version_finishes_its_stream(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    old_sha = write_random_checkpoint(path, "abc", seed=0)
    chars = 3000

    async def main() -> weakref.ref[torch.nn.Module]:
        store = make_store(tmp_path)
        await store.load()
        with tracking_model_use():  # one request, as the server wraps each
            old = store.resolve("m")
            assert old.engine is not None and old.checkpoint is not None
            old_model = weakref.ref(old.checkpoint.model)
            stream = old.engine.generate("ab", GenerationParams(max_chars=chars, seed=1))
            first = await anext(stream)
            new_sha = write_random_checkpoint(path, "abcdefgh", seed=1)
            assert await store.refresh() == [ModelChange("m", "replaced", sha256=new_sha)]
            # new requests get the new version
            assert store.resolve("m").sha256 == new_sha
            assert vocab_size(store, "m") == size_of("abcdefgh")
            assert store.draining_versions("m") == 1
            # the old version goes on serving the request that holds it, to its end
            rest = [chunk async for chunk in stream]
            assert old.engine is not None
            text = first.text + "".join(c.text for c in rest)
            assert rest[-1].finish_reason == FinishReason.LENGTH and len(text) == chars
            assert set(text) <= set("abc")  # the old model's alphabet
            del stream
        # the request is over: the old version stops and its model is freed
        await until(lambda: store.draining_versions("m") == 0, "the old version to drain")
        assert old.engine is None and old.checkpoint is None and old.sha256 == old_sha
        await store.stop(1)
        return old_model

    old_model = asyncio.run(main())
    assert old_model() is None


def test_a_new_version_waits_for_no_idle_request(tmp_path: Path) -> None:
    """Nothing holds the old version: it stops at once, and the new one scores."""
    path = tmp_path / "m.safetensors"
    write_random_checkpoint(path, "abc")

    async def main() -> None:
        store = make_store(tmp_path)
        await store.load()
        old = store.resolve("m")
        write_random_checkpoint(path, "abcd", seed=3)
        [change] = await store.refresh()
        assert change.change == "replaced"
        await until(lambda: old.engine is None, "the old version to stop")
        entry = store.resolve("m")
        assert entry.engine is not None
        [score] = await entry.engine.score(["dab"])
        assert score.num_unknown == 0  # "d" is in the new alphabet
        await store.stop(1)

    asyncio.run(main())


def test_a_removed_file_drains_and_disappears(tmp_path: Path) -> None:
    path = tmp_path / "gone.safetensors"
    write_random_checkpoint(path, "abc")
    write_random_checkpoint(tmp_path / "stays.safetensors", "xyz")

    async def main() -> None:
        store = make_store(tmp_path)
        await store.load()
        with tracking_model_use():
            held = store.resolve("gone")
            path.unlink()
            [change] = await store.refresh()
            assert change.id == "gone" and change.change == "removed"
            with pytest.raises(ModelNotFoundError):
                store.resolve("gone")
            assert held.engine is not None  # still finishing what holds it
            [score] = await held.engine.score(["cab"])
            assert score.num_chars == 3
        await until(lambda: held.engine is None, "the removed model to stop")
        assert store.ready_ids() == ["stays"]
        await store.stop(1)

    asyncio.run(main())


def test_a_corrupt_or_half_written_file_never_replaces_the_serving_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.safetensors"
    good_sha = write_random_checkpoint(path, "abc")
    other = tmp_path / "other.bin"
    next_sha = write_random_checkpoint(other, "abcdef", seed=2)
    whole = other.read_bytes()

    async def main() -> None:
        store = make_store(tmp_path)
        await store.load()
        # a copy in progress, written in place: the first half of a good checkpoint
        with path.open("r+b") as handle:
            handle.truncate(0)
            handle.write(whole[: len(whole) // 2])
        [change] = await store.refresh()
        assert change.change == "failed"
        assert "not a readable safetensors file" in (change.error or "")
        entry = store.resolve("m")  # still serves, the old version
        assert entry.sha256 == good_sha and vocab_size(store, "m") == size_of("abc")
        assert entry.update is not None and entry.update.status == "unavailable"
        assert "not a readable safetensors file" in (entry.update.error or "")
        assert str(tmp_path) not in (entry.update.error or "")  # names the file, not the folder
        assert await store.refresh() == []  # the same bad file is not read again and again
        # random bytes, renamed into place
        junk = tmp_path / "junk.tmp"
        junk.write_bytes(os.urandom(4096))
        junk.replace(path)
        [change] = await store.refresh()
        assert change.change == "failed"
        assert store.resolve("m").sha256 == good_sha
        # the copy completes: the new version serves and the failure is forgotten
        path.write_bytes(whole)
        assert await store.refresh() == [ModelChange("m", "replaced", sha256=next_sha)]
        entry = store.resolve("m")
        assert entry.update is None and vocab_size(store, "m") == size_of("abcdef")
        await store.stop(1)

    asyncio.run(main())


def test_a_bad_new_file_is_unavailable_until_a_good_one_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "late.safetensors"
    path.write_bytes(b"not yet a checkpoint")

    async def main() -> None:
        store = make_store(tmp_path)
        await store.load()
        entry = store.find("late")
        assert entry.status == "unavailable" and "not a readable safetensors" in (entry.error or "")
        with pytest.raises(ModelUnavailableError):
            store.resolve("late")
        sha = write_random_checkpoint(path, "abc")
        assert await store.refresh() == [ModelChange("late", "added", sha256=sha)]
        assert store.resolve("late").sha256 == sha
        await store.stop(1)

    asyncio.run(main())


def test_the_same_bytes_again_do_not_swap(tmp_path: Path) -> None:
    """A copy of the same checkpoint over it (new inode, new time) keeps the engine."""
    path = tmp_path / "m.safetensors"
    write_random_checkpoint(path, "abc")

    async def main() -> None:
        store = make_store(tmp_path)
        await store.load()
        engine = store.resolve("m").engine
        copy = tmp_path / "copy.tmp"
        copy.write_bytes(path.read_bytes())
        copy.replace(path)
        assert await store.refresh() == []
        entry = store.resolve("m")
        assert entry.engine is engine
        assert entry.identity is not None and entry.identity.inode == path.stat().st_ino
        await store.stop(1)

    asyncio.run(main())


def test_reload_reads_a_failed_file_again(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"junk")

    async def main() -> None:
        store = make_store(tmp_path)
        await store.load()
        assert await store.refresh() == []  # unchanged: a check leaves it be
        [change] = await store.reload()  # a reload reads it again
        assert change.id == "bad" and change.change == "failed"
        await store.stop(1)

    asyncio.run(main())


def test_stop_ends_the_versions_still_draining(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_random_checkpoint(path, "abc")

    async def main() -> None:
        store = make_store(tmp_path)
        await store.load()
        with tracking_model_use():
            held = store.resolve("m")
            write_random_checkpoint(path, "abcz", seed=4)
            [change] = await store.reload()
            assert change.change == "replaced" and store.draining_versions("m") == 1
            await store.stop(0)  # shutting down: the old version stops with the new one
            assert held.engine is not None
            with pytest.raises(EngineClosedError):
                await held.engine.score(["abc"])
        assert store.draining and await store.refresh() == []

    asyncio.run(main())
