"""Mixed closed-loop load for ``bench.scale``: scoring, whole generations and streams.

Each client sends its next request when the previous one has ended, until the deadline. Every
request ends as exactly one of:

- ``ok``: 200 and a whole answer (a stream ends with ``[DONE]``);
- ``failed``: any other status, no answer at all, an answer that is not whole JSON, or an error
  event in a stream;
- ``cut``: a stream that had begun (200 and events) whose connection broke before ``[DONE]``:
  the replica serving it died. A balancer cannot move a reply that has begun;
- ``aborted``: a stream the server ended early with ``finish_reason: "abort"`` (a replica that
  stopped with the stream still running past its grace period).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from bench.scale_stack import WORDS

KINDS = ("score", "generate", "stream")
WEIGHTS = (0.5, 0.25, 0.25)
REPLICA_HEADER = "x-charlm-replica-address"


@dataclass
class Outcome:
    kind: str
    result: str  # ok, failed, cut, aborted
    replica: str  # the balancer's X-Charlm-Replica-Address ("" when there was no answer)
    started: float  # time.monotonic() when sent
    seconds: float
    detail: str = ""  # for failures: status and error code, or the transport error


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, kind: str | None = None, result: str | None = None) -> int:
        return sum(
            1
            for o in self.outcomes
            if (kind is None or o.kind == kind) and (result is None or o.result == result)
        )

    def failures(self) -> Counter[str]:
        return Counter(f"{o.kind}: {o.detail}" for o in self.outcomes if o.result == "failed")

    def served_by(self) -> Counter[str]:
        return Counter(o.replica for o in self.outcomes if o.replica and o.result == "ok")


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:chars]


def _payload(kind: str, model: str, rng: random.Random) -> dict[str, object]:
    if kind == "score":
        texts = [_text(rng, rng.randint(20, 200)) for _ in range(rng.randint(1, 2))]
        return {"model": model, "texts": texts}
    chars = rng.randint(32, 128) if kind == "generate" else rng.randint(64, 256)
    return {
        "model": model,
        "prompt": _text(rng, rng.randint(1, 20)),
        "max_chars": chars,
        "temperature": 0.8,
        "stream": kind == "stream",
    }


def _error_detail(response: httpx.Response) -> str:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "?"
    return f"{response.status_code} {code}"


async def _stream(client: httpx.AsyncClient, payload: dict[str, object]) -> tuple[str, str, str]:
    """(result, replica, detail) of one streamed generation."""
    async with client.stream("POST", "/v1/generate", json=payload) as response:
        replica = response.headers.get(REPLICA_HEADER, "")
        if response.status_code != 200:
            await response.aread()
            return "failed", replica, _error_detail(response)
        aborted = False
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    return ("aborted" if aborted else "ok"), replica, ""
                event = json.loads(data)
                if "error" in event:
                    return "failed", replica, f"error event {event['error'].get('code')}"
                aborted = aborted or event.get("finish_reason") == "abort"
        except httpx.TransportError as exc:
            return "cut", replica, type(exc).__name__
        return "cut", replica, "ended without [DONE]"


async def _one(
    client: httpx.AsyncClient, kind: str, payload: dict[str, object]
) -> tuple[str, str, str]:
    if kind == "stream":
        return await _stream(client, payload)
    path = "/v1/score" if kind == "score" else "/v1/generate"
    response = await client.post(path, json=payload)
    replica = response.headers.get(REPLICA_HEADER, "")
    if response.status_code != 200:
        return "failed", replica, _error_detail(response)
    body = response.json()  # a half answer raises here
    whole = "results" in body if kind == "score" else "completions" in body
    return ("ok" if whole else "failed"), replica, "" if whole else "answer without results"


async def _client_loop(
    url: str, model: str, seed: int, stop_at: Callable[[], float], result: LoadResult
) -> None:
    rng = random.Random(seed)
    # idle connections are dropped before the balancer's 4 s keep-alive closes them under us
    limits = httpx.Limits(max_connections=1, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        while time.monotonic() < stop_at():
            kind = rng.choices(KINDS, WEIGHTS)[0]
            payload = _payload(kind, model, rng)
            started = time.monotonic()
            try:
                outcome, replica, detail = await _one(client, kind, payload)
            except (httpx.HTTPError, ValueError) as exc:
                outcome, replica, detail = "failed", "", f"no answer: {type(exc).__name__}"
            seconds = time.monotonic() - started
            result.outcomes.append(Outcome(kind, outcome, replica, started, seconds, detail))


async def run_load(
    url: str, model: str, clients: int, stop_at: Callable[[], float], seed: int
) -> LoadResult:
    """``clients`` closed loops against ``url`` until ``time.monotonic()`` passes ``stop_at()``
    (asked before each request, so a phase can end when something else has finished); requests
    still running then are waited for."""
    result = LoadResult()
    loops = [_client_loop(url, model, seed * 1000 + i, stop_at, result) for i in range(clients)]
    await asyncio.gather(*loops)
    return result
