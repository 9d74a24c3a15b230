"""API keys, CORS, request ids, metrics and the published limits."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from tests.app.conftest import make_settings


@pytest.fixture(scope="module")
def secured(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text("# operators\nfile-key-1\n\n", encoding="utf-8")
    settings = make_settings(models_dir, api_keys="env-key-1, env-key-2", api_key_file=key_file)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize("key", ["env-key-1", "env-key-2", "file-key-1"])
def test_every_configured_key_works(secured: Any, key: str) -> None:
    response = secured.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("Bearer wrong", "invalid_api_key"),
        ("Basic env-key-1", "invalid_api_key"),
        ("Bearer ", "invalid_api_key"),
        ("Bearer env-key-1x", "invalid_api_key"),
    ],
)
def test_missing_or_wrong_key_is_401(secured: Any, header: str | None, code: str) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path, body in [
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/tiny", None),
        ("POST", "/v1/score", {"texts": ["a"]}),
        ("POST", "/v1/generate", {}),
        ("POST", "/v1/completions", {}),
    ]:
        response = secured.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["code"] == code and error["type"] == "authentication_error"


def test_health_ready_metrics_and_page_stay_open(secured: Any) -> None:
    for path in ("/health", "/ready", "/metrics", "/"):
        assert secured.get(path).status_code == 200, path


def test_keys_never_reach_the_logs(secured: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        secured.get("/v1/models", headers={"Authorization": "Bearer env-key-1"})
        secured.get("/v1/models", headers={"Authorization": "Bearer guess-key"})
    assert "env-key-1" not in caplog.text and "guess-key" not in caplog.text
    assert "env-key" not in repr(make_settings(Path("."), api_keys="env-key-9"))


def test_unreadable_key_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CHARLM_API_KEY_FILE"):
        create_app(make_settings(tmp_path, api_key_file=tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no key"):
        create_app(make_settings(tmp_path, api_key_file=empty))


def test_settings_read_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARLM_API_KEYS", "a, b,,c")
    monkeypatch.setenv("CHARLM_CORS_ORIGINS", "https://x.example")
    monkeypatch.setenv("CHARLM_MAX_QUEUE", "7")
    settings = Settings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["a", "b", "c"]
    assert settings.cors_origins == ["https://x.example"]
    assert settings.max_queue == 7


def test_cors_is_closed_by_default(client: Any) -> None:
    headers = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    preflight = client.options("/v1/score", headers=headers)
    assert "access-control-allow-origin" not in preflight.headers
    plain = client.get("/health", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_allows_configured_origins(models_dir: Path) -> None:
    settings = make_settings(models_dir, cors_origins="https://ok.example")
    with TestClient(create_app(settings)) as cors:
        ok = {"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"}
        response = cors.options("/v1/score", headers=ok)
        assert response.headers["access-control-allow-origin"] == "https://ok.example"
        bad = {"Origin": "https://bad.example", "Access-Control-Request-Method": "POST"}
        assert "access-control-allow-origin" not in cors.options("/v1/score", headers=bad).headers


def test_request_id_is_echoed_or_made(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    from app.api.middleware import RequestIdFilter

    handler_filter = RequestIdFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.INFO, logger="app.access"):
            sent = client.get("/health", headers={"X-Request-ID": "trace-42.a"})
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert sent.headers["x-request-id"] == "trace-42.a"
    assert any(getattr(r, "request_id", None) == "trace-42.a" for r in caplog.records)
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 32
    unsafe = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"
    error = client.get("/nope", headers={"X-Request-ID": "err-1"})
    assert error.status_code == 404 and error.headers["x-request-id"] == "err-1"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly these labels in a Prometheus text (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_metrics_count_requests_characters_and_models(client: Any) -> None:
    before = client.get("/metrics").text
    client.post("/v1/score", json={"texts": ["alpha", "beta"]})
    client.post("/v1/generate", json={"max_chars": 7, "n": 2})
    client.post("/v1/score", json={"texts": []})
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def delta(name: str, **labels: str) -> float:
        return metric(text, name, **labels) - metric(before, name, **labels)

    assert delta("charlm_chars_scored_total", model="tiny") == 9
    assert delta("charlm_chars_generated_total", model="tiny") == 14
    ok = {"route": "/v1/score", "method": "POST", "status": "200"}
    assert delta("charlm_requests_total", **ok) == 1
    assert delta("charlm_requests_total", route="/v1/score", method="POST", status="422") == 1
    count = "charlm_request_duration_seconds_count"
    assert delta(count, route="/v1/generate", method="POST") == 1
    assert metric(text, "charlm_models_loaded") == 1
    assert metric(text, "charlm_models_unavailable") == 2
    assert metric(text, "charlm_generations_active", model="tiny") == 0


def test_unmatched_paths_share_one_metric_label(client: Any) -> None:
    for i in range(3):
        client.get(f"/random/{i}")
    text = client.get("/metrics").text
    assert "/random/" not in text
    assert metric(text, "charlm_requests_total", route="unmatched", method="GET", status="404") >= 3


def test_openapi_publishes_every_limit(models_dir: Path) -> None:
    settings = make_settings(models_dir, max_text_chars=1234, max_new_chars=77)
    with TestClient(create_app(settings)) as limited:
        schemas = limited.get("/openapi.json").json()["components"]["schemas"]
    score = schemas["ScoreRequest"]["properties"]
    assert score["texts"]["items"]["maxLength"] == 1234 and score["texts"]["maxItems"] == 64
    assert score["context"]["maxLength"] == 1234
    assert score["top_k"]["maximum"] == 20
    gen = schemas["GenerateRequest"]["properties"]
    assert gen["max_chars"]["maximum"] == 77 and gen["max_chars"]["minimum"] == 0
    assert gen["prompt"]["maxLength"] == 1234
    assert gen["temperature"]["maximum"] == 10 and gen["n"]["maximum"] == 16
    assert schemas["GenerateRequest"]["additionalProperties"] is False
    comp = schemas["CompletionRequest"]["properties"]
    assert [v.get("maxLength") for v in comp["prompt"]["anyOf"] if v["type"] == "string"] == [1234]
    assert any(v.get("maximum") == 77 for v in comp["max_tokens"]["anyOf"])
