"""Hand-off of results from a scheduler's worker thread to the event loops that wait for them.

Completions: new text is kept per request and handed to its ``Mailbox`` at a publication; the
consumers are woken with one ``call_soon_threadsafe`` per event loop (each is a socket write that
gives up the GIL). The worker decodes and delivers text at once for a request's first characters
and its end, otherwise every ``interval(rows)``: ``stream_interval_s`` or 0.5 ms per generating
row if that is longer (with the engine's default, 4 ms for one row, 16 ms for 32, 64 ms for 128),
so a stream's characters are coalesced into few chunks and the event loop's work per second stays
bounded; it publishes after each round that delivered something. Scoring requests are resolved
the same way, one wake-up per loop (``resolve_all``); a call, when it has run (``settle``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from app.engine.params import FinishReason
from app.engine.requests import CallRequest, GenerationRequest, Mailbox, Phase, ScoreRequest

# the publishing interval grows by this much per generating row (see ``Publisher.publish``)
STREAM_INTERVAL_PER_ROW_S = 0.0005


def _set_events(boxes: list[Mailbox]) -> None:
    for box in boxes:
        box.event.set()


def _resolve(requests: list[ScoreRequest], error: BaseException | None) -> None:
    for request in requests:
        if request.future.done():
            continue
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result([r for r in request.results if r is not None])


def resolve_all(requests: list[ScoreRequest], error: BaseException | None = None) -> None:
    """Complete scoring requests on their event loops: one wake-up per loop, not per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[ScoreRequest]] = {}
    for request in requests:
        by_loop.setdefault(request.loop, []).append(request)
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            loop.call_soon_threadsafe(_resolve, group, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled: its caller has gone
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def settle(request: CallRequest, result: Any = None, error: BaseException | None = None) -> None:
    """Complete a call on its event loop with ``result`` or ``error``."""
    request.phase = Phase.DONE
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
        request.loop.call_soon_threadsafe(_settle, request.future, result, error)


class Publisher:
    """Text of completions kept for the next publication, and the mailboxes to wake (used by the
    worker thread only)."""

    def __init__(self, stream_interval_s: float) -> None:
        self.stream_interval_s = stream_interval_s
        self._wakes: dict[asyncio.AbstractEventLoop, list[Mailbox]] = {}
        self._dirty: list[GenerationRequest] = []  # requests with text not yet in their mailbox

    def interval(self, generating_rows: int) -> float:
        """Seconds between two deliveries of every stream's new text: more streams, fewer events
        each, so the event loop's work stays bounded (~2000 wake-ups/s)."""
        return max(self.stream_interval_s, generating_rows * STREAM_INTERVAL_PER_ROW_S)

    def deliver(
        self, request: GenerationRequest, text: str, finish: FinishReason | None = None
    ) -> None:
        """Keep new text (and the end) for the next publication."""
        if not request.pending and request.finish is None:
            self._dirty.append(request)
        if text:
            request.pending.append(text)
        if finish is not None:
            request.finish = finish

    def fail(self, request: GenerationRequest, error: BaseException, num_chars: int) -> None:
        """Hand ``error`` to the request's mailbox now; its consumer raises it."""
        box = request.mailbox
        if box.put("", num_chars, error=error):
            self._wakes.setdefault(box.loop, []).append(box)

    def publish(self) -> None:
        """Hand the kept text to the mailboxes and wake their consumers: one call per loop."""
        if not self._dirty and not self._wakes:
            return
        for request in self._dirty:
            box = request.mailbox
            if box.put("".join(request.pending), request.text.shown, request.finish):
                self._wakes.setdefault(box.loop, []).append(box)
            request.pending.clear()
        self._dirty = []
        for loop, boxes in self._wakes.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
                loop.call_soon_threadsafe(_set_events, boxes)
        self._wakes = {}
