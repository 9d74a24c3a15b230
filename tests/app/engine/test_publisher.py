"""Hand-off of completion text from the worker thread to the event loop: kept until a
publication, one wake-up per event loop; the interval between deliveries grows with the rows."""

from __future__ import annotations

import asyncio

import numpy as np

from app.engine.params import FinishReason, GenerationParams
from app.engine.publisher import STREAM_INTERVAL_PER_ROW_S, Publisher
from app.engine.requests import CompletionText, GenerationRequest, Mailbox


def make_request(loop: asyncio.AbstractEventLoop) -> GenerationRequest:
    return GenerationRequest(
        ids=np.array([1], dtype=np.int64),
        params=GenerationParams(max_chars=100),
        seed=0,
        text=CompletionText(()),
        mailbox=Mailbox(loop),
        admitted_at=0.0,
        deadline=1e9,
    )


def test_text_waits_for_the_publication_and_comes_as_one_piece() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        publisher = Publisher(stream_interval_s=0.004)
        request = make_request(loop)
        box = request.mailbox
        for char in "ab":
            publisher.deliver(request, request.text.extend(char))
        await asyncio.sleep(0.01)
        assert not box.event.is_set()  # kept until published
        publisher.publish()
        await asyncio.wait_for(box.event.wait(), 5)
        box.event.clear()
        assert box.take() == ("ab", 2, None, None)

        publisher.deliver(request, request.text.extend("cd"))
        publisher.deliver(request, request.text.release(), finish=FinishReason.LENGTH)
        publisher.publish()
        publisher.publish()  # nothing new: no second wake-up
        await asyncio.wait_for(box.event.wait(), 5)
        assert box.take() == ("cd", 4, "length", None)

    asyncio.run(main())


def test_interval_grows_with_the_rows() -> None:
    publisher = Publisher(stream_interval_s=0.004)
    assert publisher.interval(1) == 0.004
    assert publisher.interval(32) == 32 * STREAM_INTERVAL_PER_ROW_S > 0.004
    assert publisher.interval(128) == 4 * publisher.interval(32)


def test_failure_reaches_the_consumer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        publisher = Publisher(stream_interval_s=0.004)
        request = make_request(loop)
        error = RuntimeError("model failed")
        publisher.fail(request, error, num_chars=0)
        publisher.publish()  # as the worker does when it ends
        await asyncio.wait_for(request.mailbox.event.wait(), 5)
        assert request.mailbox.take() == ("", 0, None, error)

    asyncio.run(main())
