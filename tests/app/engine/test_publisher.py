"""Hand-off of completion text from the worker thread to the event loop: coalesced until the
publishing interval passes, at once when urgent; one wake-up per event loop."""

from __future__ import annotations

import asyncio

import numpy as np

from app.engine.params import FinishReason, GenerationParams
from app.engine.publisher import Publisher
from app.engine.requests import CompletionText, GenerationRequest, Mailbox
from models.sampling import make_generator


def make_request(loop: asyncio.AbstractEventLoop) -> GenerationRequest:
    return GenerationRequest(
        ids=np.array([1], dtype=np.int64),
        params=GenerationParams(max_chars=100),
        generator=make_generator(0)[0],
        seed=0,
        text=CompletionText(()),
        mailbox=Mailbox(loop),
        admitted_at=0.0,
        deadline=1e9,
    )


def test_text_waits_for_the_interval_unless_urgent() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        publisher = Publisher(stream_interval_s=3600.0)
        request = make_request(loop)
        box = request.mailbox
        for char in "ab":
            request.text.append(char)
            publisher.deliver(request, char)
        publisher.urgent = True  # a first character: published at once
        publisher.publish(generating_rows=1)
        await asyncio.wait_for(box.event.wait(), 5)
        box.event.clear()
        assert box.take() == ("ab", 2, None, None)

        request.text.append("c")
        publisher.deliver(request, "c")
        publisher.publish(generating_rows=1)  # within the interval: kept back
        await asyncio.sleep(0.01)
        assert not box.event.is_set()
        request.text.append("d")
        publisher.deliver(request, "d", finish=FinishReason.LENGTH)
        publisher.publish(generating_rows=1, force=True)
        await asyncio.wait_for(box.event.wait(), 5)
        assert box.take() == ("cd", 4, "length", None)

    asyncio.run(main())


def test_failure_reaches_the_consumer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        publisher = Publisher(stream_interval_s=3600.0)
        request = make_request(loop)
        error = RuntimeError("model failed")
        publisher.fail(request, error, num_chars=0)
        publisher.publish(generating_rows=0, force=True)  # as the worker does when it ends
        await asyncio.wait_for(request.mailbox.event.wait(), 5)
        assert request.mailbox.take() == ("", 0, None, error)

    asyncio.run(main())
