"""The engine's errors; the server maps each to one HTTP status (see ``app.api.errors``)."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of the engine's errors."""


class QueueFullError(EngineError):
    """Too many requests are waiting; the client should retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: float = 1.0, message: str = "") -> None:
        super().__init__(message or "the server is at capacity; retry later")
        self.retry_after = retry_after


class EngineClosedError(EngineError):
    """The engine is shutting down and takes no new work."""


class CannotGenerateError(EngineError):
    """The model's architecture cannot generate left to right."""


class CannotAdaptError(EngineError):
    """The model cannot be scored adaptively (``models.adapt.adapt_refusal`` says why)."""


class RequestTimeoutError(EngineError, TimeoutError):
    """A request waited in the queue longer than the engine's ``request_timeout_s``.

    A completion that times out after it started is not an error: it ends with the text so far
    and ``finish_reason == "timeout"``.
    """
