"""One generation seen from the event loop: the ``n`` completions of a ``ModelEngine.generate``
call, from their requests to the chunks of text handed back.

Each completion is a ``GenerationRequest`` (``app.engine.requests``) that the scheduler thread
runs (``app.engine.scheduler``); it writes the completion's new text into its ``Mailbox`` and
wakes the generation's one ``asyncio.Event``, and the completion's last chunk carries its
``FinishReason``. Until every completion has started, the generation waits no further than their
deadline, then gives up on them with ``RequestTimeoutError``; once they all run, the scheduler
ends each at its deadline itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from app.engine.errors import RequestTimeoutError
from app.engine.params import FinishReason, GenerationParams
from app.engine.requests import CompletionText, GenerationRequest, Mailbox, Phase
from app.engine.scheduler import Scheduler
from app.engine.stats import EngineCounters


@dataclass
class GenerationChunk:
    """New text for completion ``index`` of a request; its last chunk carries ``finish_reason``."""

    text: str
    finish_reason: FinishReason | None = None  # None while running
    num_chars: int = 0  # characters of the completion so far, this chunk included
    seed: int = 0
    index: int = 0  # of the completion among the request's ``n``


class Generation:
    """The completions of the prompt ``ids`` (``(T,)``, after ``<bos>``), one per seed.

    Its ``requests`` are to be queued together (``Scheduler.submit``); then, while some are
    ``running``, ``wait`` for news and ``take`` it; at the end, ``cancel`` what has not ended.
    """

    def __init__(
        self,
        ids: np.ndarray,
        params: GenerationParams,
        seeds: list[int],
        scheduler: Scheduler,
        counters: EngineCounters,
        request_timeout_s: float,
    ) -> None:
        loop, self.event, now = asyncio.get_running_loop(), asyncio.Event(), time.monotonic()
        self.requests = [
            GenerationRequest(
                ids=ids,
                params=params,
                seed=seed,
                text=CompletionText(params.stop),
                mailbox=Mailbox(loop, self.event),
                admitted_at=now,
                deadline=now + request_timeout_s,
            )
            for seed in seeds
        ]
        self.seeds = seeds
        self.running = set(range(len(self.requests)))  # indices of completions not yet ended
        self.request_timeout_s = request_timeout_s
        self._scheduler = scheduler
        self._counters = counters

    async def wait(self) -> None:
        """Wait for new text of the request's completions; until every one has started, wait
        no further than their deadline, and then give up on them."""
        requests, event = self.requests, self.event
        while any(r.phase is Phase.QUEUED for r in requests):
            remaining = requests[0].deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, remaining)):
                    await event.wait()
            except TimeoutError:
                withdrawn = [r for r in requests if self._scheduler.withdraw(r)]
                if withdrawn:
                    self._counters.reject("timeout")
                    raise RequestTimeoutError(
                        f"the request waited longer than {self.request_timeout_s:g} s to start"
                    ) from None
                continue
            if not any(r.phase is Phase.QUEUED for r in requests):
                return
            event.clear()  # what the started ones wrote waits in their mailboxes
        # all running: the scheduler ends each at its deadline with finish_reason "timeout"
        await event.wait()

    def take(self) -> Iterator[GenerationChunk]:
        """The new text of each running completion in turn, as one chunk each (none when it has
        nothing new); an error of the worker raises here."""
        self.event.clear()
        for index in sorted(self.running):
            text, num_chars, finish, error = self.requests[index].mailbox.take()
            if error is not None:
                raise error
            if text or finish is not None:
                yield GenerationChunk(text, finish, num_chars, self.seeds[index], index)
            if finish is not None:
                self.running.discard(index)

    def cancel(self) -> None:
        """Forget the completions that have not ended (their reader is gone)."""
        for request in self.requests:
            if request.phase is not Phase.DONE:
                self._scheduler.cancel(request)
