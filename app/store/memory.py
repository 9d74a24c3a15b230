"""Giving a dropped model's memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim  # glibc only
    except (OSError, AttributeError, TypeError):
        return None
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_memory() -> None:
    """Free what nothing references any more and hand the freed heap back to the system; run
    after a model is loaded or dropped.

    The server freezes what exists after start-up (``gc.freeze`` in ``app.main``), which keeps
    the models out of the collector's full passes but also out of its reach: a model dropped
    later is collected only after an unfreeze, so this unfreezes, collects and freezes again
    (one full pass, a few tens of milliseconds), which also freezes a model just loaded. glibc
    keeps freed memory in its arenas; ``malloc_trim`` returns it, so the process's resident size
    comes back down after a model is dropped.
    """
    frozen = gc.get_freeze_count() > 0
    if frozen:
        gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
