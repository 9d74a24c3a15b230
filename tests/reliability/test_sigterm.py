"""SIGTERM under load: every in-flight request ends whole (a complete JSON answer, or a stream
whose completions all carry a finish reason, then ``[DONE]``), never as partial JSON; the
server exits within its grace period."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.conftest import ModelsFolder
from tests.support import start_server

GRACE_S = 1.0
# characters: at a microsecond per character (far faster than any decode step) still 10 s, so no
# engine finishes these within the grace period, however fast the machine
LONG = 10_000_000


async def stream(client: httpx.AsyncClient, started: asyncio.Event, n: int) -> dict[str, Any]:
    body = {"prompt": "alpha", "max_chars": LONG, "n": n, "stream": True, "seed": 1}
    events: list[dict[str, Any]] = []
    done = False
    async with client.stream("POST", "/v1/generate", json=body) as response:
        if response.status_code != 200:  # refused whole: it never started before the drain
            error = json.loads(await response.aread())["error"]
            return {
                "kind": "/v1/generate",
                "status": response.status_code,
                "json": {"error": error},
            }
        buffer = ""
        async for piece in response.aiter_text():
            buffer += piece
            while "\n\n" in buffer:
                frame, buffer = buffer.split("\n\n", 1)
                assert frame.startswith("data: "), frame
                data = frame.removeprefix("data: ")
                if data == "[DONE]":
                    done = True
                    assert buffer == ""
                    continue
                events.append(json.loads(data))  # raises on partial JSON
                started.set()
    return {"kind": "stream", "n": n, "events": events, "done": done}


async def whole(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    return {"kind": path, "status": response.status_code, "json": response.json()}


def check_stream(result: dict[str, Any]) -> set[str]:
    assert result["done"], "stream ended without [DONE]"
    events = result["events"]
    finishes = {e["index"]: e["finish_reason"] for e in events if e.get("finish_reason")}
    assert sorted(finishes) == list(range(result["n"])), events[-3:]
    assert "usage" in events[-1]
    return set(finishes.values())


def test_sigterm_under_load_ends_every_request_whole(
    models_folder: ModelsFolder, tmp_path: Path
) -> None:
    server = start_server(
        models_folder.path,
        tmp_path / "server.log",
        CHARLM_DEFAULT_MODEL="tiny",
        CHARLM_SHUTDOWN_GRACE_S=str(GRACE_S),
        CHARLM_MAX_BATCH_SIZE="8",
        CHARLM_MAX_NEW_CHARS=str(LONG),
    )

    async def load() -> tuple[list[Any], float]:
        started = asyncio.Event()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            tasks = [asyncio.create_task(stream(client, started, n)) for n in (1, 2, 1, 3)]
            tasks += [
                asyncio.create_task(
                    whole(client, "/v1/generate", {"max_chars": LONG, "n": 2, "seed": 2})
                ),
                asyncio.create_task(
                    whole(client, "/v1/completions", {"prompt": "beta", "max_tokens": LONG})
                ),
                asyncio.create_task(
                    whole(client, "/v1/score", {"texts": ["gamma 1 ammag.\n" * 200] * 8})
                ),
            ]
            await asyncio.wait_for(started.wait(), 60)
            await asyncio.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            return results, signalled

    try:
        results, signalled = asyncio.run(load())
        code = server.process.wait(timeout=GRACE_S + 20)
        exited_after = time.monotonic() - signalled
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    reasons: set[str] = set()
    for result in results:
        if result["kind"] == "stream":
            reasons |= check_stream(result)
        elif result["status"] == 200:
            body = result["json"]
            items = body.get("completions") or body.get("choices") or body.get("results")
            assert items, body
        else:  # refused whole: the engine was already closed to it
            assert result["status"] == 503, result
            assert result["json"]["error"]["code"] == "engine_closed"
    assert "abort" in reasons, "no stream outlived the grace period: the test proved nothing"
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert exited_after < GRACE_S + 15
    assert "Traceback" not in server.log()
