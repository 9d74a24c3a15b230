"""Fixtures for the reliability tests: a models folder with one good model, one bidirectional
model and six hostile files; live servers on 127.0.0.1 over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.harness import (
    HostileFiles,
    write_bidirectional_model,
    write_good_model,
    write_hostile_models,
)
from tests.support import LiveServer as Server
from tests.support import start_server, stop_server

API_KEY = "sk-charlm-reliability-7f3a9c1e5b"  # long and unique, so a log search is meaningful
# limits low enough that fuzzed requests stay cheap, published in the OpenAPI document
SERVER_LIMITS = {
    "CHARLM_MAX_TEXT_CHARS": "1000",
    "CHARLM_MAX_NEW_CHARS": "256",
    "CHARLM_MAX_REQUEST_BYTES": "200000",
    "CHARLM_DEFAULT_MODEL": "tiny",
    "CHARLM_BODY_TIMEOUT_S": "3",
}


@dataclass
class ModelsFolder:
    path: Path
    good: Path
    hostile: HostileFiles


@pytest.fixture(scope="session")
def models_folder(tmp_path_factory: pytest.TempPathFactory) -> ModelsFolder:
    folder = tmp_path_factory.mktemp("reliability-models")
    good = write_good_model(folder)
    write_bidirectional_model(folder)
    marker = tmp_path_factory.mktemp("marker") / "unpickled"
    hostile = write_hostile_models(folder, good, marker)
    return ModelsFolder(folder, good, hostile)


@pytest.fixture(scope="session")
def keyed_server(
    models_folder: ModelsFolder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``charlm-serve`` with an API key, low limits and every file of ``models_folder``."""
    log = tmp_path_factory.mktemp("keyed-server") / "server.log"
    server = start_server(models_folder.path, log, CHARLM_API_KEYS=API_KEY, **SERVER_LIMITS)
    try:
        yield server
    finally:
        stop_server(server)
