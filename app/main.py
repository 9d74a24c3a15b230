"""The app factory: ``create_app(settings)`` wires settings, models, routes and error handlers.

Models are loaded in the lifespan (not at import) and stopped, with a grace period, at shutdown.
``app_from_env`` is the factory uvicorn workers call: it reads the settings from ``CHARLM_*``.

The models folder is checked every ``reload_interval_s`` seconds while the server runs
(``app.store``): new, changed and removed checkpoints are served, swapped or dropped without a
restart.

When the process is asked to stop (SIGTERM or SIGINT, ``on_termination``) the server starts
draining at once: ``/ready`` answers 503 and responses carry ``Connection: close``. After
``shutdown_delay_s`` (0 by default), time for load balancers to see that and stop sending
requests, the engines drain and uvicorn is told to stop. On its own, uvicorn stops accepting
connections and waits for the open ones (up to its ``timeout_graceful_shutdown``) before the
app's lifespan ends; only then would the engines hear of it, and a long stream would be cut off
without its final event. Chaining onto uvicorn's handler tells the engines at the same moment:
they refuse new work, let running requests finish within the grace period, then end the rest
with ``finish_reason == "abort"``, so every stream closes with a final event before uvicorn's
own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from app.api.lifecycle import CloseWhileDrainingMiddleware, ModelUseMiddleware
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


def on_termination(
    drain: Callable[[], Coroutine[Any, Any, object]],
    begin: Callable[[], None] = lambda: None,
    delay_s: float = 0.0,
) -> Callable[[], None]:
    """When a stop signal arrives: ``begin()`` at once on the running event loop, then, after
    ``delay_s`` seconds, ``drain()`` and the handler that was installed before (uvicorn's, which
    closes the listener). A second signal ends the delay, a third goes to that handler at once
    (uvicorn stops without waiting on a second SIGINT). Returns a function that restores the
    handlers.

    Does nothing outside the main thread (signals only reach it) or where no Python handler is
    installed (then nobody would go on to stop the process after draining).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()
    previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
    hurry = asyncio.Event()  # a second signal during the delay ends it

    async def stop_after_delay(signum: int, frame: FrameType | None) -> None:
        logger.info("stop signal: draining; the listener closes in %g s", delay_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), delay_s)
        drained = loop.create_task(drain())
        previous[signum](signum, frame)
        await drained

    def on_loop(signum: int, frame: FrameType | None) -> None:
        if tasks:  # a later signal: end the delay; one more goes straight to uvicorn
            if delay_s > 0 and hurry.is_set():
                previous[signum](signum, frame)
            hurry.set()
            return
        begin()
        if delay_s > 0:
            tasks.add(loop.create_task(stop_after_delay(signum, frame)))
        else:
            logger.info("stop signal: draining the engines")
            tasks.add(loop.create_task(drain()))

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(on_loop, signum, frame)
        if delay_s <= 0:
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
    limits = Limits(
        max_text_chars=settings.max_text_chars,
        max_new_chars=settings.max_new_chars,
        max_adapt_chars=settings.max_adapt_chars,
    )
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
        # (a model dropped later is collected by the store itself, app.store.memory)
        gc.collect()
        gc.freeze()
        store.watch()
        # on SIGTERM, /ready says draining at once; the engines drain when the listener closes,
        # so open streams end with a final event
        restore_signals = on_termination(
            lambda: store.stop(settings.shutdown_grace_s),
            begin=store.begin_draining,
            delay_s=settings.shutdown_delay_s,
        )
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
    app.add_middleware(ModelUseMiddleware)  # a request holds its model's version to its end
    app.add_middleware(CloseWhileDrainingMiddleware, draining=lambda: store.draining)
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
