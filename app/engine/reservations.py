"""Places held for requests on their way to an engine, and the refusal a new one gets meanwhile.

The server's edge lets a request to an engine route through only while some engine has room for
it beside the requests let through before it that have not reached an engine yet (their bodies
are still being read and validated). Each such request holds a ``Reservation`` until it reaches
its engine (``ModelEngine`` calls its ``on_submitted`` hook once the request is queued or refused)
or is over in any case (a request refused by validation never reaches an engine). Whoever holds a
reservation releases it; the engine only says when.

Used on the event loop's thread only.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.engine.engine import ModelEngine
from app.engine.errors import QueueFullError


class Reservations:
    """The count of places held now, and the refusal a new request would get."""

    def __init__(self) -> None:
        self.held = 0

    def hold(self) -> Reservation:
        self.held += 1
        return Reservation(self)

    def refusal(self, engines: Iterable[ModelEngine]) -> QueueFullError | None:
        """None while some engine has room for one more request beside the places held; else
        the refusal with the shortest ``retry_after``, counted by every engine as a rejection.
        With no engine loaded nothing is refused here (the route answers why)."""
        engines = list(engines)
        refusals = []
        for engine in engines:
            refusal = engine.queue_full(self.held)
            if refusal is None:
                return None
            refusals.append(refusal)
        if not refusals:
            return None
        for engine in engines:
            engine.count_rejection("queue_full")
        return min(refusals, key=lambda r: r.retry_after)


class Reservation:
    """One held place; ``release`` ends the hold (once: later calls do nothing)."""

    __slots__ = ("_held", "_owner")

    def __init__(self, owner: Reservations) -> None:
        self._owner = owner
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._owner.held -= 1
