"""Early refusal under overload, through a real uvicorn process on 127.0.0.1: a burst beyond the
engine's capacity gets its 429s at once, before the admitted requests are processed."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx

from app.api.middleware import holding, release_current
from app.engine.reservations import Reservations
from tests.support import start_server, stop_server


def test_reservations_are_released_once() -> None:
    reservations = Reservations()
    first, second = reservations.hold(), reservations.hold()
    assert reservations.held == 2
    with holding(first):
        release_current()  # an engine took the request
        release_current()
        assert reservations.held == 1
    second.release()
    second.release()
    assert reservations.held == 0
    release_current()  # outside a request: nothing to release


async def _request(
    port: int, body: bytes, go: asyncio.Event, replies: list[tuple[float, int, str]]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await go.wait()
        writer.write(
            b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split()[1])
        headers = dict(line.lower().split(": ", 1) for line in head.split("\r\n")[1:] if line)
        retry = headers.get("retry-after", "")
        replies.append((time.monotonic(), status, retry))
        await reader.read()
    finally:
        writer.close()


def test_burst_beyond_capacity_is_refused_first(models_dir: Path, tmp_path: Path) -> None:
    """Capacity 2 (one row, one queue place): of 12 requests sent at once, 2 run and 10 get a
    429 with ``Retry-After``, all at the edge (before their bodies are parsed: the requests let
    through hold their places until the engine has them) and before either admitted request has
    finished."""
    server = start_server(
        models_dir, tmp_path / "server.log", CHARLM_MAX_BATCH_SIZE="1", CHARLM_MAX_QUEUE="1"
    )

    async def scenario() -> tuple[list[tuple[float, int, str]], str]:
        replies: list[tuple[float, int, str]] = []
        go = asyncio.Event()
        tasks = [
            asyncio.create_task(
                _request(
                    server.port,
                    json.dumps({"prompt": "a", "max_chars": 2000, "seed": i}).encode(),
                    go,
                    replies,
                )
            )
            for i in range(12)
        ]
        await asyncio.sleep(0.3)  # connections open
        go.set()
        await asyncio.gather(*tasks)
        async with httpx.AsyncClient(base_url=server.url) as client:
            metrics = (await client.get("/metrics")).text
        return replies, metrics

    try:
        replies, metrics = asyncio.run(scenario())
    finally:
        stop_server(server)
    statuses = Counter(status for _, status, _ in replies)
    assert statuses == {200: 2, 429: 10}
    assert all(int(retry) >= 1 for _, status, retry in replies if status == 429)
    last_refusal = max(t for t, status, _ in replies if status == 429)
    first_success = min(t for t, status, _ in replies if status == 200)
    assert last_refusal < first_success
    edge = 'charlm_requests_total{method="POST",route="unmatched",status="429"} 10.0'
    assert edge in metrics
