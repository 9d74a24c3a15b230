# charlm: the scoring and generation server (`charlm-serve`) and the trainer (`charlm-train`)
# in one CPU image.
#
# Build:  docker build -t charlm .
#         docker build --build-arg WHEELS_IMAGE=my-wheelhouse:latest -t charlm .
#         docker build --build-arg TORCH_INDEX_URL=https://pypi.example.internal/cpu/simple -t charlm .
# Run:    docker run --rm -p 127.0.0.1:8000:8000 --read-only --tmpfs /tmp \
#             -v "$PWD/checkpoints:/models:ro" charlm
#
# PyTorch comes from, in this order:
#   1. a torch wheel at the root of the image named by WHEELS_IMAGE (a "wheelhouse": an image
#      whose root holds wheel files, e.g. `FROM scratch` + `COPY *.whl /`), so machines that
#      keep a CPU wheel locally build without the network;
#   2. otherwise the package index TORCH_INDEX_URL, by default PyTorch's CPU-only index, so a
#      plain `docker build .` never pulls the multi-gigabyte CUDA build from the default index.

ARG WHEELS_IMAGE=scratch
FROM ${WHEELS_IMAGE} AS wheels

# ---- requirements: the runtime dependencies as pyproject.toml lists them ---------------------
# Extracted on their own so that edits elsewhere in pyproject.toml (tool settings, development
# extras) leave the dependency layers below cached.
FROM python:3.11-slim AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /requirements.txt

# ---- deps: a virtual environment with torch and the project's dependencies -------------------
# Nothing here depends on the code, so code edits leave these layers (and the ~1 GB copy of the
# environment into the final image) cached.
FROM python:3.11-slim AS deps

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# torch first and alone. The wheelhouse is tried with --no-index (pip picks the wheel that fits
# this Python and platform); without one, the CPU index. The second call adds torch's own
# dependencies from the default index and leaves the installed torch in place.
# hadolint ignore=DL3042
RUN --mount=type=bind,from=wheels,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip \
    if pip install --no-index --no-deps --find-links=/wheels "torch==${TORCH_VERSION}"; then \
        echo "torch ${TORCH_VERSION} from the wheelhouse"; \
    else \
        echo "no torch ${TORCH_VERSION} wheel in WHEELS_IMAGE; using ${TORCH_INDEX_URL}"; \
        pip install --no-deps --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"; \
    fi \
    && pip install "torch==${TORCH_VERSION}" \
    && python -c "import torch; assert torch.version.cuda is None, 'expected a CPU-only torch build'"

# The runtime dependencies (no development extras).
COPY --from=requirements /requirements.txt /tmp/requirements.txt
# hadolint ignore=DL3042
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /tmp/requirements.txt

# What torch ships for building C++ extensions and testing itself (~200 MB): headers, C++ test
# binaries and protoc. Nothing here compiles extensions (the image has no compiler) and the
# server never calls them; torch_shm_manager stays for tensor sharing between processes.
RUN site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
    && rm -rf "$site/torch/include" "$site/torch/test" \
    && find "$site/torch/bin" -mindepth 1 -maxdepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
    && python -c "import torch; assert float(torch.ones(3) @ torch.ones(3)) == 3.0"

# ---- wheel: the project itself, built from the files .dockerignore lets through --------------
FROM deps AS wheel
WORKDIR /src
COPY pyproject.toml README* ./
COPY models ./models
COPY training ./training
COPY app ./app
# Built with the environment's own setuptools (no isolated build environment to download),
# which keeps rebuilds after a code edit short.
# hadolint ignore=DL3042
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "setuptools>=68" \
    && pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

# ---- runtime: the virtual environment on a clean base, no build files, no compilers ----------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="charlm" \
      org.opencontainers.image.description="Character-level language models: scoring and generation over HTTP" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric user, so hosts and orchestrators can grant it access to model folders and
# check that it is not root. Its home is never written: caches go to /tmp (see ENV below).
RUN groupadd --system --gid 10001 charlm \
    && useradd --system --no-log-init --uid 10001 --gid charlm \
        --home-dir /home/charlm --create-home --shell /usr/sbin/nologin charlm \
    && mkdir -p /models \
    && chown charlm:charlm /models

COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-cache-dir --no-deps --no-index /dist/charlm-*.whl \
    && pip check \
    && python -c "import models, training, app.main"

# The server reads everything from CHARLM_* variables; these are the container's defaults.
# With a read-only root filesystem only /tmp needs to be writable (a tmpfs): Python's bytecode
# is compiled at install time and matplotlib's and other caches are pointed there.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    CHARLM_MODELS_DIR=/models \
    CHARLM_HOST=0.0.0.0 \
    CHARLM_PORT=8000

USER 10001:10001
WORKDIR /home/charlm
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CHARLM_PORT', '8000'), timeout=2)"]

# Exec form: charlm-serve is PID 1 and receives SIGTERM itself; uvicorn handles it by
# finishing in-flight requests and running the app's shutdown before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["charlm-serve"]
