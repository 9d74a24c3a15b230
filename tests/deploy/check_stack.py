"""Check a running charlm server from the outside, as a client would.

Used by scripts/ci_docker.sh against the compose stack; needs only the standard library, so any
Python 3.11 on the host can run it:

    python tests/deploy/check_stack.py --url http://127.0.0.1:8000 --model tiny \
        --api-key-file secrets/api_keys --alphabet-file data/corpus.txt

Every check looks at the content of the reply, not only its status. The first failure stops the
run with exit status 1 and a message naming the check.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class CheckError(Exception):
    """A reply that is not what a correct server sends."""


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except json.JSONDecodeError as exc:
            raise CheckError(f"reply is not JSON ({exc}): {self.body[:200]!r}") from exc


class Client:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key

    def request(
        self, method: str, path: str, payload: Any = None, *, key: str | bool | None = True
    ) -> Reply:
        """``key=True`` sends the configured key, ``None``/``False`` none, a string that one."""
        headers = {"Content-Type": "application/json"}
        token = self.api_key if key is True else (key or None)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return Reply(resp.status, resp.read(), dict(resp.headers.items()))
        except urllib.error.HTTPError as err:
            return Reply(err.code, err.read(), dict(err.headers.items()))


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckError(message)


def expect_status(reply: Reply, status: int, what: str) -> Any:
    expect(
        reply.status == status,
        f"{what}: status {reply.status}, expected {status}: {reply.body[:300]!r}",
    )
    return reply.json()


def expect_error_shape(reply: Reply, status: int, what: str) -> None:
    body = expect_status(reply, status, what)
    error = body.get("error") if isinstance(body, dict) else None
    expect(
        isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"],
        f"{what}: error body lacks error.message: {body!r}",
    )


def wait_ready(client: Client, models: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no reply"
    while time.monotonic() < deadline:
        try:
            reply = client.request("GET", "/ready", key=False)
            if reply.status == 200 and set(models) <= set(reply.json().get("models", [])):
                return
            last = f"{reply.status} {reply.body[:200]!r}"
        except (OSError, CheckError) as exc:
            last = str(exc)
        time.sleep(1)
    raise CheckError(f"/ready did not list {models} within {timeout_s:.0f} s (last: {last})")


def check_health(client: Client, models: list[str]) -> None:
    body = expect_status(client.request("GET", "/health", key=False), 200, "/health")
    expect(body == {"status": "ok"}, f"/health body {body!r}")
    body = expect_status(client.request("GET", "/ready", key=False), 200, "/ready")
    expect(body.get("status") == "ready", f"/ready status {body!r}")
    missing = sorted(set(models) - set(body.get("models", [])))
    expect(not missing, f"/ready does not list {missing}: {body!r}")
    body = expect_status(client.request("GET", "/v1/models"), 200, "/v1/models")
    listed = {card["id"]: card for card in body.get("data", [])}
    for model in models:
        expect(model in listed, f"/v1/models lacks {model!r}: {sorted(listed)}")
        expect(listed[model].get("status") == "ready", f"/v1/models {model}: {listed[model]!r}")


def check_auth(client: Client) -> None:
    payload = {"texts": ["abc"]}
    expect_error_shape(client.request("POST", "/v1/score", payload, key=False), 401, "no key")
    wrong = client.request("POST", "/v1/score", payload, key="not-the-key")
    expect_error_shape(wrong, 401, "wrong key")


def check_score(client: Client, model: str, text: str) -> None:
    payload = {"model": model, "texts": [text], "per_char": True, "top_k": 2}
    body = expect_status(client.request("POST", "/v1/score", payload), 200, "/v1/score")
    expect(body.get("model") == model, f"score answered for {body.get('model')!r}")
    (result,) = body["results"]
    logprob = result["logprob"]
    n = result["num_chars"]
    expect(n == len(text), f"num_chars {n} for a text of {len(text)} characters")
    expect(math.isfinite(logprob) and logprob < 0, f"logprob {logprob} is not a finite negative")
    per_char = result["per_char"]
    expect([c["char"] for c in per_char] == list(text), "per_char characters differ from text")
    expect([c["offset"] for c in per_char] == list(range(n)), "per_char offsets are not 0..n-1")
    total = sum(c["logprob"] for c in per_char)
    expect(
        math.isclose(total, logprob, rel_tol=1e-4, abs_tol=1e-4),
        f"per-character logprobs sum to {total}, whole text {logprob}",
    )
    expect(
        math.isclose(result["perplexity"], math.exp(-logprob / n), rel_tol=1e-4),
        f"perplexity {result['perplexity']} != exp(-logprob/num_chars)",
    )
    expect(
        math.isclose(result["bits_per_char"], -logprob / n / math.log(2), rel_tol=1e-4),
        f"bits_per_char {result['bits_per_char']} != -logprob/num_chars/ln 2",
    )
    expect(all(len(c["top"]) == 2 for c in per_char), "top_k=2 did not give two alternatives")


def check_generate(client: Client, model: str, alphabet: set[str] | None) -> None:
    payload = {
        "model": model,
        "prompt": "the ",
        "max_chars": 24,
        "temperature": 0.8,
        "seed": 7,
        "n": 2,
    }
    first = expect_status(client.request("POST", "/v1/generate", payload), 200, "/v1/generate")
    again = expect_status(client.request("POST", "/v1/generate", payload), 200, "/v1/generate")
    texts = [c["text"] for c in first["completions"]]
    expect(len(texts) == 2, f"n=2 gave {len(texts)} completions")
    expect(texts == [c["text"] for c in again["completions"]], "same seed gave different texts")
    for completion in first["completions"]:
        text = completion["text"]
        expect(completion["num_chars"] == len(text), f"num_chars wrong for {text!r}")
        expect(completion["finish_reason"] == "length", f"finish_reason {completion!r}")
        expect(len(text) == 24, f"max_chars=24 without stop gave {len(text)} characters")
        if alphabet is not None:
            strange = sorted(set(text) - alphabet)
            expect(not strange, f"generated characters outside the corpus: {strange}")
    greedy = {**payload, "temperature": 0, "n": 1, "seed": None, "stop": ["\n"]}
    body = expect_status(client.request("POST", "/v1/generate", greedy), 200, "greedy")
    (completion,) = body["completions"]
    expect("\n" not in completion["text"], "stop string kept in the text")
    expect(
        completion["finish_reason"] == ("stop" if len(completion["text"]) < 24 else "length"),
        f"greedy finish_reason {completion!r}",
    )
    stream = client.request("POST", "/v1/generate", {**payload, "n": 1, "stream": True})
    expect(stream.status == 200, f"stream status {stream.status}")
    events = [
        line[len("data: ") :]
        for line in stream.body.decode().splitlines()
        if line.startswith("data: ")
    ]
    expect(
        bool(events) and events[-1] == "[DONE]", f"stream does not end with [DONE]: {events[-3:]}"
    )
    streamed = "".join(json.loads(e).get("text", "") for e in events[:-1])
    expect(streamed == texts[0], f"streamed {streamed!r}, whole reply {texts[0]!r}")


def check_errors(client: Client) -> None:
    bad = client.request("POST", "/v1/generate", {"max_chars": -1})
    expect_error_shape(bad, 422, "max_chars=-1")  # out of range: invalid_parameter
    unknown = client.request("POST", "/v1/score", {"model": "no-such-model", "texts": ["a"]})
    expect_error_shape(unknown, 404, "unknown model")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", action="append", required=True, help="model id (repeatable)")
    parser.add_argument("--api-key-file", type=Path, help="first line: the key to send")
    parser.add_argument("--alphabet-file", type=Path, help="text whose characters may be generated")
    parser.add_argument("--text", default="the cat sat on the mat.\n", help="text to score")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for /ready")
    args = parser.parse_args(argv)

    key = args.api_key_file.read_text().split()[0] if args.api_key_file else None
    alphabet = set(args.alphabet_file.read_text(encoding="utf-8")) if args.alphabet_file else None
    client = Client(args.url, key)
    try:
        if args.wait:
            wait_ready(client, args.model, args.wait)
        check_health(client, args.model)
        if key:
            check_auth(client)
        for model in args.model:
            check_score(client, model, args.text)
            check_generate(client, model, alphabet)
        check_errors(client)
    except (CheckError, KeyError, TypeError, ValueError, OSError) as exc:
        print(f"stack check FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"stack check passed: {', '.join(args.model)} at {args.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
