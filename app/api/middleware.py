"""ASGI middleware: request ids, access log and metrics; the API-key check before the body; early
refusal under overload; the body-size limit.

All are plain ASGI (not ``BaseHTTPMiddleware``) so streaming responses and client disconnects
pass through untouched.

Early refusal: a request to an engine-backed route is let through while some loaded engine has
room for it (free queue places and free rows) beside the requests let through before it that have
not reached an engine yet (``app.engine.reservations``); otherwise it gets its 429 at the outer
edge, which costs a fraction of what validation and routing would (``Retry-After`` from the
engine's estimate). The engine still makes the final decision for the model a request names. A
request let through yields to the event loop a few times before going on (each time the loop reads
its sockets again): requests that arrived together are all checked first, so in a burst the
refusals leave at once instead of queueing behind the full processing of the requests admitted
before them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import authorization_error
from app.api.errors import SERVER, APIError, as_api_error
from app.engine.engine import ModelEngine
from app.engine.reservations import Reservation, Reservations
from app.metrics import Metrics

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("app.access")

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
# a client's id is echoed only if it is short and plain (it goes into headers and logs)
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside a request) for log formats to print."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """Gives every request an id (``X-Request-ID``, echoed when the client sent a valid one),
    logs one access line and records the request in the metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, b"x-request-id")
        request_id = sent if sent and _CLIENT_REQUEST_ID.match(sent) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # a bug, not a client error: log it with the request id and answer in the one shape
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:
                raise
            error = APIError(500, "internal server error", type=SERVER, code="internal_error")
            await error.response()(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(route, scope["method"], status, seconds)
            access_logger.info(
                "%s %s %d %.1fms", scope["method"], scope["path"], status, seconds * 1000
            )
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``, before any of it is parsed; 408 for a body that has not
    fully arrived within ``body_timeout_s`` (a client trickling bytes holds no connection for ever).

    A declared ``Content-Length`` over the limit is refused without reading; otherwise the body is
    read up to the limit (chunked uploads too) and replayed to the app. Later ``receive`` calls go
    to the server, so disconnects still reach streaming responses.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s

    def _too_large(self, size: str) -> APIError:
        return APIError(
            413,
            f"request body is {size}; this server accepts at most {self.max_bytes} bytes"
            " (CHARLM_MAX_REQUEST_BYTES)",
            param="body",
            code="request_too_large",
            headers={"Connection": "close"},
        )

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body (None if the client left first); ``APIError`` when it is refused."""
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise APIError(
                    400, "Content-Length must be a whole number", param="body", code="bad_request"
                )
            if int(declared) > self.max_bytes:
                raise self._too_large(f"{int(declared)} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # disconnect before the body ended
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise self._too_large(f"over {self.max_bytes} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise APIError(
                408,
                f"the request body did not arrive within {self.body_timeout_s:g} s ({size} bytes"
                " received; CHARLM_BODY_TIMEOUT_S)",
                param="body",
                code="request_timeout",
                headers={"Connection": "close"},
            ) from None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
        except APIError as refusal:
            await refusal.response()(scope, receive, send)
            return
        if body is None:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class APIKeyMiddleware:
    """The key check of ``require_api_key`` for ``POST`` requests to ``paths``, before anything
    else looks at them: a client without a valid key gets 401 before the server reads or parses
    a byte of its body (the route dependency runs only after the body is parsed, so a malformed
    body got its 400/422 first). Other requests keep the dependency, and routing's 404/405."""

    def __init__(self, app: ASGIApp, keys: list[bytes], paths: frozenset[str]) -> None:
        self.app = app
        self.keys = keys
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope["method"] == "POST"
        if self.keys and guarded and scope["path"] in self.paths:
            header = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"authorization"),
                "",
            )
            error = authorization_error(header, self.keys)
            if error is not None:
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


ENGINE_ROUTES = frozenset({"/v1/generate", "/v1/score", "/v1/completions", "/v1/infill"})

# the reservation of the request being served, if it holds one (it travels with the request's
# context, so routes pass nothing along)
_reservation: ContextVar[Reservation | None] = ContextVar("charlm_reservation", default=None)


@contextmanager
def holding(reservation: Reservation) -> Iterator[None]:
    """Make ``reservation`` the current request's for the block; released at its end."""
    token = _reservation.set(reservation)
    try:
        yield
    finally:
        reservation.release()
        _reservation.reset(token)


def release_current() -> None:
    """End the current request's hold, if it has one: its engine has taken the request (the
    engines' ``on_submitted`` hook)."""
    reservation = _reservation.get()
    if reservation is not None:
        reservation.release()


class AdmissionMiddleware:
    """Answers 429 at once for engine routes while no engine has room for one more request."""

    def __init__(self, app: ASGIApp, engines: Callable[[], Mapping[str, ModelEngine]]) -> None:
        self.app = app
        self.engines = engines
        self.reservations = Reservations()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine_call = scope["type"] == "http" and scope["method"] == "POST"
        if not (engine_call and scope["path"] in ENGINE_ROUTES):
            await self.app(scope, receive, send)
            return
        refusal = self.reservations.refusal(self.engines().values())
        if refusal is not None:
            await as_api_error(refusal).response()(scope, receive, send)
            return
        with holding(self.reservations.hold()):
            for _ in range(3):  # let the requests that arrived with this one be checked
                await asyncio.sleep(0)
            await self.app(scope, receive, send)
