"""``POST /v1/models/reload``, the file identity in ``/v1/models``, the periodic check of the
folder, and ``/ready`` while the server drains."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.support import write_random_checkpoint

KEY = "reload-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DEADLINE_S = 60.0


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_random_checkpoint(tmp_path / "m.safetensors", "abc")
    return tmp_path


def client_for(folder: Path, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(models_dir=folder, **settings)))


@pytest.fixture
def keyed(folder: Path) -> Iterator[TestClient]:
    with client_for(folder, api_keys=KEY, reload_interval_s=0) as client:
        yield client


def cards(client: TestClient) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    return {card["id"]: card for card in response.json()["data"]}


def test_models_show_the_file_they_were_loaded_from(keyed: TestClient, folder: Path) -> None:
    path = folder / "m.safetensors"
    card = cards(keyed)["m"]
    assert card["size_bytes"] == path.stat().st_size
    assert card["created"] == int(path.stat().st_mtime)
    assert len(card["sha256"]) == 64 and card["update"] is None and card["draining"] == 0
    assert abs(card["loaded_at"] - time.time()) < 3600
    details = keyed.get("/v1/models/m", headers=AUTH).json()
    assert details["sha256"] == card["sha256"] and details["loaded_at"] == card["loaded_at"]


def test_reload_needs_a_key(keyed: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = keyed.post("/v1/models/reload", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_reload_reports_what_changed(keyed: TestClient, folder: Path) -> None:
    assert keyed.post("/v1/models/reload", headers=AUTH).json()["changes"] == []
    added = write_random_checkpoint(folder / "new.safetensors", "xyz")
    replaced = write_random_checkpoint(folder / "m.safetensors", "abcd", seed=1)
    body = keyed.post("/v1/models/reload", headers=AUTH).json()
    assert body["object"] == "reload"
    assert body["changes"] == [
        {"id": "m", "change": "replaced", "sha256": replaced, "error": None},
        {"id": "new", "change": "added", "sha256": added, "error": None},
    ]
    assert {card["id"]: card["sha256"] for card in body["data"]} == {"m": replaced, "new": added}
    scored = keyed.post("/v1/score", headers=AUTH, json={"model": "new", "texts": ["zyx"]})
    assert scored.status_code == 200 and scored.json()["results"][0]["num_unknown"] == 0
    details = keyed.get("/v1/models/m", headers=AUTH).json()
    assert details["vocab_size"] == 6  # <bos>, <unk> and "abcd"


def test_a_bad_file_keeps_the_serving_version_and_shows_why(
    keyed: TestClient, folder: Path
) -> None:
    serving = cards(keyed)["m"]["sha256"]
    junk = folder / "junk.tmp"
    junk.write_bytes(b"half a checkpoint" * 10)
    junk.replace(folder / "m.safetensors")
    [change] = keyed.post("/v1/models/reload", headers=AUTH).json()["changes"]
    assert change["id"] == "m" and change["change"] == "failed"
    assert "not a readable safetensors file" in change["error"]
    card = cards(keyed)["m"]
    assert card["status"] == "ready" and card["sha256"] == serving
    assert card["update"]["status"] == "unavailable"
    assert card["update"]["error"] == change["error"]
    assert card["update"]["size_bytes"] == 170
    scored = keyed.post("/v1/score", headers=AUTH, json={"model": "m", "texts": ["cab"]})
    assert scored.status_code == 200
    assert keyed.get("/ready").json()["models"] == ["m"]


def test_removing_a_file_removes_its_model(keyed: TestClient, folder: Path) -> None:
    (folder / "m.safetensors").unlink()
    [change] = keyed.post("/v1/models/reload", headers=AUTH).json()["changes"]
    assert change["id"] == "m" and change["change"] == "removed"
    refused = keyed.post("/v1/score", headers=AUTH, json={"model": "m", "texts": ["a"]})
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
    assert keyed.get("/ready").json()["error"]["code"] == "not_ready"


def test_the_server_checks_the_folder_by_itself(folder: Path) -> None:
    with client_for(folder, reload_interval_s=0.05) as client:
        sha = write_random_checkpoint(folder / "later.safetensors", "xyz")
        deadline = time.monotonic() + DEADLINE_S
        while cards(client).get("later", {}).get("sha256") != sha:
            assert time.monotonic() < deadline, "the new file was never picked up"
            time.sleep(0.05)
        scored = client.post("/v1/score", json={"model": "later", "texts": ["xyz"]})
        assert scored.status_code == 200


def test_ready_answers_503_and_connections_close_while_draining(keyed: TestClient) -> None:
    assert keyed.get("/ready").status_code == 200
    assert keyed.get("/health").headers.get("connection") != "close"
    keyed.app.state.services.store.begin_draining()  # type: ignore[attr-defined]
    ready = keyed.get("/ready")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "draining"
    assert ready.headers["connection"] == "close"
    health = keyed.get("/health")
    assert health.status_code == 200 and health.headers["connection"] == "close"
    refused = keyed.post("/v1/models/reload", headers=AUTH)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"


def test_the_reload_path_names_its_method(keyed: TestClient) -> None:
    wrong = keyed.put("/v1/models/reload", headers=AUTH)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    # GET is the details of a model of that name, as for any other id
    missing = keyed.get("/v1/models/reload", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
