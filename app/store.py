"""The models a server holds: every ``*.safetensors`` file of the models folder, loaded at start.

The model id is the file's stem. Ids come from file names only, so a request's ``model`` is only
ever a key looked up here, never joined into a path. A file that fails to load (bad name, corrupt,
foreign format) is logged and listed as unavailable with its reason; the others serve.

A lookup that finds no model to serve raises one of the ``StoreError`` subclasses below; the API
maps each to its HTTP status (``app.api.errors``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.engine.engine import ModelEngine
from app.metrics import Metrics
from app.settings import MODEL_ID_PATTERN, Settings
from models.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint

logger = logging.getLogger(__name__)

_MODEL_ID = re.compile(MODEL_ID_PATTERN)
CHECKPOINT_SUFFIX = ".safetensors"
RESUME_SUFFIX = ".resume.safetensors"


class StoreError(Exception):
    """A request names no model the store can serve."""


class ModelNotFoundError(StoreError):
    """No checkpoint of the models folder has this id."""


class ModelUnavailableError(StoreError):
    """The checkpoint exists but failed to load."""


class NoModelError(StoreError):
    """The request names no model and none is loaded."""


class ModelRequiredError(StoreError):
    """The request names no model and several could serve it, none of them the default."""


@dataclass
class ModelEntry:
    """One checkpoint file: ready (with its engine) or unavailable (with the reason)."""

    id: str
    file_name: str
    created: int  # file modification time, Unix seconds (OpenAI's ``created``)
    checkpoint: LoadedCheckpoint | None = None
    engine: ModelEngine | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.engine is not None

    @property
    def status(self) -> Literal["ready", "unavailable"]:
        return "ready" if self.ready else "unavailable"


class ModelStore:
    """Loads the models folder and resolves a request's ``model`` to a ready entry.

    ``on_submitted`` is handed to every engine (see ``ModelEngine``): the server's admission
    control hears through it that a request has reached its engine.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        on_submitted: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.on_submitted = on_submitted
        self.entries: dict[str, ModelEntry] = {}

    # ------------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        folder = self.settings.models_dir
        if not folder.is_dir():
            logger.error("models folder %s does not exist: no model will serve", folder)
            self._update_gauges()
            return
        for path in sorted(folder.glob("*" + CHECKPOINT_SUFFIX)):
            if path.name.endswith(RESUME_SUFFIX):
                continue  # charlm-train's resume state beside a checkpoint, not a model
            entry = await self._load_one(path)
            self.entries[entry.id] = entry
        ready = [e.id for e in self.entries.values() if e.ready]
        logger.info("models ready: %s", ", ".join(ready) or "none")
        default = self.settings.default_model
        if default is not None and default not in ready:
            logger.warning("CHARLM_DEFAULT_MODEL %r is not among the ready models", default)
        self._update_gauges()

    def _build_engine(self, model_id: str, checkpoint: LoadedCheckpoint) -> ModelEngine:
        """The one place engines are constructed, with the configured limits."""
        settings = self.settings
        return ModelEngine(
            model_id,
            checkpoint,
            max_queue=settings.max_queue,
            max_batch_size=settings.max_batch_size,
            request_timeout_s=settings.request_timeout_s,
            on_submitted=self.on_submitted,
        )

    async def _load_one(self, path: Path) -> ModelEntry:
        model_id = path.name[: -len(CHECKPOINT_SUFFIX)]
        try:
            created = int(path.stat().st_mtime)
        except OSError:
            created = 0
        entry = ModelEntry(id=model_id, file_name=path.name, created=created)
        if not _MODEL_ID.match(model_id):
            entry.error = (
                "file name is not a valid model id (letters, digits, '.', '_', '-';"
                " at most 64; starting with a letter or digit)"
            )
        else:
            try:
                entry.checkpoint = await asyncio.to_thread(
                    load_checkpoint, path, device=self.settings.device
                )
                engine = self._build_engine(model_id, entry.checkpoint)
                await engine.start()
                entry.engine = engine
            except CheckpointError as exc:
                entry.error = str(exc).replace(str(path), path.name)
            except Exception as exc:  # a bad file must never stop the others from serving
                logger.exception("model %s: unexpected error while loading", model_id)
                entry.error = f"failed to load: {type(exc).__name__}: {exc}"
        if entry.error:
            logger.error("model %s unavailable: %s", model_id, entry.error)
        else:
            logger.info("model %s loaded from %s", model_id, path)
        return entry

    async def stop(self, grace_seconds: float) -> None:
        engines = [e.engine for e in self.entries.values() if e.engine is not None]
        await asyncio.gather(*(eng.stop(grace_seconds) for eng in engines), return_exceptions=True)

    def _update_gauges(self) -> None:
        self.metrics.models_loaded.set(sum(e.ready for e in self.entries.values()))
        self.metrics.models_unavailable.set(sum(not e.ready for e in self.entries.values()))

    # ------------------------------------------------------------------ lookups
    def engines(self) -> dict[str, ModelEngine]:
        return {e.id: e.engine for e in self.entries.values() if e.engine is not None}

    def ready_ids(self) -> list[str]:
        return [e.id for e in self.entries.values() if e.ready]

    def find(self, model_id: str) -> ModelEntry:
        """The entry for ``model_id``, ready or not (``ModelNotFoundError`` if there is none)."""
        entry = self.entries.get(model_id)
        if entry is None:
            choices = ", ".join(self.ready_ids()) or "none"
            shown = model_id if len(model_id) <= 80 else model_id[:80] + "..."
            raise ModelNotFoundError(f"model {shown!r} does not exist (available: {choices})")
        return entry

    def resolve(self, model_id: str | None) -> ModelEntry:
        """The ready entry a request names, or the default one when it names none."""
        if model_id is None:
            model_id = self._default_id()
        entry = self.find(model_id)
        if not entry.ready:
            raise ModelUnavailableError(f"model {model_id!r} is unavailable: {entry.error}")
        return entry

    def _default_id(self) -> str:
        if self.settings.default_model is not None:
            return self.settings.default_model
        ready = self.ready_ids()
        if len(ready) == 1:
            return ready[0]
        if not ready:
            raise NoModelError("no model is loaded")
        raise ModelRequiredError(f"the request must name a model: choose one of {', '.join(ready)}")
