"""A real ``charlm-serve`` process on 127.0.0.1: the official openai client, SSE over HTTP,
client disconnects, logs with request ids."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO, LiveServer, start_server, stop_server

#: characters asked of the disconnect tests: seconds of work, far beyond their client timeouts
LONG = 200_000


def openai_client(server: LiveServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_openai_client_completes(live_server: LiveServer) -> None:
    client = openai_client(live_server)
    result = client.completions.create(
        model="tiny", prompt="alpha ", max_tokens=12, temperature=0, seed=3
    )
    assert result.object == "text_completion"
    assert len(result.choices[0].text) == 12
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 12
    direct = httpx.post(
        live_server.url + "/v1/generate",
        json={"prompt": "alpha ", "max_chars": 12, "temperature": 0},
        timeout=60,
    ).json()
    assert result.choices[0].text == direct["completions"][0]["text"]


def test_openai_client_streams(live_server: LiveServer) -> None:
    client = openai_client(live_server)
    stream = client.completions.create(
        model="tiny", prompt="beta ", max_tokens=30, temperature=0, stream=True
    )
    pieces = []
    finish = None
    for chunk in stream:
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    assert len("".join(pieces)) == 30 and finish == "length"


def test_openai_client_receives_text_before_the_completion_ends(live_server: LiveServer) -> None:
    """Streaming, shown without timing: of a completion far longer than any first chunk, two
    chunks of text arrive while it is still running (a reply sent whole would arrive ended)."""
    client = openai_client(live_server)
    stream = client.completions.create(model="tiny", prompt="beta ", max_tokens=LONG, stream=True)
    try:
        chunks = iter(stream)
        for _ in range(2):
            choice = next(chunks).choices[0]
            assert choice.text and choice.finish_reason is None
    finally:
        stream.close()
    wait_until_idle(live_server)  # the client left: its completion is cancelled


def test_openai_client_scores_with_echo(live_server: LiveServer) -> None:
    client = openai_client(live_server)
    text = "delta 5 atled."
    result = client.completions.create(
        model="tiny", prompt=text, max_tokens=0, echo=True, logprobs=2
    )
    logprobs = result.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens == list(text)
    assert logprobs.token_logprobs is not None and logprobs.top_logprobs is not None
    assert all(len(top) == 2 for top in logprobs.top_logprobs)
    scored = httpx.post(live_server.url + "/v1/score", json={"texts": [text]}, timeout=60).json()
    total = scored["results"][0]["logprob"]
    assert math.isclose(sum(logprobs.token_logprobs), total, abs_tol=1e-5)


def test_openai_client_lists_models_and_sees_errors(live_server: LiveServer) -> None:
    client = openai_client(live_server)
    ids = {m.id for m in client.models.list()}
    assert {"tiny", "broken"} <= ids
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="absent", prompt="a", max_tokens=1)
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="tiny", prompt="a", max_tokens=1, temperature=50)


def read_events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def test_generate_streams_over_http(live_server: LiveServer) -> None:
    body = {"prompt": "gamma ", "max_chars": 40, "temperature": 0, "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/generate", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-2]]
    assert sum(len(c["text"]) for c in chunks) == 40
    assert chunks[-1]["finish_reason"] == "length"
    assert json.loads(events[-2])["usage"]["completion_chars"] == 40


def test_generate_sends_text_before_the_completion_ends(live_server: LiveServer) -> None:
    """The first events of a long completion carry text and no finish reason: they left the
    server while it was still generating, whatever the machine's speed."""
    body = {"prompt": "gamma ", "max_chars": LONG, "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/generate", json=body, timeout=30) as response:
        assert response.status_code == 200
        lines = (line for line in response.iter_lines() if line.startswith("data: "))
        for _ in range(2):
            event = json.loads(next(lines)[len("data: ") :])
            assert event["text"] and "finish_reason" not in event
    wait_until_idle(live_server)


def wait_until_idle(server: LiveServer) -> None:
    """Wait for the server to generate nothing (a cancelled completion leaves within steps)."""
    deadline = time.monotonic() + 30
    while engine_metrics(server)["charlm_generations_active"] != 0:
        assert time.monotonic() < deadline, "a completion kept running after its client left"
        time.sleep(0.05)


def engine_metrics(server: LiveServer) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") == "tiny":
                values[sample.name] = float(sample.value)
    return values


def test_disconnect_stops_generation(live_server: LiveServer) -> None:
    body = {"prompt": "a", "max_chars": LONG, "temperature": 1.0, "stream": True}
    payload = json.dumps(body).encode()
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        received = b""
        while received.count(b"data: ") < 5:
            received += sock.recv(4096)
        running = engine_metrics(live_server)
        assert running["charlm_generations_active"] == 1
    # the socket is closed: the generation must end well before its LONG characters
    deadline = time.monotonic() + 30
    while engine_metrics(live_server)["charlm_generations_active"] != 0:
        assert time.monotonic() < deadline, "generation kept running after the disconnect"
        time.sleep(0.05)
    settled = engine_metrics(live_server)["charlm_chars_generated_total"]
    time.sleep(0.3)
    assert engine_metrics(live_server)["charlm_chars_generated_total"] == settled
    assert settled - running["charlm_chars_generated_total"] < LONG // 2


def test_logs_carry_the_request_id(live_server: LiveServer) -> None:
    response = httpx.get(
        live_server.url + "/v1/models/tiny", headers={"X-Request-ID": "live-7"}, timeout=30
    )
    assert response.headers["x-request-id"] == "live-7"
    deadline = time.monotonic() + 20
    while "[live-7] GET /v1/models/tiny 200" not in live_server.log():
        assert time.monotonic() < deadline, live_server.log()[-2000:]
        time.sleep(0.05)


def test_api_key_and_workers_from_the_environment(models_dir: Path, tmp_path: Path) -> None:
    server = start_server(
        models_dir, tmp_path / "server.log", CHARLM_API_KEYS="k-one", CHARLM_WORKERS="2"
    )
    try:
        client = openai_client(server, key="k-one")
        assert client.completions.create(model="tiny", prompt="a", max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            openai_client(server, key="k-two").models.list()
        assert httpx.get(server.url + "/health", timeout=30).status_code == 200
        assert "k-one" not in server.log()
        deadline = time.monotonic() + 60
        while server.log().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, server.log()[-2000:]
            time.sleep(0.1)
    finally:
        stop_server(server)


def test_charlm_serve_rejects_bad_settings(models_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "--models-dir", str(models_dir), "--max-queue", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr and "max_queue" in result.stderr


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/generate", {"prompt": "b", "max_chars": LONG, "n": 16}),
        ("/v1/completions", {"prompt": ["b", "c"], "max_tokens": LONG, "n": 8}),
    ],
)
def test_disconnect_cancels_a_whole_reply_generation(
    live_server: LiveServer, path: str, body: dict[str, object]
) -> None:
    """Without streaming too, a client that gives up stops the work done for it."""
    before = engine_metrics(live_server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(live_server.url + path, json=body, timeout=1.0)
    deadline = time.monotonic() + 30
    while engine_metrics(live_server)["charlm_generations_active"] != 0:
        assert time.monotonic() < deadline, "generation kept running after the client left"
        time.sleep(0.05)
    generated = engine_metrics(live_server)["charlm_chars_generated_total"]
    assert generated - before.get("charlm_chars_generated_total", 0) < 16 * LONG
    deadline = time.monotonic() + 20
    while f"POST {path} 499" not in live_server.log():
        assert time.monotonic() < deadline, live_server.log()[-2000:]
        time.sleep(0.05)
