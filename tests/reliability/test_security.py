"""Access: API keys compared in constant time, 401 on every ``/v1`` route without or with a wrong
key, keys never in logs or metrics; model ids are looked up, never joined into paths."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

import app.api.deps
from app.main import create_app
from app.settings import Settings
from tests.reliability.conftest import API_KEY, ModelsFolder
from tests.support import LiveServer as Server

FILE_KEYS = ["sk-file-key-one-0a1b2c3d4e", "sk-file-key-two-5f6a7b8c9d"]
WRONG = "sk-wrong-key-that-must-not-be-logged-42"
BAD_HEADERS: dict[str, str | bytes | None] = {
    "missing": None,
    "empty bearer": "Bearer ",
    "basic scheme": "Basic " + FILE_KEYS[0],
    "no scheme": FILE_KEYS[0],
    "wrong key": "Bearer " + WRONG,
    "prefix of a key": "Bearer " + FILE_KEYS[0][:-1],
    "key plus a char": "Bearer " + FILE_KEYS[0] + "x",
    "key in capitals": "Bearer " + FILE_KEYS[0].upper(),
    "two keys": "Bearer " + FILE_KEYS[0] + " " + FILE_KEYS[1],
    "latin-1 bytes": b"Bearer sk-\xe9\xff",
}


@pytest.fixture(scope="module")
def secured(models_folder: ModelsFolder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text("# charlm keys\n" + "\n".join(FILE_KEYS) + "\n", encoding="utf-8")
    settings = Settings(models_dir=models_folder.path, default_model="tiny", api_key_file=key_file)
    with TestClient(create_app(settings)) as client:
        yield client


def v1_operations(client: Any) -> list[tuple[str, str]]:
    """Every operation the OpenAPI document publishes under ``/v1``."""
    ops = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if path.startswith("/v1/"):
            ops += [(m.upper(), path.replace("{model_id}", "tiny")) for m in operations]
    return ops


def test_every_v1_route_is_401_without_a_valid_key(secured: Any) -> None:
    operations = v1_operations(secured)
    assert len(operations) >= 6
    for method, path in operations:
        for name, header in BAD_HEADERS.items():
            headers = {} if header is None else {"Authorization": header}
            response = secured.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (method, path, name, response.text)
            error = response.json()["error"]
            assert error["type"] == "authentication_error"
            assert response.headers["www-authenticate"] == "Bearer"
        for key in FILE_KEYS:
            response = secured.request(
                method, path, json={}, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code != 401, (method, path)


def test_open_routes_need_no_key(secured: Any) -> None:
    for path in ("/health", "/ready", "/metrics", "/"):
        assert secured.get(path).status_code == 200, path


def test_keys_are_compared_in_constant_time(secured: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every configured key goes through ``hmac.compare_digest`` on every request: no early
    exit on a match, no ``==`` that stops at the first differing byte."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app.api.deps.hmac, "compare_digest", spy)
    for header in ("Bearer " + WRONG, "Bearer " + FILE_KEYS[0], "Bearer " + FILE_KEYS[1]):
        calls.clear()
        secured.get("/v1/models", headers={"Authorization": header})
        compared = [b for _, b in calls]
        # every key, the same number of times (checked before the body and by the route)
        assert compared, header
        assert sorted(set(compared)) == sorted(k.encode() for k in FILE_KEYS), header
        assert all(compared.count(k) == compared.count(compared[0]) for k in compared), header


def test_keys_never_reach_the_logs_in_process(
    secured: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for header in ("Bearer " + FILE_KEYS[0], "Bearer " + WRONG, "Basic " + FILE_KEYS[1]):
        secured.post("/v1/score", json={"texts": ["a"]}, headers={"Authorization": header})
        secured.get("/v1/nowhere", headers={"Authorization": header})
    text = caplog.text
    assert "POST /v1/score" in text  # the access log was captured
    for secret in (*FILE_KEYS, WRONG):
        assert secret not in text


def test_keys_never_reach_the_server_log_or_metrics(keyed_server: Server) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=30) as client:
        good = {"Authorization": f"Bearer {API_KEY}"}
        assert client.post("/v1/score", json={"texts": ["ab"]}, headers=good).status_code == 200
        bad = {"Authorization": f"Bearer {WRONG}"}
        assert client.post("/v1/score", json={"texts": ["ab"]}, headers=bad).status_code == 401
        client.post("/v1/score", content=b"{not json", headers=good)
        client.get("/v1/models/tiny", headers=bad)
        metrics = client.get("/metrics").text
    log = keyed_server.log()
    assert "POST /v1/score 401" in log and "POST /v1/score 200" in log
    for secret in (API_KEY, WRONG):
        assert secret not in log
        assert secret not in metrics


@pytest.mark.parametrize(
    ("model", "status", "path_code"),
    [
        ("../tiny", 422, "not_found"),
        ("/etc/passwd", 422, "not_found"),
        ("tiny.safetensors", 404, "model_not_found"),
        ("tiny/../tiny", 422, "not_found"),
        ("..", 422, "not_found"),
        ("tiny\x00", 422, "model_not_found"),
        ("~root", 422, "model_not_found"),
        ("TINY", 404, "model_not_found"),
        ("tiny ", 422, "model_not_found"),
        ("models/tiny", 422, "not_found"),
    ],
)
def test_model_ids_are_looked_up_never_joined_into_paths(
    secured: Any, model: str, status: int, path_code: str
) -> None:
    """In a body, an id outside the published pattern is a 422 on ``model``; one inside it that no
    file provides is a 404 ``model_not_found``. In the path of ``/v1/models/{id}`` every one is a
    404: ``model_not_found``, or ``not_found`` where a slash or a ``..`` segment makes the path
    match no route at all."""
    headers = {"Authorization": f"Bearer {FILE_KEYS[0]}"}
    response = secured.post("/v1/score", json={"model": model, "texts": ["a"]}, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == "model"
    assert error["code"] == ("model_not_found" if status == 404 else "invalid_parameter")
    details = secured.get(f"/v1/models/{quote(model, safe='')}", headers=headers)
    assert details.status_code == 404, details.text
    assert details.json()["error"]["code"] == path_code


def test_a_checkpoint_outside_the_folder_is_not_reachable(
    models_folder: ModelsFolder, secured: Any, tmp_path: Path
) -> None:
    """A good checkpoint one folder up is no model: ids are the folder's file stems only."""
    outside = models_folder.path.parent / "outside.safetensors"
    outside.write_bytes(models_folder.good.read_bytes())
    headers = {"Authorization": f"Bearer {FILE_KEYS[0]}"}
    for model, status in (("outside", 404), ("../outside", 422)):
        response = secured.post("/v1/score", json={"model": model, "texts": ["a"]}, headers=headers)
        assert response.status_code == status, response.text
    ids = [m["id"] for m in secured.get("/v1/models", headers=headers).json()["data"]]
    assert "outside" not in ids


@pytest.mark.parametrize(
    "body", [b"{not json", b"\xff\xfe\x00", b'{"texts": ["a"]}', b"x" * 150_000]
)
def test_the_key_is_checked_before_the_body_is_read(keyed_server: Server, body: bytes) -> None:
    """Without a key every /v1 request is a 401, whatever its body: malformed JSON, undecodable
    bytes, a valid request, a large body (refused without being read)."""
    response = httpx.post(
        keyed_server.url + "/v1/score",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "missing_api_key"
