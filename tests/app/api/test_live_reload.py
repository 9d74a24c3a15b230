"""A real ``charlm-serve``: a checkpoint replaced while a long stream runs on the old version,
and the stop signal's drain as a load balancer sees it."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import LiveServer, start_server, stop_server, write_random_checkpoint

KEY = "live-reload-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DEADLINE_S = 60.0
CHARS = 20_000  # the stream's length: it has begun before the swap, whatever the machine's speed


def events(lines: Any) -> Any:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line.removeprefix("data: "))


def model_card(client: httpx.Client, model_id: str) -> dict[str, Any]:
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    return dict(cards[model_id])


def test_a_stream_on_the_old_version_ends_whole_while_the_new_one_serves(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "m.safetensors"
    old_sha = write_random_checkpoint(path, "abc")
    server = start_server(
        folder,
        tmp_path / "server.log",
        CHARLM_API_KEYS=KEY,
        CHARLM_RELOAD_INTERVAL_S="0",
        CHARLM_MAX_NEW_CHARS=str(CHARS),
        # without its request's hold, the old version would end the stream at once ("abort")
        CHARLM_SHUTDOWN_GRACE_S="0",
    )
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
            body = {"model": "m", "prompt": "ab", "max_chars": CHARS, "seed": 1, "stream": True}
            with client.stream("POST", "/v1/generate", json=body) as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                first = next(events(lines))
                # the stream has begun on the old version: replace the file under it
                new_sha = write_random_checkpoint(path, "abcdefgh", seed=1)
                reload = client.post("/v1/models/reload")
                assert reload.status_code == 200
                assert reload.json()["changes"] == [
                    {"id": "m", "change": "replaced", "sha256": new_sha, "error": None}
                ]
                # a new request gets the new version: "h" is in its alphabet only
                scored = client.post("/v1/score", json={"model": "m", "texts": ["defgh"]})
                assert scored.json()["results"][0]["num_unknown"] == 0
                assert model_card(client, "m")["sha256"] == new_sha
                rest = list(events(lines))
            text = first.get("text", "") + "".join(e.get("text", "") for e in rest)
            finished = [e for e in rest if e.get("finish_reason")]
            assert [e["finish_reason"] for e in finished] == ["length"]
            assert len(text) == CHARS and set(text) <= set("abc"), "not the old version's text"
            assert rest[-1]["usage"]["completion_chars"] == CHARS
            # the stream is over: the old version stops
            deadline = time.monotonic() + DEADLINE_S
            while model_card(client, "m")["draining"]:
                assert time.monotonic() < deadline, "the old version never stopped"
                time.sleep(0.05)
        assert f"the old version (sha256 {old_sha}) is stopped" in server.log()
    finally:
        stop_server(server)


def test_on_sigterm_ready_says_draining_before_the_listener_closes(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    write_random_checkpoint(folder / "m.safetensors", "abc")
    server: LiveServer = start_server(
        folder, tmp_path / "server.log", CHARLM_SHUTDOWN_DELAY_S="120"
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/ready").status_code == 200
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + DEADLINE_S
            while (ready := client.get("/ready")).status_code == 200:
                assert time.monotonic() < deadline, "/ready never said draining"
                time.sleep(0.05)
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "draining"
            assert ready.headers["connection"] == "close"
            # requests are still served meanwhile, each on a connection that then closes
            scored = client.post("/v1/score", json={"texts": ["cab"]})
            assert scored.status_code == 200 and scored.headers["connection"] == "close"
        # a second signal ends the delay: the server stops
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=DEADLINE_S)
        assert "Application shutdown complete" in server.log()
    finally:
        stop_server(server)
