"""Schema fuzzing: schemathesis against the live OpenAPI document of a real server on 127.0.0.1.

Every operation, with a valid API key and without one. A run passes when no answer is a 5xx,
every answer conforms to the documented schema (status, content type, headers, body, each SSE
event), schema-violating requests are refused and schema-valid ones served (see
``schema_hooks.py`` for charlm's own checks). ``bench/fuzz.py`` runs the same with thousands of
examples.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import API_KEY
from tests.support import REPO
from tests.support import LiveServer as Server

HERE = Path(__file__).resolve().parent
FUZZ_MODELS = "tiny,bi,truncated"  # two that serve and one that is listed as unavailable


def run_schemathesis(
    url: str, auth: str, max_examples: int, seed: int, extra: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The schemathesis CLI with charlm's config and checks; ``auth`` as in ``schema_hooks``."""
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.reliability.schema_hooks",
        "PYTHONPATH": str(REPO),
        "CHARLM_FUZZ_AUTH": auth,
        "CHARLM_FUZZ_MODELS": FUZZ_MODELS,
        "NO_COLOR": "1",
    }
    args = [sys.executable, "-m", "schemathesis.cli"]
    args += ["--config-file", str(HERE / "schemathesis.toml"), "run", url + "/openapi.json"]
    args += ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
    args += ["--max-examples", str(max_examples), "--seed", str(seed), "--workers", "2"]
    # latency is the soak's business: on a busy shared CPU a fuzzed request may take seconds
    args += ["--request-timeout", "120", "--max-response-time", "120"]
    args += ["--generation-database", "none"]
    if auth == "with-key":
        args += ["-H", f"Authorization: Bearer {API_KEY}"]
    args += extra or []
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def generated_cases(output: str) -> int:
    match = re.search(r"(\d+) generated", output)
    return int(match.group(1)) if match else 0


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_every_reference_in_the_openapi_document_resolves(keyed_server: Server) -> None:
    document = httpx.get(keyed_server.url + "/openapi.json", timeout=10).json()
    refs = set(_refs(document))
    assert refs, "the document references no component"
    for ref in sorted(refs):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"], ref


def test_the_published_limits_are_the_configured_ones(keyed_server: Server) -> None:
    schemas = httpx.get(keyed_server.url + "/openapi.json", timeout=10).json()["components"]
    generate = schemas["schemas"]["GenerateRequest"]["properties"]
    assert generate["max_chars"]["maximum"] == 256
    assert generate["prompt"]["maxLength"] == 1000


@pytest.mark.parametrize(
    ("auth", "max_examples"),
    [("with-key", 12), ("without-key", 3)],
)
def test_schemathesis_finds_nothing(keyed_server: Server, auth: str, max_examples: int) -> None:
    result = run_schemathesis(keyed_server.url, auth, max_examples, seed=20261126)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    # every operation of the server's own schema was tested
    spec = httpx.get(f"{keyed_server.url}/openapi.json", timeout=10).json()
    methods = {"get", "post", "put", "patch", "delete"}
    operations = sum(len(methods & set(item)) for item in spec["paths"].values())
    assert operations >= 10
    assert f"{operations}/{operations}" in output or f"Tested: {operations}" in output, output[
        -3000:
    ]
    assert generated_cases(output) >= 100, output[-3000:]
    assert API_KEY not in keyed_server.log()
