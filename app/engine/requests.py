"""The engine's requests as the scheduler sees them, the queue they wait in, and the hand-off of
text to the event loop.

A generation request belongs to the event loop until the scheduler takes it, then its row belongs
to the worker thread; the only things both sides touch are the ``Mailbox`` (under its own lock),
the ``cancelled`` flag (a plain attribute write, atomic under the GIL) and the request's ``phase``
(changed under the scheduler's lock).
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.engine.params import FinishReason, GenerationParams
from models.base import CharLM, State
from models.sampling import SamplingParams, StopMatcher
from models.scoring import TextScore
from models.vocab import CharVocab


class Phase(enum.Enum):
    QUEUED = "queued"  # waiting in the scheduler's queue
    RUNNING = "running"  # reading its prompt or in the decode batch
    DONE = "done"


class CompletionText:
    """The text of one completion as it grows, a piece at a time: finds stop strings and says what
    is safe to show.

    Characters that could be the start of a stop string are held back until the next characters
    prove them innocent, so a stop string never reaches the client, not even in part. Only the
    held characters are kept: a stop string can only begin among them, so each piece is searched
    together with them alone.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.matcher = StopMatcher(stops)
        self.length = 0  # characters of the completion (a stop string and what follows: none)
        self.shown = 0  # characters released so far
        self.stopped = False
        self._held = ""  # the last characters, not released: they could begin a stop string

    def extend(self, new: str) -> str:
        """Add generated characters; return the text newly safe to show. After a stop string
        nothing more is added."""
        if self.stopped or not new:
            return ""
        if not self.matcher.stops:
            self.length += len(new)
            self.shown = self.length
            return new
        window = self._held + new
        cut = self.matcher.find(window, new_chars=len(new))
        if cut is not None:
            # everything before the stop string is the result; it ends here
            self.stopped = True
            self._held = ""
            self.length = self.shown + cut
            self.shown = self.length
            return window[:cut]
        self.length += len(new)
        ready = len(window) - self.matcher.held(window)
        self._held = window[ready:]
        self.shown += ready
        return window[:ready]

    def release(self) -> str:
        """Show everything kept (the completion has ended)."""
        text, self._held = self._held, ""
        self.shown += len(text)
        return text


class Mailbox:
    """Text the worker has produced for one completion and its consumer has not read yet.

    The completions of one request share their ``event``: one wake-up reads them all.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event | None = None) -> None:
        self.loop = loop
        self.event = event or asyncio.Event()  # set on ``loop`` only
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._num_chars = 0
        self._finish: FinishReason | None = None
        self._error: BaseException | None = None
        self._wake_pending = False

    def put(
        self,
        text: str,
        num_chars: int,
        finish: FinishReason | None = None,
        error: BaseException | None = None,
    ) -> bool:
        """Worker side: add text; True when the consumer needs a wake-up (none is pending)."""
        with self._lock:
            if text:
                self._parts.append(text)
            self._num_chars = num_chars
            if finish is not None:
                self._finish = finish
            if error is not None:
                self._error = error
            if self._wake_pending:
                return False
            self._wake_pending = True
            return True

    def take(self) -> tuple[str, int, FinishReason | None, BaseException | None]:
        """Consumer side: everything that arrived since the last call, as one piece."""
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
            self._wake_pending = False
            return text, self._num_chars, self._finish, self._error


@dataclass(eq=False)
class GenerationRequest:
    """One completion: its prompt, settings, seed and where its text goes.

    ``sampling`` holds the sampler's own settings for the row, made from ``params`` once. Its
    ``i``-th character is drawn with ``models.rng.uniforms(seed, i)``.
    """

    ids: np.ndarray  # (T,) BOS then the prompt's ids
    params: GenerationParams
    seed: int
    text: CompletionText
    mailbox: Mailbox
    admitted_at: float
    deadline: float
    phase: Phase = Phase.QUEUED
    cancelled: bool = False
    finish: FinishReason | None = None  # set by the scheduler when the completion ends
    pending: list[str] = field(default_factory=list)  # text not yet handed to the mailbox
    first_char_at: float | None = None
    # prompt reading: ids consumed so far and the 1-row state after them (None: initial state)
    prompt_pos: int = 0
    prompt_state: State | None = None
    sampling: SamplingParams = field(init=False)

    def __post_init__(self) -> None:
        params = self.params
        self.sampling = SamplingParams(params.temperature, params.top_k, params.top_p)

    def expired(self, now: float) -> bool:
        return now >= self.deadline


@dataclass(eq=False)
class CallRequest:
    """A model function the worker runs whole, ``fn(model, vocab)``, between two rounds
    (pseudo-log-likelihood scoring, infilling: work that reads a whole text at once); its result
    or error is set on ``future`` on its event loop."""

    fn: Callable[[CharLM, CharVocab], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    admitted_at: float = field(default_factory=time.monotonic)
    phase: Phase = Phase.QUEUED
    cancelled: bool = False


@dataclass(eq=False)
class ScoreRequest:
    """Texts to score with one context; resolved on its event loop when all texts are done."""

    texts: list[str]
    context: str
    top_k: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[TextScore]]
    admitted_at: float = field(default_factory=time.monotonic)
    phase: Phase = Phase.QUEUED
    cancelled: bool = False
    results: list[TextScore | None] = field(default_factory=list)
    remaining: int = 0


Request = GenerationRequest | ScoreRequest | CallRequest


class RequestQueue:
    """The requests waiting for the worker, by kind, in arrival order. Not thread-safe: the
    scheduler reads and changes it under its own lock."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.generations: deque[GenerationRequest] = deque()
        self.scorings: deque[ScoreRequest] = deque()
        self.calls: deque[CallRequest] = deque()

    def __len__(self) -> int:
        return len(self.generations) + len(self.scorings) + len(self.calls)

    def room(self, free_rows: int) -> int:
        """Requests that could be taken now: free queue places plus free rows (those of
        completions; texts to score have as many rows of their own). Requests queued beyond the
        free rows take queue places, so the queue never holds more than ``max_queue`` of them."""
        return max(0, self.max_queue + max(0, free_rows) - len(self))

    def add(self, request: Request) -> None:
        self._deque_of(request).append(request)

    def withdraw(self, request: Request) -> bool:
        """Take a request out if it is still waiting (True); one already running is left alone
        (False)."""
        if request.phase is not Phase.QUEUED:
            return False
        request.cancelled = True
        request.phase = Phase.DONE
        self._deque_of(request).remove(request)
        return True

    def drain(self) -> tuple[list[GenerationRequest], list[ScoreRequest], list[CallRequest]]:
        """Everything waiting, taken out."""
        taken = list(self.generations), list(self.scorings), list(self.calls)
        self.generations.clear()
        self.scorings.clear()
        self.calls.clear()
        return taken

    def _deque_of(self, request: Request) -> deque[Any]:
        if isinstance(request, GenerationRequest):
            return self.generations
        return self.scorings if isinstance(request, ScoreRequest) else self.calls
