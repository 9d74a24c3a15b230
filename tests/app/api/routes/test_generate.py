"""POST /v1/generate: greedy path, seeds, stop strings, n, SSE framing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.sampling import SamplingParams, generate
from models.vocab import BOS_ID, UNK_ID


def gen(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def argmax_path(checkpoint: Path, prompt: str, steps: int) -> str:
    """Greedy decoding written out by hand: read <bos> + prompt, then take the argmax."""
    ckpt = load_checkpoint(checkpoint)
    model, vocab = ckpt.model, ckpt.vocab
    with torch.inference_mode():
        ids = torch.tensor([[BOS_ID, *vocab.encode(prompt)]])
        logits, state = model(ids, model.initial_state(1))
        out = ""
        for _ in range(steps):
            last = logits[0, -1].clone()
            last[[UNK_ID, BOS_ID]] = float("-inf")
            nxt = int(last.argmax())
            out += vocab.token(nxt)
            logits, state = model(torch.tensor([[nxt]]), state)
    return out


def test_greedy_generation_is_the_argmax_path(client: Any, tiny_checkpoint: Path) -> None:
    body = gen(client, prompt="beta ", max_chars=40, temperature=0)
    completion = body["completions"][0]
    assert completion["text"] == argmax_path(tiny_checkpoint, "beta ", 40)
    assert completion["finish_reason"] == "length"
    assert completion["num_chars"] == 40
    assert body["usage"] == {"prompt_chars": 5, "completion_chars": 40, "total_chars": 45}


def test_empty_prompt_starts_from_bos(client: Any, tiny_checkpoint: Path) -> None:
    text = gen(client, prompt="", max_chars=20, temperature=0)["completions"][0]["text"]
    assert text == argmax_path(tiny_checkpoint, "", 20)


def test_same_seed_same_text_and_matches_models_sampling(
    client: Any, tiny_checkpoint: Path
) -> None:
    request = {"prompt": "gam", "max_chars": 60, "temperature": 0.9, "top_k": 8, "seed": 1234}
    first = gen(client, n=3, **request)["completions"]
    again = gen(client, n=3, **request)["completions"]
    assert [c["text"] for c in first] == [c["text"] for c in again]
    assert [c["seed"] for c in first] == [1234, 1235, 1236]
    assert len({c["text"] for c in first}) > 1  # different seeds, different samples
    ckpt = load_checkpoint(tiny_checkpoint)
    params = SamplingParams(temperature=0.9, top_k=8)
    local = generate(ckpt.model, ckpt.vocab, "gam", 60, params, seed=1234, n=3)
    assert [c["text"] for c in first] == [g.text for g in local]


def test_without_seed_the_reported_seed_reproduces(client: Any) -> None:
    first = gen(client, prompt="a", max_chars=30)["completions"][0]
    again = gen(client, prompt="a", max_chars=30, seed=first["seed"])["completions"][0]
    assert again["text"] == first["text"]


def test_stop_string_is_excluded_and_reported(client: Any, tiny_checkpoint: Path) -> None:
    full = argmax_path(tiny_checkpoint, "delta ", 30)
    stop = full[4:7]  # a string the greedy text is known to contain
    cut = full.index(stop)
    completion = gen(client, prompt="delta ", max_chars=30, temperature=0, stop=[stop, "zzzz"])[
        "completions"
    ][0]
    assert completion == {**completion, "text": full[:cut], "finish_reason": "stop"}
    assert completion["num_chars"] == cut


def test_zero_chars_gives_an_empty_completion(client: Any) -> None:
    completion = gen(client, prompt="a", max_chars=0)["completions"][0]
    assert completion["text"] == "" and completion["finish_reason"] == "length"


def parse_sse(raw: str) -> list[Any]:
    """Strict SSE framing: events are ``data: <payload>`` separated by blank lines."""
    assert raw.endswith("\n\n"), raw[-50:]
    events = []
    for block in raw[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_stream_frames_events_and_matches_the_whole_reply(client: Any) -> None:
    request = {"prompt": "alpha ", "max_chars": 50, "temperature": 0, "n": 2}
    whole = gen(client, **request)
    with client.stream("POST", "/v1/generate", json={**request, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())
    events = parse_sse(raw)
    assert events[-1] == "[DONE]"
    end = events[-2]
    assert end == {"model": "tiny", "usage": whole["usage"]}
    texts = ["", ""]
    finals = {}
    for event in events[:-2]:
        texts[event["index"]] += event["text"]
        if event.get("finish_reason"):
            finals[event["index"]] = event
    assert texts == [c["text"] for c in whole["completions"]]
    assert {i: (e["finish_reason"], e["num_chars"]) for i, e in finals.items()} == {
        0: ("length", 50),
        1: ("length", 50),
    }


def test_stream_with_stop_ends_with_stop(client: Any, tiny_checkpoint: Path) -> None:
    full = argmax_path(tiny_checkpoint, "beta ", 30)
    stop = full[3:5]
    body = {"prompt": "beta ", "max_chars": 30, "temperature": 0, "stop": [stop], "stream": True}
    with client.stream("POST", "/v1/generate", json=body) as response:
        events = parse_sse("".join(response.iter_text()))
    chunks = [e for e in events[:-2]]
    assert "".join(e["text"] for e in chunks) == full[: full.index(stop)]
    assert chunks[-1]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 17}, "n"),
        ({"seed": -1}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop.0"),
        ({"max_chars": -1}, "max_chars"),
        ({"max_chars": "many"}, "max_chars"),
        ({"prompt": None}, "prompt"),
        ({"temprature": 1}, "temprature"),
    ],
)
def test_invalid_parameters(client: Any, body: dict[str, Any], param: str) -> None:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["code"] == "invalid_parameter"


def test_range_errors_state_the_allowed_range(client: Any) -> None:
    message = client.post("/v1/generate", json={"top_p": 2}).json()["error"]["message"]
    assert "top_p" in message and "0.0 < top_p <= 1.0" in message


def test_optional_fields_state_their_range_too(client: Any) -> None:
    message = client.post("/v1/generate", json={"seed": -5}).json()["error"]["message"]
    assert "seed" in message and "0 <= seed <= 9007199254740991" in message
