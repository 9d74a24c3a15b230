"""Places held for requests between the server's edge and an engine.

The admission middleware (``app.api.middleware``) lets a request to an engine route through only
while some engine has room for it beside the requests let through before it that have not reached
an engine yet (their bodies are still being read and validated). Each such request holds a
``Reservation``; the engine ends the hold when the request reaches it (``release_current``, called
by ``ModelEngine`` once the request is queued or refused), and the middleware ends it when the
request is over in any case (a request refused by validation never reaches an engine).

Everything here runs on the event loop's thread; the current reservation travels with the
request's context (``contextvars``), so routes pass nothing along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Reservations:
    """The count of places held now."""

    def __init__(self) -> None:
        self.held = 0

    def hold(self) -> Reservation:
        self.held += 1
        return Reservation(self)


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


_current: ContextVar[Reservation | None] = ContextVar("charlm_reservation", default=None)


@contextmanager
def holding(reservation: Reservation) -> Iterator[None]:
    """Make ``reservation`` the current request's for the block; released at its end."""
    token = _current.set(reservation)
    try:
        yield
    finally:
        reservation.release()
        _current.reset(token)


def release_current() -> None:
    """End the current request's hold, if it has one (an engine has taken the request)."""
    reservation = _current.get()
    if reservation is not None:
        reservation.release()
