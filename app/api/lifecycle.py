"""ASGI middleware for a server whose models, and which itself, come and go.

- ``ModelUseMiddleware``: each request holds the model versions it was given until its response
  has been sent (``app.store.tracking_model_use``), so an old version replaced meanwhile stops
  only once the requests on it are over, streams included.
- ``CloseWhileDrainingMiddleware``: once the server is stopping, every response carries
  ``Connection: close``, so clients on kept-alive connections reconnect (through their load
  balancer, to another replica) instead of sending their next request here.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.store import tracking_model_use


class ModelUseMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with tracking_model_use():
            await self.app(scope, receive, send)


class CloseWhileDrainingMiddleware:
    def __init__(self, app: ASGIApp, draining: Callable[[], bool]) -> None:
        self.app = app
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.draining():
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"
                ]
                headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_closing)
