"""Early refusal under overload: a 429 before the request body is read or parsed.

When every loaded engine's queue is full, a request to an engine-backed route cannot be admitted
whatever it asks for; answering it at the outer edge costs a fraction of what validation and
routing would, so an overloaded server still answers each refused client at once (``Retry-After``
from the engine's estimate). When some engine has room, requests take the normal path, and the
engine itself refuses them if the model they name is full.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from app.engine import ModelEngine, QueueFullError
from app.errors import from_engine_error

ENGINE_ROUTES = frozenset({"/v1/generate", "/v1/score", "/v1/completions"})


class AdmissionMiddleware:
    """Answers 429 at once for engine routes while every engine's queue is full."""

    def __init__(self, app: ASGIApp, engines: Callable[[], Mapping[str, ModelEngine]]) -> None:
        self.app = app
        self.engines = engines

    def _refusal(self) -> QueueFullError | None:
        engines = list(self.engines().values())
        if not engines:
            return None
        refusals = []
        for engine in engines:
            refusal = engine.queue_full()
            if refusal is None:
                return None
            refusals.append(refusal)
        for engine in engines:
            engine.count_rejection("queue_full")
        return min(refusals, key=lambda r: r.retry_after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine_call = scope["type"] == "http" and scope["method"] == "POST"
        if engine_call and scope["path"] in ENGINE_ROUTES:
            refusal = self._refusal()
            if refusal is not None:
                await from_engine_error(refusal).response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
