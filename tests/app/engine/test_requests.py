"""The queue requests wait in: bounded for every kind, withdrawn requests leave it."""

from __future__ import annotations

import asyncio

from app.engine.requests import CallRequest, Phase, RequestQueue, ScoreRequest


def test_requests_beyond_the_free_rows_take_queue_places() -> None:
    """Two free rows and one queue place: three requests fit, the fourth does not, whatever
    their kind (free rows used to be added on top of a queue already past its limit)."""
    loop = asyncio.new_event_loop()
    try:
        queue = RequestQueue(max_queue=1)
        assert queue.room(free_rows=2) == 3
        requests = [
            ScoreRequest(["a"], "", 0, loop, loop.create_future()),
            CallRequest(lambda model, vocab: None, loop, loop.create_future()),
            ScoreRequest(["b"], "", 0, loop, loop.create_future()),
        ]
        for request in requests:
            queue.add(request)
        assert len(queue) == 3 and queue.room(free_rows=2) == 0
        assert queue.room(free_rows=0) == 0  # more waiting than places: still no room
        assert queue.withdraw(requests[1])
        assert requests[1].phase is Phase.DONE and requests[1].cancelled
        assert not queue.withdraw(requests[1])  # once
        assert queue.room(free_rows=2) == 1
        generations, scorings, calls = queue.drain()
        assert (generations, scorings, calls) == ([], [requests[0], requests[2]], [])
        assert len(queue) == 0
    finally:
        loop.close()
