"""Old versions of models, replaced or removed, finishing the requests that hold them.

An old version stops once no request holds it (``ModelEntry.wait_unused``), or at the latest
after ``request_timeout_s + shutdown_grace_s``, when no request it ran can still be running; its
engine gets ``shutdown_grace_s`` to end what is left, then its model is let go and its memory
returned to the system (``app.store.memory``).
"""

from __future__ import annotations

import asyncio
import logging

from app.store.entries import ModelEntry
from app.store.memory import release_memory

logger = logging.getLogger(__name__)


class Retiring:
    """The old versions still draining, each with the task that stops it."""

    def __init__(self, request_timeout_s: float, grace_s: float) -> None:
        self.request_timeout_s = request_timeout_s
        self.grace_s = grace_s
        self._versions: dict[asyncio.Task[None], ModelEntry] = {}

    def add(self, old: ModelEntry) -> None:
        """Let ``old`` finish the requests that hold it, then stop it and free its memory."""
        task = asyncio.create_task(self._drain(old))
        self._versions[task] = old
        task.add_done_callback(self._versions.pop)

    def count(self, model_id: str) -> int:
        """Old versions of ``model_id`` still draining."""
        return sum(old.id == model_id for old in self._versions.values())

    async def stop(self, grace_seconds: float) -> None:
        """The server is stopping: stop every old version within ``grace_seconds``."""
        engines = [old.engine for old in self._versions.values() if old.engine is not None]
        await asyncio.gather(*(e.stop(grace_seconds) for e in engines), return_exceptions=True)
        for task in list(self._versions):
            task.cancel()

    async def _drain(self, old: ModelEntry) -> None:
        limit = self.request_timeout_s + self.grace_s
        try:
            async with asyncio.timeout(limit):
                await old.wait_unused()
        except TimeoutError:
            logger.warning(
                "model %s: %d requests still hold the old version after %g s; stopping it",
                old.id,
                old.in_use,
                limit,
            )
        engine = old.engine
        assert engine is not None
        await engine.stop(self.grace_s)
        del engine
        if old.in_use == 0:  # nothing can reach it any more: let the model go
            old.engine = old.checkpoint = None
        logger.info("model %s: the old version (sha256 %s) is stopped", old.id, old.sha256)
        del old
        await asyncio.to_thread(release_memory)
