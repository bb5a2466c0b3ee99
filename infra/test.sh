#!/usr/bin/env bash
# THE command that sets up and runs hotlap's tests, on a fresh Debian 12 machine or a dev box:
#
#   bash infra/test.sh [PYTEST ARGS...]        e.g. bash infra/test.sh -q -k store
#
# 1. (root) apt-get installs what is missing: redis-server, docker.io, debootstrap, ...
# 2. in the background: starts dockerd if none runs, installs `docker compose` v2 and builds
#    the offline images (infra/build-offline-images.sh; each skipped when up to date). With
#    CI=true, HOTLAP_REQUIRE_COMPOSE=1 makes the compose test fail rather than skip, also when
#    the engine or the images could not be set up. HOTLAP_NO_DOCKER=1 skips this step (the
#    compose test then skips, outside CI).
# 3. creates .venv if missing and pip install -e '.[test]' (again when pyproject.toml changed)
# 4. starts a redis-server and a moto_server (S3) on free loopback ports, for the tests:
#    HOTLAP_TEST_REDIS_URL, HOTLAP_TEST_S3_ENDPOINT (both stopped on exit)
# 5. runs .venv/bin/python -m pytest "$@" and exits with its status.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$HOTLAP_ROOT"
T0=$SECONDS

# ------------------------------------------------------------------ 1. system packages
pkgs=(ca-certificates python3 python3-venv redis-server)
[ "${HOTLAP_NO_DOCKER:-0}" = 1 ] || pkgs+=(docker.io debootstrap tar)
if hl_is_root; then
  hl_apt_install "${pkgs[@]}" || hl_log "warning: apt-get install failed; going on with what is there"
else
  hl_log "not root: skipping apt-get (needs: ${pkgs[*]})"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/hotlap-test.XXXXXX")"
PIDS=()
DOCKER_SETUP_PID=
STARTED_DOCKERD=0
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local pid
  if [ -n "$DOCKER_SETUP_PID" ] && kill -0 "$DOCKER_SETUP_PID" 2>/dev/null; then
    kill -- "-$DOCKER_SETUP_PID" 2>/dev/null || kill "$DOCKER_SETUP_PID" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$STARTED_DOCKERD" = 1 ] && [ "${CI:-}" = true ] && [ -f /var/run/docker.pid ]; then
    hl_log "stopping the dockerd this run started"
    pid="$(cat /var/run/docker.pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ 2. Docker + offline images
# In the background (its own process group), beside the venv: the longest part of a cold start.
if [ "${HOTLAP_NO_DOCKER:-0}" = 1 ]; then
  hl_log "HOTLAP_NO_DOCKER=1: no Docker engine, no images (the compose test skips)"
else
  docker info >/dev/null 2>&1 || STARTED_DOCKERD=1
  hl_log "Docker engine, compose v2 and offline images: setting up in the background"
  setsid --wait bash -c 'set -euo pipefail; source infra/lib.sh
    bash infra/start-dockerd.sh && hl_ensure_compose_v2 && bash infra/build-offline-images.sh' \
    </dev/null >"$TMP/docker-setup.log" 2>&1 &
  DOCKER_SETUP_PID=$!
fi

# ------------------------------------------------------------------ 3. the venv
hl_ensure_venv test
PY="$HOTLAP_ROOT/.venv/bin/python"

# ------------------------------------------------------------------ 4. redis + S3 for the tests
redis_bin="$(command -v redis-server || "$PY" -c 'from hotlap.redis_server import find_redis_server; print(find_redis_server())' 2>/dev/null || true)"
if [ -n "$redis_bin" ]; then
  port="$(hl_free_port)"
  "$redis_bin" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
    </dev/null >"$TMP/redis.log" 2>&1 &
  PIDS+=($!)
  if hl_wait_for redis-server 15 "$PY" -c "import redis; redis.Redis(port=$port).ping()"; then
    export HOTLAP_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
  else
    tail -n 20 "$TMP/redis.log" >&2 || true
  fi
else
  hl_log "warning: no redis-server; the tests start their own"
fi

port="$(hl_free_port)"
"$HOTLAP_ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" </dev/null >"$TMP/moto.log" 2>&1 &
PIDS+=($!)
if hl_wait_for moto_server 30 "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=2)"; then
  export HOTLAP_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
else
  tail -n 20 "$TMP/moto.log" >&2 || true
fi
hl_log "test servers: redis ${HOTLAP_TEST_REDIS_URL:-(none)}, S3 ${HOTLAP_TEST_S3_ENDPOINT:-(none)}"

# ------------------------------------------------------------------ wait for Docker
if [ -n "$DOCKER_SETUP_PID" ]; then
  docker_rc=0
  wait "$DOCKER_SETUP_PID" || docker_rc=$?
  DOCKER_SETUP_PID=
  sed 's/^/  | /' "$TMP/docker-setup.log" >&2
  if [ "$docker_rc" = 0 ]; then
    hl_log "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), compose $(docker compose version --short 2>/dev/null || echo '?')"
  else
    docker info >/dev/null 2>&1 || STARTED_DOCKERD=0
    hl_log "WARNING: Docker engine or offline images not available (exit $docker_rc): the compose test will skip (fail in CI)"
  fi
fi

# CI must exercise compose: a broken engine or image build fails the compose test, never skips it.
if [ "${CI:-}" = true ]; then
  export HOTLAP_REQUIRE_COMPOSE=1
fi

# ------------------------------------------------------------------ 5. the tests
hl_log "setup took $((SECONDS - T0))s; running pytest $*"
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
hl_log "pytest exited $rc after $((SECONDS - T0))s in all"
exit "$rc"
