"""The app factory: ``create_app(settings)`` wires settings, models, routes and error handlers.

Models are loaded in the lifespan (not at import) and stopped, with a grace period, at shutdown.
``app_from_env`` is the factory uvicorn workers call: it reads the settings from ``CHARLM_*``.

The engines start draining the moment the process is asked to stop (SIGTERM or SIGINT,
``on_termination``). On SIGTERM uvicorn stops accepting connections and waits for the open ones
(up to its ``timeout_graceful_shutdown``) before the app's lifespan ends; only then would the
engines hear of it, and a long stream would be cut off without its final event. Chaining onto
uvicorn's handler tells the engines at once: they refuse new work, let running requests finish
within the grace period, then end the rest with ``finish_reason == "abort"``, so every stream
closes with a final event before uvicorn's own timeout.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from app.api.deps import Services, require_api_key
from app.api.errors import install_error_handlers
from app.api.middleware import (
    AdmissionMiddleware,
    APIKeyMiddleware,
    BodyLimitMiddleware,
    RequestContextMiddleware,
    release_current,
)
from app.api.routes import completions, generate, health, infill, models, playground, score
from app.api.schemas.common import Limits, apply_limits_to_openapi
from app.metrics import Metrics
from app.settings import Settings
from app.store import ModelStore

logger = logging.getLogger(__name__)

API_VERSION = "1"
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


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` defaults to the ``CHARLM_*`` environment."""
    settings = settings or Settings()
    metrics = Metrics()
    store = ModelStore(settings, metrics, on_submitted=release_current)
    keys = [k.encode("utf-8") for k in settings.load_api_keys()]
    limits = Limits(max_text_chars=settings.max_text_chars, max_new_chars=settings.max_new_chars)
    services = Services(settings, metrics, store, keys, limits)
    metrics.watch_engines(store.engines)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "loading models from %s (API keys: %s)",
            settings.models_dir,
            f"{len(keys)} configured" if keys else "off",
        )
        await store.load()
        # what exists now (torch, the models, the app) lives as long as the process: keep it out
        # of the garbage collector's full passes, which otherwise walk it all and stall the event
        # loop for tens of milliseconds whenever a burst of requests allocates enough objects
        gc.collect()
        gc.freeze()
        # on SIGTERM, drain the engines at once so open streams end with a final event
        restore_signals = on_termination(lambda: store.stop(settings.shutdown_grace_s))
        try:
            yield
        finally:
            restore_signals()
            await store.stop(settings.shutdown_grace_s)

    app = FastAPI(
        title="charlm",
        version=API_VERSION,
        summary="Character-level language models: score texts and generate, OpenAI-compatible.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)

    secured = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(playground.router)
    secured_routers = (models.router, score.router, generate.router, completions.router)
    for router in (*secured_routers, infill.router):
        app.include_router(router, dependencies=secured)
    # the POST routes that read a body: their key is checked before the body (APIKeyMiddleware)
    posts = frozenset(
        route.path
        for router in (*secured_routers, infill.router)
        for route in router.routes
        if isinstance(route, APIRoute) and "POST" in (route.methods or ())
    )

    # middleware: the last added runs first (request ids wrap everything)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    app.add_middleware(AdmissionMiddleware, engines=store.engines)  # 429 early when all are full
    app.add_middleware(APIKeyMiddleware, keys=keys, paths=posts)  # 401 before a body is read
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            app.openapi_schema = apply_limits_to_openapi(schema, limits)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings from the environment."""
    return create_app(Settings())
