"""The models a server holds, kept in step with its models folder while it runs.

A check of the folder (every ``reload_interval_s`` seconds, and on ``reload()``) compares each
checkpoint file with the version serving: a new file is loaded and serves; a changed one is
loaded beside the old version, takes the model's new requests once ready, and the old version
finishes the requests it holds before its engine is stopped and its memory freed; a removed
file's model disappears the same way. A file that cannot be loaded never replaces a version that
serves. Reading one file into a new version of its model, in a thread, never on the event loop,
is ``app.store.loading``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from app.engine.engine import ModelEngine
from app.metrics import Metrics
from app.settings import Settings
from app.store.entries import ModelChange, ModelEntry, note_use
from app.store.errors import (
    ModelNotFoundError,
    ModelRequiredError,
    ModelUnavailableError,
    NoModelError,
)
from app.store.files import FileChangedError, scan_folder
from app.store.loading import Loader
from app.store.memory import release_memory
from app.store.retiring import Retiring

logger = logging.getLogger(__name__)

_PASSES = 3  # reads of a folder whose files change while they are read, per check


class ModelStore:
    """Loads the models folder, follows its changes and resolves a request's ``model``.

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
        self.draining = False
        self._lock = asyncio.Lock()
        self._checks: set[asyncio.Task[list[ModelChange]]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._retiring = Retiring(settings.request_timeout_s, settings.shutdown_grace_s)
        self._loader = Loader(settings, self._retiring, lambda: self.draining, on_submitted)
        self._folder_missing = False

    # ------------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        """The first check, at start-up."""
        await self.refresh()
        ready = self.ready_ids()
        logger.info("models ready: %s", ", ".join(ready) or "none")
        default = self.settings.default_model
        if default is not None and default not in ready:
            logger.warning("CHARLM_DEFAULT_MODEL %r is not among the ready models", default)

    def watch(self) -> None:
        """Check the folder every ``reload_interval_s`` seconds from now on (0: never)."""
        if self.settings.reload_interval_s > 0 and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await self.refresh()
            except Exception:  # the next check tries again; the models serve meanwhile
                logger.exception("checking the models folder failed")

    def begin_draining(self) -> None:
        """The server is stopping: no more checks; ``/ready`` says so from now on."""
        if not self.draining:
            self.draining = True
            logger.info("draining: no more checks of the models folder")

    async def stop(self, grace_seconds: float) -> None:
        """Stop checking, then stop every engine, old versions still draining included."""
        self.begin_draining()
        tasks = [t for t in (self._watcher, *self._checks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        engines = [e.engine for e in self.entries.values() if e.engine is not None]
        await asyncio.gather(
            *(engine.stop(grace_seconds) for engine in engines),
            self._retiring.stop(grace_seconds),
            return_exceptions=True,
        )

    # ------------------------------------------------------------------ checks of the folder
    async def refresh(self, retry_failed: bool = False) -> list[ModelChange]:
        """Check the folder now (after any check already running) and return what changed.

        ``retry_failed``: read again the files that failed, even unchanged ones."""
        task = asyncio.ensure_future(self._check(retry_failed))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)
        return await asyncio.shield(task)  # a caller that gives up leaves the check running

    async def reload(self) -> list[ModelChange]:
        """What the checks running now change, then a check of its own that retries failed
        files: ``POST /v1/models/reload``. Returns once every new version serves."""
        earlier: list[ModelChange] = []
        running = asyncio.gather(*self._checks, return_exceptions=True)
        for changes in await asyncio.shield(running):
            if isinstance(changes, list):
                earlier += changes
        return earlier + await self.refresh(retry_failed=True)

    async def _check(self, retry_failed: bool) -> list[ModelChange]:
        async with self._lock:
            changes: list[ModelChange] = []
            for _ in range(_PASSES):
                if self.draining:
                    break
                files = await asyncio.to_thread(scan_folder, self.settings.models_dir)
                if files is None:
                    self._report_missing_folder()
                    break
                self._folder_missing = False
                settled = True
                for file in files.values():
                    try:
                        change = await self._loader.consider(self.entries, file, retry_failed)
                    except FileChangedError as exc:
                        logger.info("model %s: %s; reading it again", file.model_id, exc)
                        settled = False
                        continue
                    if change is not None:
                        changes.append(change)
                for model_id in [m for m in self.entries if m not in files]:
                    changes.append(self._remove(model_id))
                self.entries = dict(sorted(self.entries.items()))
                if settled:
                    break
                retry_failed = False  # the next pass is for the files that moved
            self._update_gauges()
            if any(c.change in ("added", "replaced") for c in changes):
                # a new version lives long: out of the collector's full passes with the rest
                await asyncio.to_thread(release_memory)
            return changes

    def _report_missing_folder(self) -> None:
        if not self._folder_missing:
            self._folder_missing = True
            logger.error(
                "models folder %s cannot be listed: the models loaded stay as they are",
                self.settings.models_dir,
            )

    def _remove(self, model_id: str) -> ModelChange:
        entry = self.entries.pop(model_id)
        if entry.ready:
            self._retiring.add(entry)
            logger.info("model %s: its file is gone; it drains and disappears", model_id)
        return ModelChange(model_id, "removed", sha256=entry.sha256)

    def draining_versions(self, model_id: str) -> int:
        """Older versions of ``model_id`` still finishing the requests they hold."""
        return self._retiring.count(model_id)

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
        """The ready entry a request names, or the default one when it names none; the request
        holds that version until it ends (``tracking_model_use``)."""
        if model_id is None:
            model_id = self._default_id()
        entry = self.find(model_id)
        if not entry.ready:
            raise ModelUnavailableError(f"model {model_id!r} is unavailable: {entry.error}")
        note_use(entry)
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
