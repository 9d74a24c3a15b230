"""Early refusal under overload: a 429 before the request body is read or parsed.

A request to an engine-backed route is let through while some loaded engine has room for it
(free queue places and free rows) beside the requests let through before it that have not reached
an engine yet (``app.reservations``); otherwise it gets its 429 at the outer edge, which costs a
fraction of what validation and routing would (``Retry-After`` from the engine's estimate). The
engine still makes the final decision for the model a request names.

A request let through yields to the event loop a few times before going on (each time the loop
reads its sockets again): requests that arrived together are all checked first, so in a burst the
refusals leave at once instead of queueing behind the full processing of the requests admitted
before them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from app.engine import ModelEngine, QueueFullError
from app.errors import from_engine_error
from app.reservations import Reservations, holding

ENGINE_ROUTES = frozenset({"/v1/generate", "/v1/score", "/v1/completions"})


class AdmissionMiddleware:
    """Answers 429 at once for engine routes while no engine has room for one more request."""

    def __init__(self, app: ASGIApp, engines: Callable[[], Mapping[str, ModelEngine]]) -> None:
        self.app = app
        self.engines = engines
        self.reservations = Reservations()

    def _refusal(self) -> QueueFullError | None:
        engines = list(self.engines().values())
        if not engines:
            return None
        pending = self.reservations.held
        refusals = []
        for engine in engines:
            refusal = engine.queue_full(pending)
            if refusal is None:
                return None
            refusals.append(refusal)
        for engine in engines:
            engine.count_rejection("queue_full")
        return min(refusals, key=lambda r: r.retry_after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine_call = scope["type"] == "http" and scope["method"] == "POST"
        if not (engine_call and scope["path"] in ENGINE_ROUTES):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal()
        if refusal is not None:
            await from_engine_error(refusal).response()(scope, receive, send)
            return
        with holding(self.reservations.hold()):
            for _ in range(3):  # let the requests that arrived with this one be checked
                await asyncio.sleep(0)
            await self.app(scope, receive, send)
