"""The engine's limits and shutdown seen through a real uvicorn process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.support import start_server, stop_server


async def _data_events(lines: AsyncIterator[str]) -> AsyncIterator[Any]:
    async for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            yield payload if payload == "[DONE]" else json.loads(payload)


async def _queue_depth(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("charlm_engine_queue_depth{"):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def test_queue_full_gives_429_and_sigterm_ends_open_stream_with_final_event(
    models_dir: Path, tmp_path: Path
) -> None:
    server = start_server(
        models_dir,
        tmp_path / "server.log",
        CHARLM_MAX_BATCH_SIZE="1",
        CHARLM_MAX_QUEUE="1",
        CHARLM_SHUTDOWN_GRACE_S="1",
        CHARLM_MAX_NEW_CHARS="1000000",
    )
    long_request = {"prompt": "alpha", "max_chars": 1_000_000, "stream": True, "seed": 3}

    async def scenario() -> None:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as client,
            client.stream("POST", "/v1/generate", json=long_request) as stream,
        ):
            assert stream.status_code == 200
            events = _data_events(stream.aiter_lines())
            first = await anext(events)
            assert first["text"]  # the only row is taken
            queued = asyncio.create_task(
                client.post("/v1/generate", json={"prompt": "b", "max_chars": 5})
            )
            deadline = time.monotonic() + 10
            while await _queue_depth(client) < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            start = time.perf_counter()
            refused = await client.post("/v1/score", json={"texts": ["alpha"]})
            assert time.perf_counter() - start < 1.0
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["code"] == "queue_full"
            metrics = (await client.get("/metrics")).text
            assert (
                'charlm_engine_rejected_requests_total{model="tiny",reason="queue_full"} 1.0'
                in (metrics)
            )
            assert 'charlm_engine_time_to_first_char_seconds_count{model="tiny"} 1.0' in metrics
            assert 'charlm_engine_running_rows{model="tiny"} 1.0' in metrics

            server.process.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            rest = [event async for event in events]
            assert rest[-1] == "[DONE]"
            finals = [e for e in rest[:-1] if e.get("finish_reason")]
            assert [e["finish_reason"] for e in finals] == ["abort"]
            assert time.monotonic() - sent < 5  # the grace period (1 s), not the whole stream
            never_started = await queued
            assert never_started.status_code == 503
            assert never_started.json()["error"]["code"] == "engine_closed"

    try:
        asyncio.run(scenario())
        server.process.wait(timeout=15)
        assert "timeout graceful shutdown exceeded" not in server.log()  # nothing was cut off
    finally:
        stop_server(server)
