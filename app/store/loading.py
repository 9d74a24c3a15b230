"""One checkpoint file of the models folder read into a new version of its model.

A file whose name is not a valid model id is listed with ``BAD_NAME`` and never read. Otherwise a
thread reads it whole, hashes it and loads it (``app.store.files.read_checkpoint``), never the
event loop: a file with the same bytes as the version serving only updates that version's record
of it; a new version gets its own engine, started, and takes the model's place, the version it
replaces draining (``app.store.retiring``). A file that cannot be loaded never replaces a version
that serves: it is listed (``ModelEntry.update``) with its reason until a good file takes its
place; a model with no version serving is listed as unavailable with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from app.engine.engine import ModelEngine
from app.settings import MODEL_ID_PATTERN, Settings
from app.store.entries import ModelChange, ModelEntry, PendingFile
from app.store.files import CheckpointFile, FileChangedError, read_checkpoint
from app.store.retiring import Retiring
from models.checkpoint import CheckpointError, LoadedCheckpoint

logger = logging.getLogger(__name__)

_MODEL_ID = re.compile(MODEL_ID_PATTERN)
BAD_NAME = (
    "file name is not a valid model id (letters, digits, '.', '_', '-';"
    " at most 64; starting with a letter or digit)"
)


class Loader:
    """Brings one model of a store's ``entries`` up to date with its file (``consider``).

    ``draining`` says whether the server is stopping (a file read by then is not started);
    ``on_submitted`` is handed to every engine (see ``ModelEngine``).
    """

    def __init__(
        self,
        settings: Settings,
        retiring: Retiring,
        draining: Callable[[], bool],
        on_submitted: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.retiring = retiring
        self.draining = draining
        self.on_submitted = on_submitted

    async def consider(
        self, entries: dict[str, ModelEntry], file: CheckpointFile, retry_failed: bool
    ) -> ModelChange | None:
        """Bring one file's model up to date; the change made, if any."""
        model_id = file.model_id
        current = entries.get(model_id)
        if not _MODEL_ID.match(model_id):
            if current is not None:  # listed already: a name does not get better
                return None
            entries[model_id] = ModelEntry(
                model_id, file.path.name, identity=file.identity, error=BAD_NAME
            )
            logger.error("model %s unavailable: %s", model_id, BAD_NAME)
            return ModelChange(model_id, "failed", error=BAD_NAME)
        if current is not None and not current.needs_reading(file.identity, retry_failed):
            return None
        serving = current if current is not None and current.ready else None
        if serving is not None:
            serving.update = PendingFile(file.identity)
        sha256: str | None = None
        try:
            read = await asyncio.to_thread(
                read_checkpoint,
                file.path,
                self.settings.device,
                serving.sha256 if serving is not None else None,
            )
            sha256 = read.sha256
            if read.checkpoint is None:  # same bytes as the version serving (touched, copied)
                assert serving is not None
                serving.identity, serving.update = read.identity, None
                return None
            if self.draining():
                raise FileChangedError("the server is stopping")
            engine = self._build_engine(model_id, read.checkpoint)
            await engine.start()
        except FileChangedError:
            if serving is not None:
                serving.update = None
            raise
        except CheckpointError as exc:
            error = str(exc).replace(str(file.path), file.path.name)
            return self._failed(entries, file, current, error)
        except Exception as exc:  # a bad file must never stop the others from serving
            logger.exception("model %s: unexpected error while loading", model_id)
            error = f"failed to load: {type(exc).__name__}: {exc}"
            return self._failed(entries, file, current, error)
        entry = ModelEntry(
            model_id,
            file.path.name,
            identity=read.identity,
            checkpoint=read.checkpoint,
            engine=engine,
            sha256=sha256,
            loaded_at=time.time(),
        )
        entries[model_id] = entry
        if serving is None:
            logger.info("model %s loaded from %s (sha256 %s)", model_id, file.path, sha256)
            return ModelChange(model_id, "added", sha256=sha256)
        self.retiring.add(serving)
        logger.info(
            "model %s: new version from %s (sha256 %s) serves; the old one (sha256 %s) drains",
            model_id,
            file.path,
            sha256,
            serving.sha256,
        )
        return ModelChange(model_id, "replaced", sha256=sha256)

    def _failed(
        self,
        entries: dict[str, ModelEntry],
        file: CheckpointFile,
        current: ModelEntry | None,
        error: str,
    ) -> ModelChange | None:
        model_id = file.model_id
        if current is not None and current.ready:
            current.update = PendingFile(file.identity, "unavailable", error)
            logger.error(
                "model %s: the new file cannot be loaded; the version loaded before (sha256 %s)"
                " keeps serving: %s",
                model_id,
                current.sha256,
                error,
            )
        else:
            entries[model_id] = ModelEntry(
                model_id, file.path.name, identity=file.identity, error=error
            )
            logger.error("model %s unavailable: %s", model_id, error)
        return ModelChange(model_id, "failed", error=error)

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
