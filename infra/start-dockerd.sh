#!/usr/bin/env bash
# Start a Docker engine in the background if none answers, then wait until `docker info` works.
#
#   bash infra/start-dockerd.sh            # idempotent; exit 0 once the engine answers
#
# For machines without systemd (containers, CI sandboxes). Where an engine already runs
# (Docker Desktop, a systemd unit) this does nothing. Needs root to start dockerd.
# Environment: HOTLAP_DOCKERD_LOG (default /var/log/hotlap-dockerd.log),
#              HOTLAP_DOCKERD_WAIT (seconds to wait, default 60).
set -euo pipefail

log() { printf '[start-dockerd] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  log "docker engine already running"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "dockerd not found: install it first (Debian: apt-get install -y docker.io)"
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  log "no docker engine answers and only root can start dockerd here"
  exit 1
fi

logfile="${HOTLAP_DOCKERD_LOG:-/var/log/hotlap-dockerd.log}"
wait_s="${HOTLAP_DOCKERD_WAIT:-60}"
mkdir -p "$(dirname "$logfile")"

# A stale pid file from an engine that died would make dockerd refuse to start.
pidfile=/var/run/docker.pid
if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
  rm -f "$pidfile"
fi

# Fully detached: its own session, no inherited stdin/stdout/stderr, so a CI runner that
# waits for the output pipe to close is not held open by the daemon.
log "starting dockerd (log: $logfile)"
setsid dockerd --pidfile "$pidfile" </dev/null >>"$logfile" 2>&1 &
disown || true

deadline=$((SECONDS + wait_s))
until docker info >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "dockerd did not answer within ${wait_s}s; last log lines:"
    tail -n 30 "$logfile" >&2 || true
    exit 1
  fi
  sleep 0.5
done
log "docker engine ready after $((SECONDS))s ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
