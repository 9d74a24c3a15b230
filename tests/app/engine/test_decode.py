"""The decode step driven by hand, step by step, with a tiny real model: where text is decoded
(block boundaries), stop strings across them, finish reasons, rows joining and leaving.

The publishing interval is an hour, so text is decoded only at a row's first character, at the
end of a block of ``BLOCK`` steps and when a row ends: the boundaries are known exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine.batching import advance_prompts
from app.engine.decode import Decoder
from app.engine.params import FinishReason, GenerationParams
from app.engine.publisher import Publisher
from app.engine.requests import CompletionText, GenerationRequest, Mailbox
from app.engine.stats import EngineCounters
from models.checkpoint import LoadedCheckpoint
from models.config import ModelConfig
from models.recurrent import LSTMLM
from models.sampling import SamplingParams, generate
from models.vocab import BOS_ID, CharVocab

VOCAB = CharVocab(list("abcdefgh .\n"))
BLOCK = 4


@pytest.fixture(scope="module")
def ckpt() -> LoadedCheckpoint:
    torch.manual_seed(1)
    config = ModelConfig("lstm", len(VOCAB), embed_size=8, hidden_size=24, num_layers=2)
    return LoadedCheckpoint(Path("test.safetensors"), LSTMLM(config).eval(), VOCAB, config)


class Harness:
    """A decoder whose published text is read back after every step."""

    def __init__(self, ckpt: LoadedCheckpoint) -> None:
        self.ckpt = ckpt
        self.loop = asyncio.new_event_loop()  # never run: mailboxes are read directly
        self.counters = EngineCounters()
        self.publisher = Publisher(stream_interval_s=3600.0)
        self.decoder = Decoder(
            ckpt.model, ckpt.vocab, self.counters, self.publisher, threading.Condition(), BLOCK
        )
        self.received: dict[int, list[str]] = {}
        self.finish: dict[int, FinishReason | None] = {}
        self.requests: list[GenerationRequest] = []

    def add(
        self,
        prompt: str,
        max_chars: int,
        seed: int,
        params: SamplingParams | None = None,
        stop: tuple[str, ...] = (),
        deadline: float = 1e18,
    ) -> int:
        """A request that reads its prompt and joins now; returns its number."""
        p = params or SamplingParams()
        settings = GenerationParams(max_chars, p.temperature, p.top_k, p.top_p, stop, seed)
        ids = np.array([BOS_ID, *self.ckpt.vocab.encode(prompt)], dtype=np.int64)
        request = GenerationRequest(
            ids, settings, seed, CompletionText(stop), Mailbox(self.loop), 0.0, deadline
        )
        with torch.inference_mode():
            joined = advance_prompts(self.ckpt.model, [request], 256)
        self.decoder.join(joined)
        self.requests.append(request)
        self.received[len(self.requests) - 1] = []
        return len(self.requests) - 1

    def step(self, times: int = 1) -> None:
        for _ in range(times):
            with torch.inference_mode():
                self.decoder.step()
            self.collect()

    def collect(self) -> None:
        self.publisher.publish()
        for number, request in enumerate(self.requests):
            text, _, finish, error = request.mailbox.take()
            assert error is None
            if text:
                self.received[number].append(text)
            if finish is not None:
                self.finish[number] = finish

    def text(self, number: int) -> str:
        return "".join(self.received[number])

    def close(self) -> None:
        self.loop.close()


def reference(
    ckpt: LoadedCheckpoint,
    prompt: str,
    max_chars: int,
    seed: int,
    params: SamplingParams | None = None,
    stop: tuple[str, ...] = (),
) -> tuple[str, str]:
    """The plain sampling loop's text and finish reason (``charlm-sample``'s)."""
    out = generate(ckpt.model, ckpt.vocab, prompt, max_chars, params, seed=seed, stop=stop)[0]
    return out.text, out.finish_reason


def test_text_is_decoded_at_the_first_character_at_block_ends_and_at_the_end(
    ckpt: LoadedCheckpoint,
) -> None:
    h = Harness(ckpt)
    try:
        row = h.add("ab", 10, seed=5)
        sizes = []
        for _ in range(10):
            h.step()
            sizes.append(len(h.text(row)))
        # first character at once; then columns 1-3 at the end of the first block, 4-7 at the
        # end of the second, the last two when the row reaches max_chars
        assert sizes == [1, 1, 1, 4, 4, 4, 4, 8, 8, 10]
        assert [len(piece) for piece in h.received[row]] == [1, 3, 4, 2]
        assert h.text(row) == reference(ckpt, "ab", 10, 5)[0]
        assert h.finish[row] == FinishReason.LENGTH
        assert len(h.decoder.rows) == 0
        assert h.counters.chars_generated == 10
    finally:
        h.close()


def test_stop_string_spanning_two_decodings_is_never_shown(ckpt: LoadedCheckpoint) -> None:
    """A stop string whose first character is decoded at the end of one block and the rest at
    the end of the next: the first is held back, then the text ends before the stop string."""
    params = SamplingParams(temperature=1.5)
    seed = next(s for s in range(200) if (t := reference(ckpt, "", 12, s, params)[0])
                and t.find(t[3:6]) == 3)  # fmt: skip
    full = reference(ckpt, "", 12, seed, params)[0]
    stop = full[3:6]
    assert reference(ckpt, "", 12, seed, params, (stop,)) == (full[:3], "stop")
    h = Harness(ckpt)
    try:
        row = h.add("", 12, seed=seed, params=params, stop=(stop,))
        h.step(4)  # the first block: characters 0-3 decoded, the 4th held back
        assert h.text(row) == full[:3]
        assert row not in h.finish
        h.step(4)  # the second block completes the stop string
        assert h.text(row) == full[:3]
        assert h.finish[row] == FinishReason.STOP
        assert all(stop[0] not in piece for piece in h.received[row][1:])
        assert h.requests[row].text.length == 3
    finally:
        h.close()


@pytest.mark.parametrize("stops", [("a",), ("h.", "\n"), ("abc", "bd", "c"), ("bcd", "abcde")])
def test_stop_strings_found_in_pieces_as_one_character_at_a_time(stops: tuple[str, ...]) -> None:
    """Any split of a text into pieces shows, after each piece, what a character-by-character
    reading shows after the same characters (so never part of a stop string), and ends at the
    same place."""
    rng = np.random.default_rng(0)
    letters = list("abcdeh.\n")
    for _ in range(300):
        text = "".join(rng.choice(letters, size=int(rng.integers(1, 30))))
        by_char = CompletionText(stops)
        shown_after = [0]  # characters shown after each character read
        for char in text:
            by_char.extend(char)
            shown_after.append(by_char.shown)
        cuts = sorted(set(rng.integers(0, len(text) + 1, size=int(rng.integers(0, 6))).tolist()))
        bounds = [0, *cuts, len(text)]
        in_pieces = CompletionText(stops)
        shown = ""
        for a, b in itertools.pairwise(bounds):
            shown += in_pieces.extend(text[a:b])
            assert len(shown) == in_pieces.shown == shown_after[b], (text, bounds)
            assert not any(stop in shown for stop in stops)
        assert (in_pieces.stopped, in_pieces.length) == (by_char.stopped, by_char.length)
        assert in_pieces.release() == by_char.release()


def test_finish_reasons(ckpt: LoadedCheckpoint) -> None:
    """length, stop, timeout (with the text so far), cancelled (nothing sent) and abort (the
    text so far), each for its own row, beside the others."""
    h = Harness(ckpt)
    try:
        full = reference(ckpt, "c", 30, 3)[0]
        stop = (full[6:8],)
        length = h.add("a", 7, seed=1)
        stopped = h.add("c", 30, seed=3, stop=stop)
        timed = h.add("b", 1000, seed=2, deadline=time.monotonic() + 0.2)
        cancelled = h.add("d", 1000, seed=4)
        aborted = h.add("e", 1000, seed=6)
        h.step(9)
        while time.monotonic() < h.requests[timed].deadline:
            time.sleep(0.01)
        h.requests[cancelled].cancelled = True  # as ``Scheduler.cancel`` does
        h.decoder.ended = True
        h.step()  # the timeout and the cancellation are noticed before drawing
        assert [r.seed for r in h.decoder.rows] == [6]
        h.decoder.end_all(None)
        h.collect()
        assert h.finish[length] == FinishReason.LENGTH
        assert h.text(length) == reference(ckpt, "a", 7, 1)[0]
        assert (h.text(stopped), h.finish[stopped]) == reference(ckpt, "c", 30, 3, stop=stop)
        assert h.finish[stopped] == "stop"
        assert h.finish[timed] == FinishReason.TIMEOUT
        timed_text = h.text(timed)
        assert 1 <= len(timed_text) <= 9  # fewer when the machine took 0.2 s for fewer steps
        assert timed_text == reference(ckpt, "b", len(timed_text), 2)[0]
        assert cancelled not in h.finish
        assert h.finish[aborted] == FinishReason.ABORT
        assert h.text(aborted) == reference(ckpt, "e", 10, 6)[0]
        finished = h.counters.finished
        assert dict(finished) == {"length": 1, "stop": 1, "timeout": 1, "cancelled": 1, "abort": 1}
        delivered = sum(len(h.text(n)) for n in range(5))
        assert h.counters.chars_generated == delivered
    finally:
        h.close()


def test_rows_joining_and_leaving_keep_their_state_and_seeds(ckpt: LoadedCheckpoint) -> None:
    """Rows join at different columns of a block and across block ends, others leave from the
    middle of the batch: every row gives the plain loop's text for its seed and settings."""
    h = Harness(ckpt)
    cases = {
        "a": ("ab", 25, 11, SamplingParams()),
        "b": ("", 6, 12, SamplingParams(temperature=0.0)),
        "c": ("hh", 40, 13, SamplingParams(temperature=0.7, top_k=3)),
        "d": ("c", 9, 14, SamplingParams(temperature=1.2, top_p=0.8)),
        "e": ("ga", 30, 15, SamplingParams()),
        "f": ("a", 1, 16, SamplingParams()),
    }
    rows: dict[str, int] = {}
    try:
        rows["a"] = h.add(*cases["a"][:3], params=cases["a"][3])
        rows["b"] = h.add(*cases["b"][:3], params=cases["b"][3])
        h.step(2)
        rows["c"] = h.add(*cases["c"][:3], params=cases["c"][3])  # joins at column 2
        h.step(3)  # across a block end
        rows["d"] = h.add(*cases["d"][:3], params=cases["d"][3])  # column 1 of block 2
        h.step(1)  # "b" leaves (length) from the middle of the batch
        rows["e"] = h.add(*cases["e"][:3], params=cases["e"][3])
        rows["f"] = h.add(*cases["f"][:3], params=cases["f"][3])  # one character: ends at once
        for _ in range(60):
            if not h.decoder.rows:
                break
            batch = h.decoder.batch
            assert len(batch.seeds) == len(batch.rows) == batch.ids.shape[0]
            assert batch.uniforms.shape == (BLOCK, len(batch.rows))
            assert [r.seed for r in batch.rows] == batch.seeds.tolist()
            h.step()
        assert not h.decoder.rows
        for name, (prompt, max_chars, seed, params) in cases.items():
            assert h.finish[rows[name]] == FinishReason.LENGTH, name
            assert h.text(rows[name]) == reference(ckpt, prompt, max_chars, seed, params)[0], name
    finally:
        h.close()
