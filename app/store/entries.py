"""What the store knows of each model, what a check of the folder changed, and which versions the
requests in flight hold.

A request holds the version of a model it was given (``ModelStore.resolve``) until it has ended,
its response sent: a newer version may take the model's place meanwhile, and the older one is
only stopped once nobody holds it. ``tracking_model_use`` marks where a request begins and ends
(the server wraps every request in it, ``app.api.lifecycle``); the store counts the versions
handed out inside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from app.engine.engine import ModelEngine
from app.store.files import FileIdentity
from models.checkpoint import LoadedCheckpoint

ChangeKind = Literal["added", "replaced", "removed", "failed"]


@dataclass
class PendingFile:
    """A newer file of a serving model that does not serve: being loaded, or unusable (with
    the reason); the version loaded before keeps serving."""

    identity: FileIdentity
    status: Literal["loading", "unavailable"] = "loading"
    error: str | None = None
    sha256: str | None = None


@dataclass(eq=False)
class ModelEntry:
    """One version of one model: ready (with its engine) or unavailable (with the reason)."""

    id: str
    file_name: str
    identity: FileIdentity | None = None  # of the file it was loaded from (or that failed)
    checkpoint: LoadedCheckpoint | None = None
    engine: ModelEngine | None = None
    error: str | None = None
    sha256: str | None = None
    loaded_at: float | None = None  # Unix time it began serving
    update: PendingFile | None = None
    in_use: int = field(default=0, repr=False)  # requests holding this version
    _unused: asyncio.Event | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.engine is not None

    @property
    def status(self) -> Literal["ready", "unavailable"]:
        return "ready" if self.ready else "unavailable"

    @property
    def created(self) -> int:
        """The file's modification time, Unix seconds (OpenAI's ``created``)."""
        return self.identity.modified if self.identity is not None else 0

    def needs_reading(self, identity: FileIdentity, retry_failed: bool) -> bool:
        """Whether the model's file, as ``identity`` says it is now, is to be read (again): a
        serving version's file with other content, unless that very file failed already; an
        unavailable model's file once it changed at all. ``retry_failed``: failed files too."""
        if not self.ready:
            return retry_failed or identity != self.identity
        if identity.same_content(self.identity):
            return False
        failed_before = self.update is not None and self.update.identity == identity
        return retry_failed or not failed_before

    def acquire(self) -> None:
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        if self.in_use == 0 and self._unused is not None:
            self._unused.set()

    async def wait_unused(self) -> None:
        """Until no request holds this version."""
        while self.in_use > 0:
            self._unused = asyncio.Event()
            await self._unused.wait()


@dataclass(frozen=True)
class ModelChange:
    """What one check of the models folder did to one model.

    ``added``: a model serves that did not (a new file, or one that failed before);
    ``replaced``: a new version serves, the old one drains; ``removed``: the file is gone, its
    model drains and disappears; ``failed``: a new or changed file cannot be loaded (a version
    loaded before keeps serving, if there is one).
    """

    id: str
    change: ChangeKind
    sha256: str | None = None
    error: str | None = None


_in_use: ContextVar[list[ModelEntry] | None] = ContextVar("charlm_models_in_use", default=None)


@contextmanager
def tracking_model_use() -> Iterator[None]:
    """One request: every version the store hands out inside the block is held until it ends."""
    held: list[ModelEntry] = []
    token = _in_use.set(held)
    try:
        yield
    finally:
        _in_use.reset(token)
        for entry in held:
            entry.release()


def note_use(entry: ModelEntry) -> None:
    """The current request (if one is being tracked) holds ``entry`` until it ends."""
    held = _in_use.get()
    if held is not None:
        entry.acquire()
        held.append(entry)
