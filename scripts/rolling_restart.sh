#!/usr/bin/env bash
# Replace the server replicas of the scaled stack (docker-compose.scale.yml) one at a time, with
# no request lost: after a new image is built or the settings changed, or to restart them.
#
#   docker compose -f docker-compose.yml -f docker-compose.scale.yml build server   # new image
#   scripts/rolling_restart.sh                       # same compose options as `up`, see below
#   scripts/rolling_restart.sh -p myproject -f docker-compose.yml -f docker-compose.scale.yml
#
# Arguments are docker compose's own options (project, files); without any, the two files above.
# For each replica running when it starts (a surge of one, as Kubernetes' maxSurge=1,
# maxUnavailable=0):
#   1. start one more replica from the current image and settings
#      (`up --no-recreate --scale server=N+1`) and wait until it is healthy (GET /ready 200)
#      and the balancer has it in rotation;
#   2. stop one old replica with SIGTERM: it closes its listening socket at once (the balancer's
#      check fails, requests that reach it meanwhile are retried on another replica), finishes
#      the requests it holds within its stop_grace_period, and is then removed.
# The number of replicas in rotation never drops below N. Environment:
#   CHARLM_ROLL_TIMEOUT=180   seconds to wait for a new replica to be in rotation
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== rolling restart: %s\n' "$*"; }
fail() {
  printf '== rolling restart: FAILED: %s\n' "$*" >&2
  exit 1
}

[ $# -gt 0 ] || set -- -f docker-compose.yml -f docker-compose.scale.yml
dc() { docker compose "$@"; }
TIMEOUT=${CHARLM_ROLL_TIMEOUT:-180}

# Replicas the balancer has in rotation (status UP in its stats, read inside its container:
# the stats port is not published).
in_rotation() {
  dc "$@" exec -T lb python3 -c '
import csv, io, urllib.request
rows = csv.reader(io.StringIO(urllib.request.urlopen("http://127.0.0.1:8404/stats;csv", timeout=3).read().decode()))
header = next(rows)
name, server, status = header.index("# pxname"), header.index("svname"), header.index("status")
print(sum(1 for r in rows if r[name] == "replicas" and r[server] not in ("FRONTEND", "BACKEND") and r[status] == "UP"))
' 2>/dev/null || echo 0
}

wait_in_rotation() {  # wait_in_rotation COUNT compose-options...
  local want=$1 got deadline=$((SECONDS + TIMEOUT))
  shift
  while :; do
    got=$(in_rotation "$@")
    [ "$got" -ge "$want" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || fail "the balancer has $got replicas in rotation after ${TIMEOUT}s, expected $want"
    sleep 1
  done
}

mapfile -t old < <(dc "$@" ps -q server)
n=${#old[@]}
[ "$n" -ge 1 ] || fail "no running server replica (are the compose options right? $*)"
log "$n replicas to replace"
started=$SECONDS
for id in "${old[@]}"; do
  name=$(docker inspect -f '{{.Name}}' "$id")
  name=${name#/}
  t0=$SECONDS
  dc "$@" up -d --no-recreate --no-deps --wait --wait-timeout "$TIMEOUT" --scale "server=$((n + 1))" server \
    >/dev/null 2>&1 || fail "the new replica did not become healthy within ${TIMEOUT}s"
  wait_in_rotation $((n + 1)) "$@"
  t1=$SECONDS
  # SIGTERM; docker waits the container's stop_grace_period before it kills
  docker stop "$id" >/dev/null || fail "could not stop $name"
  code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
  docker rm "$id" >/dev/null || fail "could not remove $name"
  log "$name replaced: new replica in rotation after $((t1 - t0)) s, old one stopped in $((SECONDS - t1)) s (exit status $code)"
done
log "done: $n replicas replaced in $((SECONDS - started)) s"
