"""One error shape for every failure, with the status the issue names; never a 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import create_app
from models.checkpoint import save_checkpoint
from models.config import ModelConfig
from models.registry import build_model
from models.vocab import CharVocab
from tests.app.conftest import make_settings


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return dict(error)


def test_unknown_route_and_method(client: Any) -> None:
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.put("/v1/generate", json={}), 405, "method_not_allowed")


def test_unknown_and_unavailable_models(client: Any) -> None:
    error = assert_error(client.post("/v1/score", json={"model": "x", "texts": ["a"]}), 404)
    assert error["code"] == "model_not_found" and "available: tiny" in error["message"]
    error = assert_error(client.post("/v1/generate", json={"model": "broken"}), 404)
    assert error["code"] == "model_unavailable" and "not a readable" in error["message"]
    assert_error(client.get("/v1/models/nope"), 404, "model_not_found")


def test_malformed_json_is_a_422(client: Any) -> None:
    response = client.post(
        "/v1/score", content=b'{"texts": [', headers={"Content-Type": "application/json"}
    )
    error = assert_error(response, 422)
    assert "not valid JSON" in error["message"]


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_rejected(client: Any, value: bytes) -> None:
    for field in (b"temperature", b"top_p"):
        body = b'{"max_chars": 2, "' + field + b'": ' + value + b"}"
        response = client.post(
            "/v1/generate", content=body, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 422, "invalid_parameter")


def test_body_over_the_byte_limit_is_refused_before_parsing(models_dir: Path) -> None:
    with TestClient(create_app(make_settings(models_dir, max_request_bytes=200))) as small:
        big = json.dumps({"texts": ["a" * 300]})
        error = assert_error(small.post("/v1/score", content=big), 413, "request_too_large")
        assert "200 bytes" in error["message"]
        # not even JSON: the limit applies before the body is parsed
        assert_error(small.post("/v1/score", content=b"x" * 500), 413, "request_too_large")

        # a chunked upload with no Content-Length is counted as it arrives
        def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 50

        assert_error(small.post("/v1/score", content=chunks()), 413, "request_too_large")
        assert small.post("/v1/score", json={"texts": ["ok"]}).status_code == 200


def test_text_and_new_char_limits(models_dir: Path) -> None:
    settings = make_settings(models_dir, max_text_chars=10, max_new_chars=20)
    with TestClient(create_app(settings)) as small:
        error = assert_error(
            small.post("/v1/score", json={"texts": ["ok", "a" * 11]}), 413, "text_too_long"
        )
        assert error["param"] == "texts.1" and "at most 10" in error["message"]
        assert_error(small.post("/v1/score", json={"texts": ["a"], "context": "c" * 11}), 413)
        assert_error(small.post("/v1/generate", json={"prompt": "p" * 11}), 413, "text_too_long")
        error = assert_error(
            small.post("/v1/generate", json={"max_chars": 21}), 413, "max_new_chars_exceeded"
        )
        assert error["param"] == "max_chars"
        assert_error(small.post("/v1/completions", json={"max_tokens": 21}), 413)
        assert small.post("/v1/generate", json={"max_chars": 20}).status_code == 200
        # an omitted length takes the server's limit when that is below the default of 256
        reply = small.post("/v1/generate", json={"prompt": "a", "temperature": 0})
        (completion,) = reply.json()["completions"]
        assert len(completion["text"]) == 20 and completion["finish_reason"] == "length"
    with TestClient(create_app(make_settings(models_dir, max_new_chars=5))) as tiny_limit:
        reply = tiny_limit.post("/v1/completions", json={"prompt": "a", "temperature": 0})
        assert reply.status_code == 200, reply.text
        (choice,) = reply.json()["choices"]
        assert len(choice["text"]) == 5 and choice["finish_reason"] == "length"


def test_generation_on_a_model_that_cannot_generate_is_a_400(tmp_path: Path) -> None:
    vocab = CharVocab(list("ab "))
    model = build_model(
        ModelConfig(arch="bilstm", vocab_size=len(vocab), embed_size=4, hidden_size=4, num_layers=1)
    )
    save_checkpoint(tmp_path / "both-ways.safetensors", model, vocab)
    with TestClient(create_app(make_settings(tmp_path))) as bidi:
        error = assert_error(bidi.post("/v1/generate", json={"prompt": "a"}), 400)
        assert error["code"] == "cannot_generate" and "cannot generate" in error["message"]
        assert_error(bidi.post("/v1/completions", json={"prompt": "a"}), 400, "cannot_generate")
        details = bidi.get("/v1/models/both-ways").json()
        assert details["can_generate"] is False


def test_ready_is_503_without_models(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "missing"))) as empty:
        assert empty.get("/health").status_code == 200
        assert_error(empty.get("/ready"), 503, "not_ready")
        assert_error(empty.post("/v1/score", json={"texts": ["a"]}), 503, "no_model")
        assert empty.get("/v1/models").json() == {"object": "list", "data": []}


def test_several_models_without_a_default_need_a_name(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    for name in ("one", "two"):
        (tmp_path / f"{name}.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    with TestClient(create_app(make_settings(tmp_path))) as two:
        error = assert_error(two.post("/v1/score", json={"texts": ["a"]}), 400, "model_required")
        assert "one, two" in error["message"]
        assert two.post("/v1/score", json={"texts": ["a"], "model": "two"}).json()["model"] == "two"
    with TestClient(create_app(make_settings(tmp_path, default_model="two"))) as default:
        assert default.post("/v1/score", json={"texts": ["a"]}).json()["model"] == "two"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    ["model", "texts", "context", "per_char", "top_k", "prompt", "max_chars", "max_tokens",
     "temperature", "top_p", "n", "stop", "seed", "stream", "echo", "logprobs"]
)  # fmt: skip


@pytest.mark.parametrize("path", ["/v1/score", "/v1/generate", "/v1/completions"])
def test_arbitrary_json_never_gives_a_500(client: Any, path: str) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=st.dictionaries(fields, json_values, max_size=5) | json_values)
    def check(body: Any) -> None:
        if isinstance(body, dict):
            body.pop("stream", None)  # streaming replies are covered elsewhere
            body["max_chars" if path == "/v1/generate" else "max_tokens"] = 3
        response = client.post(path, json=body)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    check()


def test_per_char_output_is_bounded(client: Any) -> None:
    text = "a" * 50_000
    error = assert_error(
        client.post("/v1/score", json={"texts": [text] * 2, "per_char": True, "top_k": 2}), 413
    )
    assert error["code"] == "per_char_output_too_large" and "300000 entries" in error["message"]
    # the same texts without per-character output are fine
    assert client.post("/v1/score", json={"texts": [text] * 2}).status_code == 200
    body = {"prompt": "a" * 5000, "echo": True, "logprobs": 5, "max_tokens": 100, "n": 16}
    error = assert_error(client.post("/v1/completions", json=body), 413)
    assert error["param"] == "logprobs"


def test_long_model_ids_are_not_echoed_whole(client: Any) -> None:
    error = assert_error(client.get("/v1/models/" + "x" * 3000), 404, "model_not_found")
    assert len(error["message"]) < 200


def test_a_bug_is_a_500_in_the_error_shape_with_the_request_id(models_dir: Path) -> None:
    app = create_app(make_settings(models_dir))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as buggy:
        response = buggy.get("/boom", headers={"X-Request-ID": "bug-1"})
    error = assert_error(response, 500, "internal_error")
    assert error["type"] == "server_error" and "a bug" not in error["message"]
    assert response.headers["x-request-id"] == "bug-1"
