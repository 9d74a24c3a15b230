"""Stop work for a client that has gone: a non-streaming request's generation is cancelled as soon
as the server sees the disconnect, instead of running to ``max_chars`` for nobody."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from app.errors import APIError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# nginx's convention for "client closed the request"; only the access log and metrics see it
CLIENT_CLOSED = 499


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise a 499 ``APIError``."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # the body has been read: the next message is the disconnect (or the end of the response)
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if not watcher.done() or watcher.cancelled():
            raise  # cancelled from outside, not by the disconnect
        logger.info("client disconnected: generation cancelled")
        raise APIError(
            CLIENT_CLOSED, "the client closed the request", code="client_closed"
        ) from None
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
