"""Scoring loads for ``bench.serve``: texts sent one per request by httpx clients and by the
hand-written client, and all in one request; characters/s as the client sees them."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from bench.raw_http import RawConnection
from bench.serve_load import NO_ANSWER, Clients, LevelResult


async def score_level(
    clients: Clients, model: str, concurrency: int, per_worker: int, texts: list[str]
) -> LevelResult:
    """``concurrency`` workers each scoring ``per_worker`` single texts (picked in turn)."""
    result = LevelResult("score", concurrency)

    async def worker(w: int) -> None:
        client = clients[w]
        for i in range(per_worker):
            text = texts[(w * per_worker + i) % len(texts)]
            start = time.perf_counter()
            try:
                response = await client.post("/v1/score", json={"model": model, "texts": [text]})
            except httpx.HTTPError:
                result.statuses[NO_ANSWER] += 1
                continue
            result.statuses[response.status_code] += 1
            if response.status_code == 200:
                result.ok += 1
                result.chars += response.json()["results"][0]["num_chars"]
                result.latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


async def score_one_request(clients: Clients, model: str, texts: list[str]) -> float:
    """Characters/s of one ``POST /v1/score`` carrying all of ``texts``."""
    start = time.perf_counter()
    response = await clients[0].post("/v1/score", json={"model": model, "texts": texts})
    response.raise_for_status()
    chars = sum(r["num_chars"] for r in response.json()["results"])
    return chars / (time.perf_counter() - start)


async def score_raw(
    connections: list[RawConnection], model: str, texts: list[str], rounds: int = 1
) -> float:
    """Characters/s of ``texts`` scored one per request, each on its own kept-alive connection of
    the hand-written client (``bench.raw_http``). With ``rounds`` 1, one burst: every request is
    sent at once. With more, a closed loop: each connection sends its next request when the
    previous one has answered, ``rounds`` in all, as that many clients scoring texts one after
    another do."""

    async def client(connection: RawConnection, text: str) -> int:
        chars = 0
        for _ in range(rounds):
            status, body = await connection.post_json(
                "/v1/score", {"model": model, "texts": [text]}
            )
            if status != 200:
                raise RuntimeError(f"/v1/score answered {status}: {body[:200]!r}")
            chars += int(json.loads(body)["results"][0]["num_chars"])
        return chars

    start = time.perf_counter()
    chars = await asyncio.gather(*(client(c, t) for c, t in zip(connections, texts, strict=True)))
    return sum(chars) / (time.perf_counter() - start)
