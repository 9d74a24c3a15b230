#!/usr/bin/env bash
# Installs what is missing, then runs lint, type checks, the import contracts and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports  # the rules of dependency between packages ([tool.importlinter])
.venv/bin/pytest "$@"
