"""Start draining the engines the moment the process is asked to stop (SIGTERM or SIGINT).

On SIGTERM uvicorn stops accepting connections and waits for the open ones (up to its
``timeout_graceful_shutdown``) before the app's lifespan ends; only then would the engines hear of
it, and a long stream would be cut off without its final event. Chaining onto uvicorn's handler
tells the engines at once: they refuse new work, let running requests finish within the grace
period, then end the rest with ``finish_reason == "abort"``, so every stream closes with a final
event before uvicorn's own timeout.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_termination(drain: Callable[[], Coroutine[Any, Any, object]]) -> Callable[[], None]:
    """Run ``drain()`` on the running event loop when a stop signal arrives, then the handler
    that was installed before (uvicorn's). Returns a function that restores that handler.

    Does nothing outside the main thread (signals only reach it) or where no Python handler is
    installed (then nobody would go on to stop the process after draining).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()
    previous: dict[int, Callable[[int, FrameType | None], Any]] = {}

    def start_drain() -> None:
        if not tasks:  # once, whatever the number of signals
            logger.info("stop signal: draining the engines")
            tasks.add(loop.create_task(drain()))

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(start_drain)
        previous[signum](signum, frame)

    for sig in SIGNALS:
        current = signal.getsignal(sig)
        if callable(current):
            previous[sig] = current
            signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)

    return restore
