#!/usr/bin/env bash
# Creates .venv and installs charlm with its development tools; quick when nothing changed.
# The ray extra (Ray Data, pyarrow) is for charlm-score's Ray runner and its tests.
# torch is pinned to the CPU build 2.13.0: an unpinned torch would pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.charlm-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[dev,ray]"
  echo "$want" > "$stamp"
fi
