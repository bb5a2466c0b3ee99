#!/usr/bin/env bash
# Build every image the compose stack needs from Debian packages and PyPI, for machines that
# reach no container registry (infra/docker-compose.offline.yml then swaps them in):
#
#   hotlap/base:local   Debian bookworm (debootstrap --variant=minbase) + python3, venv, pip,
#                       and this machine's extra CA certificates
#   hotlap/redis:local  Debian's redis-server            (stands in for redis:7)
#   hotlap/s3:local     moto[server] on port 9000         (stands in for minio/minio)
#   hotlap/app:local    infra/Dockerfile on the local base, torch's CPU wheel from infra/wheels/
#
# Usage: bash infra/build-offline-images.sh [--rebuild] [IMAGE...]
#   IMAGE       any of base redis s3 app (default: all)
#   --rebuild   rebuild the named images even when they are up to date
# An image is skipped when it exists and was built from the same recipe, the same base image
# and (for app) the same project sources; so a second run takes seconds. Needs root (for
# debootstrap) and a running Docker engine (infra/start-dockerd.sh).
# Environment: HOTLAP_DEBIAN_MIRROR overrides the mirror read from /etc/apt/sources*.
set -euo pipefail

# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$HOTLAP_ROOT"

BASE_IMAGE="${HOTLAP_BASE_IMAGE:-hotlap/base:local}"
REDIS_IMAGE="${HOTLAP_REDIS_IMAGE:-hotlap/redis:local}"
S3_IMAGE="${HOTLAP_S3_IMAGE:-hotlap/s3:local}"
APP_IMAGE="${HOTLAP_APP_IMAGE:-hotlap/app:local}"
APP_DEPS_IMAGE="${APP_IMAGE%:*}-deps:${APP_IMAGE##*:}"
SUITE=bookworm
CACHE="$HOTLAP_ROOT/infra/.cache"
WHEELS="$HOTLAP_ROOT/infra/wheels"
export DOCKER_BUILDKIT=0 # the legacy builder: BuildKit needs buildx, which Debian lacks

rebuild=0
targets=()
for a in "$@"; do
  case "$a" in
    --rebuild) rebuild=1 ;;
    base | redis | s3 | app) targets+=("$a") ;;
    -h | --help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) hl_die "unknown argument: $a (see --help)" ;;
  esac
done
[ "${#targets[@]}" -eq 0 ] && targets=(base redis s3 app)
wanted() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

docker info >/dev/null 2>&1 || hl_die "no Docker engine answers (run infra/start-dockerd.sh)"
mkdir -p "$CACHE" "$WHEELS"
T0=$SECONDS

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
image_label() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# up_to_date IMAGE KEY : the image exists, was built with label hotlap.key=KEY, no --rebuild.
up_to_date() {
  [ "$rebuild" = 1 ] && return 1
  [ -n "$(image_id "$1")" ] && [ "$(image_label "$1" hotlap.key)" = "$2" ]
}

# docker_build NAME ARGS... : docker build with output to a log; the log's tail on failure.
docker_build() {
  local name="$1" logf="$CACHE/build-$1.log"
  shift
  if ! docker build "$@" >"$logf" 2>&1; then
    tail -n 40 "$logf" >&2
    hl_die "building $name failed (full log: $logf)"
  fi
}

# The Debian mirror this machine uses (deb822 .sources or one-line .list), for debootstrap and
# for the base image's own apt sources. Prints "MAIN_URI SECURITY_URI" (security may be "-").
debian_mirrors() {
  local py
  py="$(hl_python)" || { echo "http://deb.debian.org/debian http://deb.debian.org/debian-security"; return; }
  "$py" - "$SUITE" <<'PY'
import glob, sys
suite = sys.argv[1]
main = sec = None
def take(uri, suites):
    global main, sec
    uri = uri.rstrip("/")
    if main is None and suite in suites:
        main = uri
    if sec is None and f"{suite}-security" in suites:
        sec = uri
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for block in open(path, encoding="utf-8", errors="replace").read().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line.strip().startswith("#") or ":" not in line:
                continue
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"])[0] != "no":
            for uri in fields.get("uris", []):
                take(uri, fields.get("suites", []))
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        continue
    for line in lines:
        parts = line.split("#", 1)[0].split()
        if parts[:1] != ["deb"]:
            continue
        parts = [p for p in parts[1:] if not p.startswith("[")]
        if len(parts) >= 2:
            take(parts[0], [parts[1]])
main = main or "http://deb.debian.org/debian"
sec = sec or ("http://deb.debian.org/debian-security" if "deb.debian.org" in main else "-")
print(main, sec)
PY
}

# ------------------------------------------------------------------------------ base image
build_base() {
  local mirrors main sec key rootfs t=$SECONDS crt
  mirrors="$(debian_mirrors)"
  main="${HOTLAP_DEBIAN_MIRROR:-${mirrors%% *}}"
  sec="${mirrors##* }"
  key="$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null | cat - <(echo "$SUITE $main $sec v1") | sha256sum | cut -c1-16)"
  if up_to_date "$BASE_IMAGE" "$key"; then
    hl_log "$BASE_IMAGE is up to date"
    return 0
  fi
  hl_is_root || hl_die "building $BASE_IMAGE needs root (debootstrap)"
  command -v debootstrap >/dev/null 2>&1 || hl_apt_install debootstrap || hl_die "debootstrap is missing"
  hl_log "building $BASE_IMAGE: debootstrap --variant=minbase $SUITE from $main"
  rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  # debootstrap mounts /proc and /sys inside the target: never leave them mounted.
  # shellcheck disable=SC2064
  trap "umount -l '$rootfs/proc' '$rootfs/sys' 2>/dev/null || true; rm -rf --one-file-system '$rootfs'" EXIT
  if ! debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,python3-pip \
      "$SUITE" "$rootfs" "$main" >"$CACHE/debootstrap.log" 2>&1; then
    tail -n 30 "$CACHE/debootstrap.log" >&2
    hl_die "debootstrap failed (log: $CACHE/debootstrap.log)"
  fi
  {
    echo "deb $main $SUITE main"
    echo "deb $main $SUITE-updates main"
    if [ "$sec" != "-" ]; then echo "deb $sec $SUITE-security main"; fi
  } >"$rootfs/etc/apt/sources.list"
  # The machine's extra CAs (a TLS-intercepting egress proxy, a company CA) so that pip and
  # apt inside builds on this base trust what the machine trusts.
  for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] && cp "$crt" "$rootfs/usr/local/share/ca-certificates/"
  done
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || hl_die "update-ca-certificates failed in the base"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
    "$rootfs"/tmp/* "$rootfs"/root/.cache
  tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL hotlap.key=$key" \
    --change 'CMD ["/bin/bash"]' \
    - "$BASE_IMAGE" >/dev/null
  umount -l "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
  rm -rf --one-file-system "$rootfs"
  trap - EXIT
  hl_log "built $BASE_IMAGE in $((SECONDS - t))s"
}

# ------------------------------------------------------------------ redis and S3 stand-ins
build_simple() { # NAME IMAGE DOCKERFILE
  local name="$1" image="$2" dockerfile="$3" key t=$SECONDS
  key="$(cat "$dockerfile" <(image_id "$BASE_IMAGE") | sha256sum | cut -c1-16)"
  if up_to_date "$image" "$key"; then
    hl_log "$image is up to date"
    return 0
  fi
  hl_log "building $image"
  docker_build "$name" -f "$dockerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "hotlap.key=$key" -t "$image" "$(dirname "$dockerfile")"
  hl_log "built $image in $((SECONDS - t))s"
}

# ------------------------------------------------------------------------------ app image
torch_pin() {
  "$(hl_python)" - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for d in deps:
    m = re.fullmatch(r"\s*torch\s*==\s*([0-9][^\s;,]*)\s*", d)
    if m:
        print(m.group(1))
PY
}

ensure_torch_wheel() {
  local version="$1" py arch
  compgen -G "$WHEELS/torch-${version}[+-]*.whl" >/dev/null && return 0
  py="$(hl_pip_python)" || hl_die "no Python with pip to download torch with"
  arch="$(uname -m)"
  hl_log "pip download torch==$version (CPython 3.11, $arch) into infra/wheels/"
  hl_pip "$py" download --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform "manylinux_2_28_$arch" --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" \
    -d "$WHEELS" "torch==$version" || hl_die "could not get a torch==$version wheel"
  compgen -G "$WHEELS/torch-${version}+cpu*.whl" >/dev/null \
    || hl_log "warning: the torch wheel in infra/wheels/ is not a +cpu build: $(ls "$WHEELS"/torch-* 2>/dev/null)"
}

source_key() {
  local files
  files="$(find pyproject.toml README.md LICENSE* NOTICE* shared simulator trainer hotlap infra/Dockerfile infra/torch-requirements-cpu.txt infra/torch-requirements-cuda.txt .dockerignore \
    -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' 2>/dev/null | LC_ALL=C sort)"
  { printf '%s\n' "$files" | tr '\n' '\0' | xargs -0 sha256sum; find "$WHEELS" -name '*.whl' -printf '%f %s\n' | sort; image_id "$BASE_IMAGE"; } \
    | sha256sum | cut -c1-16
}

build_app() {
  local t=$SECONDS version key
  version="$(torch_pin)"
  [ -n "$version" ] || hl_die "pyproject.toml pins no torch==VERSION"
  ensure_torch_wheel "$version"
  key="$(source_key)"
  if up_to_date "$APP_IMAGE" "$key"; then
    hl_log "$APP_IMAGE is up to date"
    return 0
  fi
  hl_log "building $APP_IMAGE (torch $version from infra/wheels/)"
  # The dependency stage gets a tag of its own, so pruning dangling images keeps it as the
  # cache that makes a rebuild after a code change take seconds.
  docker_build app-deps -f infra/Dockerfile --target deps --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg TORCH_INDEX_URL= -t "$APP_DEPS_IMAGE" .
  docker_build app -f infra/Dockerfile --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg TORCH_INDEX_URL= \
    --label "hotlap.key=$key" -t "$APP_IMAGE" .
  hl_log "built $APP_IMAGE in $((SECONDS - t))s ($(docker image inspect -f '{{.Size}}' "$APP_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
}

if wanted base; then build_base; fi
[ -n "$(image_id "$BASE_IMAGE")" ] || hl_die "$BASE_IMAGE is missing: build it first (no argument builds all)"
# redis and s3 (mostly downloads) build in the background while app (mostly CPU and disk) builds.
bg=()
if wanted redis; then build_simple redis "$REDIS_IMAGE" infra/offline/redis.Dockerfile & bg+=("$!"); fi
if wanted s3; then build_simple s3 "$S3_IMAGE" infra/offline/s3.Dockerfile & bg+=("$!"); fi
if wanted app; then build_app; fi
failed=0
for pid in "${bg[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || hl_die "an image failed to build (see above)"

# Superseded builds leave dangling layers behind: drop them (named images stay).
docker image prune -f >/dev/null 2>&1 || true
hl_log "offline images ready in $((SECONDS - T0))s"
