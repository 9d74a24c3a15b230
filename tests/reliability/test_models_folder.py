"""A models folder with a truncated file, random bytes, safetensors files with foreign or invalid
metadata, and pickles renamed to ``.safetensors``: the server starts, serves the good models,
lists each bad one as unavailable with its reason, and never executes anything from them."""

from __future__ import annotations

import httpx

from tests.reliability.conftest import API_KEY, ModelsFolder
from tests.support import LiveServer as Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
REASONS = {  # what each bad file's reason must say
    "truncated": "not a readable safetensors file",
    "random": "not a readable safetensors file",
    "foreign": "not a charlm checkpoint",
    "wrongmeta": "invalid model metadata",
    "pickled": "not a readable safetensors file",
    "torchsave": "not a readable safetensors file",
}


def test_the_server_serves_the_good_models_and_lists_the_bad_ones(
    keyed_server: Server, models_folder: ModelsFolder
) -> None:
    assert set(REASONS) == set(models_folder.hostile.names)
    with httpx.Client(base_url=keyed_server.url, headers=AUTH, timeout=30) as client:
        ready = client.get("/ready").json()
        assert sorted(ready["models"]) == ["bi", "tiny"]
        assert sorted(ready["unavailable"]) == sorted(REASONS)
        cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        for model_id, reason in REASONS.items():
            card = cards[model_id]
            assert card["status"] == "unavailable"
            assert reason in card["error"], card
            assert str(models_folder.path) not in card["error"]  # file names, not host paths
            details = client.get(f"/v1/models/{model_id}").json()
            assert details["status"] == "unavailable" and details["error"] == card["error"]
            refused = client.post("/v1/score", json={"model": model_id, "texts": ["a"]})
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "model_unavailable"
            assert reason in refused.json()["error"]["message"]
        assert cards["tiny"]["status"] == cards["bi"]["status"] == "ready"
        scored = client.post("/v1/score", json={"model": "tiny", "texts": ["alpha"]})
        assert scored.status_code == 200
        generated = client.post("/v1/generate", json={"model": "tiny", "max_chars": 5})
        assert generated.json()["completions"][0]["num_chars"] == 5
        metrics = client.get("/metrics").text
    assert "charlm_models_loaded 2.0" in metrics
    assert "charlm_models_unavailable 6.0" in metrics
    log = keyed_server.log()
    for model_id in REASONS:
        assert f"model {model_id} unavailable:" in log


def test_nothing_in_the_bad_files_was_ever_executed(
    keyed_server: Server, models_folder: ModelsFolder
) -> None:
    """The pickles' payload would create the marker folder the moment anything unpickled them."""
    assert httpx.get(keyed_server.url + "/ready", timeout=10).status_code == 200
    assert not models_folder.hostile.marker.exists()
