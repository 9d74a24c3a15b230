"""The clients of ``bench.soak``: closed-loop async httpx loops drawing requests from a mix, and
the tally of what came back.

Each loop sends its next request when the previous one has ended, drawn from:

- scoring (1 to 4 texts of 20 to 400 characters, sometimes per character with alternatives),
- generation, whole (20 to 200 characters, random sampling settings and stop strings),
- generation streamed and read to ``[DONE]`` (every event parsed as JSON),
- generation streamed and dropped after a few events (a client that disconnects),
- OpenAI completions (sometimes scoring by ``echo`` + ``logprobs`` + ``max_tokens: 0``).

A loop that gets 429 waits 20 to 200 ms before its next request (a client that backs off
briefly; honouring ``Retry-After`` to the second would take the load below capacity).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from typing import Any

import httpx

from tests.support import make_corpus

KINDS = ("score", "generate", "stream", "disconnect", "completions")
WEIGHTS = (30, 20, 20, 15, 15)
CORPUS = make_corpus(400)


class Tally:
    """Statuses, latencies and broken answers, by request kind."""

    def __init__(self) -> None:
        self.status: dict[str, Counter[str]] = defaultdict(Counter)
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.broken: list[str] = []

    def add(self, kind: str, status: str, seconds: float) -> None:
        self.status[kind][status] += 1
        if status.startswith("2"):
            self.latency[kind].append(seconds)

    def total(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for counts in self.status.values():
            out.update(counts)
        return out


def text_piece(rng: random.Random, low: int, high: int) -> str:
    start = rng.randrange(0, len(CORPUS) - high)
    piece = CORPUS[start : start + rng.randint(low, high)]
    if rng.random() < 0.2:  # characters the model has never seen
        piece += rng.choice(["é", "日本", "🙂", "\u0301", "\x00", "שלום"])
    return piece


def sampling(rng: random.Random) -> dict[str, Any]:
    return {
        "temperature": rng.choice([0.0, 0.5, 1.0, 1.5]),
        "top_k": rng.choice([0, 0, 5]),
        "top_p": rng.choice([1.0, 0.9]),
        "seed": rng.randrange(1_000_000),
    }


def request_for(kind: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    if kind == "score":
        per_char = rng.random() < 0.3
        body: dict[str, Any] = {
            "texts": [text_piece(rng, 20, 400) for _ in range(rng.randint(1, 4))],
            "per_char": per_char,
            "top_k": 3 if per_char else 0,
        }
        if rng.random() < 0.3:
            body["context"] = text_piece(rng, 5, 50)
        return "/v1/score", body
    if kind == "completions":
        if rng.random() < 0.3:
            prompt = text_piece(rng, 20, 200)
            return "/v1/completions", {
                "prompt": prompt,
                "echo": True,
                "logprobs": 2,
                "max_tokens": 0,
            }
        return "/v1/completions", {
            "prompt": text_piece(rng, 0, 40),
            "max_tokens": rng.randint(10, 120),
            "n": rng.choice([1, 1, 2]),
            "stop": rng.choice([None, "\n", ["."]]),
            **sampling(rng),
        }
    body = {
        "prompt": text_piece(rng, 0, 60),
        "max_chars": rng.randint(20, 200),
        "n": rng.choice([1, 1, 1, 2]),
        "stop": rng.choice([[], [], ["\n"], [".", "xyz"]]),
        "stream": kind in ("stream", "disconnect"),
        **sampling(rng),
    }
    return "/v1/generate", body


async def read_stream(response: httpx.Response, kind: str, rng: random.Random) -> str | None:
    """Parse the events; ``None`` when the stream was whole, else what was wrong with it."""
    keep = rng.randint(1, 3) if kind == "disconnect" else None
    events = 0
    buffer = ""
    async for piece in response.aiter_text():
        buffer += piece
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            if not event.startswith("data: "):
                return f"not an SSE data line: {event[:80]!r}"
            data = event[len("data: ") :]
            if data == "[DONE]":
                return None if buffer == "" else "bytes after [DONE]"
            try:
                payload = json.loads(data)
            except json.JSONDecodeError:
                return f"partial JSON in an event: {data[:80]!r}"
            if "error" in payload:
                return f"error event: {payload['error']}"
            events += 1
            if keep is not None and events >= keep:
                return None  # leave: closing the response drops the connection
    return "stream ended without [DONE]" if keep is None else None


async def one_request(
    client: httpx.AsyncClient, kind: str, rng: random.Random, tally: Tally
) -> int:
    path, body = request_for(kind, rng)
    start = time.perf_counter()
    status = 0
    problem: str | None = None
    try:
        async with client.stream("POST", path, json=body) as response:
            status = response.status_code
            if status == 200 and body.get("stream"):
                problem = await read_stream(response, kind, rng)
            else:
                raw = await response.aread()
                try:
                    json.loads(raw)
                except json.JSONDecodeError:
                    problem = f"{status} answer is not JSON: {raw[:80]!r}"
    except httpx.HTTPError as exc:
        tally.add(kind, f"transport:{type(exc).__name__}", time.perf_counter() - start)
        tally.broken.append(f"{kind}: {type(exc).__name__}: {exc}")
        return 0
    tally.add(kind, str(status), time.perf_counter() - start)
    if problem is not None:
        tally.broken.append(f"{kind}: {problem}")
    return status


async def client_loop(
    client: httpx.AsyncClient, seed: int, until: float, tally: Tally, stop: asyncio.Event
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until and not stop.is_set():
        kind = rng.choices(KINDS, WEIGHTS)[0]
        status = await one_request(client, kind, rng, tally)
        if status == 429:
            await asyncio.sleep(rng.uniform(0.02, 0.2))
