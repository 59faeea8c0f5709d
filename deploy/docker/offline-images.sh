#!/usr/bin/env bash
# Builds, with no container registry, the images that Dockerfile and docker-compose.yml name, so
# that the same docker-compose.yml runs unchanged on an air-gapped Docker host:
#
#   debian:bookworm-slim   a `debootstrap --variant=minbase bookworm` root (+ ca-certificates, curl),
#                          slimmed like the official image, loaded with `docker import`
#   postgres:15-bookworm   that root + Debian's postgresql-15, with an entrypoint that honours the
#                          official image's POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB / PGDATA
#                          and their *_FILE forms (deploy/docker/postgres/), pg_isready on PATH, and
#                          the official image's postgres user (uid and gid 999)
#   haproxy:2.6-bookworm   that root + Debian's haproxy (2.6), run like the official image: user
#                          haproxy (uid and gid 99), `haproxy -W -db -f /usr/local/etc/haproxy/haproxy.cfg`
#                          (deploy/docker/haproxy/; the configuration is mounted at run time)
#   switchboard:latest     `cargo build --release --locked` on this host, the binaries put on the
#                          debian image above by deploy/docker/Dockerfile.prebuilt (no rust image)
#
# Only a Debian package mirror is needed (the one this host's apt uses, or $DEBIAN_MIRROR).
# Idempotent: an image that exists is kept unless --rebuild; debootstrapped roots are cached as
# tarballs under ${SWITCHBOARD_OFFLINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-offline}.
# Runs unattended (CI=true, no stdin). Needs root (or passwordless sudo) for debootstrap/chroot.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: deploy/docker/offline-images.sh [options]

  --only LIST       build only these of: debian,postgres,haproxy,switchboard (comma-separated;
                    default all)
  --rebuild         rebuild the selected images even if they exist (cached roots are reused)
  --fresh           also throw away the cached roots and debootstrap again (implies --rebuild)
  --pg-via WAY      how postgres gets its packages: chroot (default: apt-get in a chroot on this
                    host, needs no network inside containers) or docker (apt-get inside
                    `docker build` FROM debian:bookworm-slim, needs network in build containers)
  --no-cargo        don't run cargo; use the release binaries already in the target directory
  -h, --help        this text

environment: SWITCHBOARD_VERSION (tag of the switchboard image, default latest),
  DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR (default: what this host's apt sources use),
  SWITCHBOARD_OFFLINE_CACHE (cache directory), CARGO (cargo command).
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${SWITCHBOARD_OFFLINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-offline}
suite=bookworm
pg_major=15
debian_image=debian:bookworm-slim
postgres_image=postgres:${pg_major}-bookworm
postgres_root_image=switchboard-offline/postgres-root:${pg_major}-bookworm
# The official image's ids: the secrets docker-compose.yml hands PostgreSQL are owned by uid 999.
pg_uid=999
haproxy_version=2.6
haproxy_image=haproxy:${haproxy_version}-bookworm
haproxy_root_image=switchboard-offline/haproxy-root:${haproxy_version}-bookworm
haproxy_uid=99
switchboard_image=switchboard:${SWITCHBOARD_VERSION:-latest}
# The binaries the image must contain: every node, and the `switchboard` command (docker-compose.yml
# runs `switchboard secrets init`, and operators `switchboard admin-token`).
required_bins="switchboard switchboard-node switchboard-http switchboard-database switchboard-log switchboard-reporting switchboard-analytics"

only=debian,postgres,haproxy,switchboard
rebuild=0
fresh=0
pg_via=chroot
run_cargo=1
while [ $# -gt 0 ]; do
    case "$1" in
        --only) only=${2:?--only needs a list}; shift 2 ;;
        --only=*) only=${1#--only=}; shift ;;
        --rebuild) rebuild=1; shift ;;
        --fresh) fresh=1; rebuild=1; shift ;;
        --pg-via) pg_via=${2:?--pg-via needs chroot or docker}; shift 2 ;;
        --pg-via=*) pg_via=${1#--pg-via=}; shift ;;
        --no-cargo) run_cargo=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "offline-images: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$pg_via" in chroot|docker) ;; *) echo "offline-images: --pg-via must be chroot or docker" >&2; exit 2 ;; esac
for want in ${only//,/ }; do
    case "$want" in debian|postgres|haproxy|switchboard) ;; *) echo "offline-images: unknown image '$want' in --only" >&2; exit 2 ;; esac
done
wanted() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

export DEBIAN_FRONTEND=noninteractive
exec </dev/null

log() { printf '[offline-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    sudo=(false)  # only needed when a root has to be built; checked there
fi
as_root() {
    [ "${sudo[0]:-}" != false ] || die "building a root filesystem needs root or passwordless sudo"
    "${sudo[@]}" "$@"
}

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed)"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

mkdir -p "$cache"
# One run at a time per cache directory.
exec 9>"$cache/.lock"
if command -v flock >/dev/null; then
    flock -w 1800 9 || die "another offline-images.sh holds $cache/.lock"
fi

work=""
mounted=()
unmount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        as_root umount -l "${mounted[$i]}" 2>/dev/null || true
    done
    mounted=()
}
cleanup() {
    unmount_all
    if [ -n "$work" ] && [ -d "$work" ]; then
        as_root rm -rf --one-file-system "$work" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    command -v apt-get >/dev/null || die "debootstrap is missing and there is no apt-get to install it"
    log "installing debootstrap"
    as_root apt-get install -y -q --no-install-recommends debootstrap >/dev/null 2>&1 \
        || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q --no-install-recommends debootstrap >/dev/null; } \
        || die "could not install debootstrap with apt-get"
}

# The Debian mirror this host's apt uses for $suite (deb822 .sources or one-line sources.list),
# or nothing, in which case debootstrap uses its built-in default.
host_apt_uri() {
    local wanted_suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v s="$wanted_suite" '
            function flush() { if (isdeb && hit && uri != "") { print uri; found = 1; exit } isdeb = 0; hit = 0; uri = "" }
            /^[[:space:]]*$/ { flush(); next }
            /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
            END { if (!found) flush() }' "$f" | head -n1 | grep . && return 0
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v s="$wanted_suite" '
            $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == s) { print $i; exit } }' "$f" \
            | head -n1 | grep . && return 0
    done
    return 0
}

# Runs a command inside a root with /proc, /dev and the host's DNS set up.
in_root() {
    local root=$1; shift
    as_root env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
        chroot "$root" "$@"
}
enter_root() {
    local root=$1
    as_root mkdir -p "$root/proc" "$root/dev" "$root/etc"
    as_root mount -t proc proc "$root/proc"; mounted+=("$root/proc")
    as_root mount --bind /dev "$root/dev"; mounted+=("$root/dev")
    as_root cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    # No daemon may start while packages are installed.
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$root/usr/sbin/policy-rc.d" >/dev/null
    as_root chmod 0755 "$root/usr/sbin/policy-rc.d"
}
leave_root() {
    local root=$1
    as_root rm -f "$root/usr/sbin/policy-rc.d"
    unmount_all
    # Docker provides these at run time.
    as_root sh -c ': > "$1/etc/resolv.conf"; : > "$1/etc/hostname"; rm -f "$1/etc/machine-id"; : > "$1/etc/machine-id"' sh "$root"
}
apt_clean_root() {
    local root=$1
    in_root "$root" apt-get clean
    as_root sh -c 'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/tmp/* "$1"/var/tmp/*' sh "$root"
}

# Packs a root into a tarball (written atomically).
pack_root() {
    local root=$1 tarball=$2
    as_root tar --numeric-owner --xattrs --one-file-system -C "$root" \
        --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -cf "$tarball.part" .
    as_root chown "$(id -u):$(id -g)" "$tarball.part"
    mv -f "$tarball.part" "$tarball"
}

debian_tar=$cache/debian-$suite-slim.tar
postgres_tar=$cache/postgres-$pg_major-$suite-uid$pg_uid.tar
haproxy_tar=$cache/haproxy-$haproxy_version-$suite-uid$haproxy_uid.tar

build_debian_root() {
    ensure_debootstrap
    local mirror security root
    mirror=${DEBIAN_MIRROR:-$(host_apt_uri "$suite")}
    work=$(mktemp -d "$cache/work.XXXXXX")
    root=$work/root
    log "debootstrap --variant=minbase $suite${mirror:+ from $mirror} (a few minutes)"
    local start=$SECONDS
    # shellcheck disable=SC2086  # an empty mirror lets debootstrap use its default
    as_root debootstrap --variant=minbase --include=ca-certificates,curl \
        "$suite" "$root" $mirror >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    log "debootstrap done in $((SECONDS - start)) s"
    # The mirror debootstrap used (its default, if we gave none) and the matching security archive.
    mirror=$(awk '$1 == "deb" { print $2; exit }' "$root/etc/apt/sources.list")
    security=${DEBIAN_SECURITY_MIRROR:-$(host_apt_uri "$suite-security")}
    if [ -z "$security" ]; then
        case "$mirror" in */debian|*/debian/) security=${mirror%/}-security ;; esac
    fi
    as_root tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
${security:+
Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg}
EOF
    as_root rm -f "$root/etc/apt/sources.list"
    # Slim like the official image: no docs, man pages or translations, apt keeps no caches.
    as_root tee "$root/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    as_root tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'Acquire::Languages "none";\n' | as_root tee "$root/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
    printf 'Acquire::GzipIndexes "true";\n' | as_root tee "$root/etc/apt/apt.conf.d/docker-gzip-indexes" >/dev/null
    printf 'Apt::AutoRemove::SuggestsImportant "false";\n' | as_root tee "$root/etc/apt/apt.conf.d/docker-autoremove-suggests" >/dev/null
    enter_root "$root"
    log "applying $suite-updates and security updates"
    in_root "$root" apt-get update -q >"$work/apt.log" 2>&1 \
        && in_root "$root" apt-get -y -q -o Dpkg::Options::=--force-confdef dist-upgrade >>"$work/apt.log" 2>&1 \
        || { tail -n 30 "$work/apt.log" >&2; die "apt-get in the debian root failed (log above)"; }
    apt_clean_root "$root"
    leave_root "$root"
    as_root sh -c 'cd "$1" && find usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete; find usr/share/doc -mindepth 1 -type d -empty -delete; rm -rf usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/groff/* usr/share/lintian/*' sh "$root"
    pack_root "$root" "$debian_tar"
    cleanup
    work=""
    log "cached the debian root: $debian_tar ($(du -h "$debian_tar" | cut -f1))"
}

# A working copy of the cached debian root, entered for chroot work: sets `work` and the caller's
# `root`.
open_debian_copy() {
    work=$(mktemp -d "$cache/work.XXXXXX")
    root=$work/root
    as_root mkdir -p "$root"
    as_root tar --numeric-owner --xattrs -xpf "$debian_tar" -C "$root"
    enter_root "$root"
}

# Cleans the copy in `root`, caches it as the tarball $1 and throws the working copy away.
close_debian_copy() {
    local tarball=$1 what=$2
    apt_clean_root "$root"
    leave_root "$root"
    pack_root "$root" "$tarball"
    cleanup
    work=""
    log "cached the $what root: $tarball ($(du -h "$tarball" | cut -f1))"
}

build_postgres_root() {
    local root
    open_debian_copy
    log "installing postgresql-$pg_major into a copy of the debian root"
    {
        # The official image's user, created before the package would pick another id.
        in_root "$root" groupadd --system --gid "$pg_uid" postgres \
        && in_root "$root" useradd --system --uid "$pg_uid" --gid postgres \
            --home-dir /var/lib/postgresql --shell /bin/bash postgres \
        && in_root "$root" apt-get update -q \
        && in_root "$root" apt-get install -y -q --no-install-recommends postgresql-common \
        && in_root "$root" sed -ri 's/^#?[[:space:]]*(create_main_cluster)[[:space:]]*=.*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
        && in_root "$root" apt-get install -y -q --no-install-recommends "postgresql-$pg_major"
    } >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; die "installing postgresql failed (log above)"; }
    close_debian_copy "$postgres_tar" postgres
}

build_haproxy_root() {
    local root
    open_debian_copy
    log "installing haproxy into a copy of the debian root"
    # The package makes its user with the next free system id; the official image's is 99.
    {
        in_root "$root" apt-get update -q \
        && in_root "$root" apt-get install -y -q --no-install-recommends haproxy \
        && in_root "$root" haproxy -v \
        && in_root "$root" usermod --uid "$haproxy_uid" haproxy \
        && in_root "$root" groupmod --gid "$haproxy_uid" haproxy \
        && in_root "$root" chown -R haproxy:haproxy /var/lib/haproxy
    } >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; die "installing haproxy failed (log above)"; }
    grep -q "^HAProxy version $haproxy_version\." "$work/apt.log" \
        || die "Debian $suite's haproxy is not $haproxy_version: $(grep -m1 '^HAProxy version' "$work/apt.log")"
    close_debian_copy "$haproxy_tar" haproxy
}

import_tar() {
    local tarball=$1 image=$2 what=$3
    docker import \
        --change 'CMD ["bash"]' \
        --change "LABEL org.opencontainers.image.description=\"$what (local build by deploy/docker/offline-images.sh)\"" \
        --message "switchboard offline-images.sh: $what" \
        "$tarball" "$image" >/dev/null
}

build_debian() {
    if image_exists "$debian_image" && [ "$rebuild" -eq 0 ]; then
        log "$debian_image exists; keeping it (--rebuild to replace)"
        return 0
    fi
    [ "$fresh" -eq 1 ] && rm -f "$debian_tar"
    [ -s "$debian_tar" ] || build_debian_root
    log "importing $debian_image"
    import_tar "$debian_tar" "$debian_image" "Debian $suite minbase with ca-certificates and curl"
}

# The uid of a user in an image (empty if it has none).
image_uid() { docker run --rm --entrypoint id "$1" -u "$2" 2>/dev/null; }

build_postgres() {
    if image_exists "$postgres_image" && [ "$rebuild" -eq 0 ]; then
        if [ "$(image_uid "$postgres_image" postgres)" = "$pg_uid" ]; then
            log "$postgres_image exists; keeping it (--rebuild to replace)"
            return 0
        fi
        log "$postgres_image exists but its postgres user is not uid $pg_uid; rebuilding it"
    fi
    local base
    if [ "$pg_via" = chroot ]; then
        [ "$fresh" -eq 1 ] && rm -f "$postgres_tar"
        if [ ! -s "$postgres_tar" ]; then
            [ -s "$debian_tar" ] || build_debian_root
            build_postgres_root
        fi
        log "importing the postgres root"
        import_tar "$postgres_tar" "$postgres_root_image" "Debian $suite with postgresql-$pg_major"
        base=$postgres_root_image
    else
        image_exists "$debian_image" || die "$debian_image is needed first (--only debian,postgres)"
        base=$debian_image
    fi
    log "building $postgres_image from $base"
    local buildlog
    buildlog=$(mktemp "$cache/build.XXXXXX")
    docker build --build-arg "BASE=$base" --build-arg "PG_MAJOR=$pg_major" \
        -t "$postgres_image" -f "$here/postgres/Dockerfile" "$here/postgres" >"$buildlog" 2>&1 \
        || { tail -n 30 "$buildlog" >&2; rm -f "$buildlog"; die "docker build of $postgres_image failed (log above)"; }
    rm -f "$buildlog"
}

build_haproxy() {
    if image_exists "$haproxy_image" && [ "$rebuild" -eq 0 ]; then
        log "$haproxy_image exists; keeping it (--rebuild to replace)"
        return 0
    fi
    [ "$fresh" -eq 1 ] && rm -f "$haproxy_tar"
    if [ ! -s "$haproxy_tar" ]; then
        [ -s "$debian_tar" ] || build_debian_root
        build_haproxy_root
    fi
    log "importing the haproxy root"
    import_tar "$haproxy_tar" "$haproxy_root_image" "Debian $suite with haproxy $haproxy_version"
    log "building $haproxy_image from $haproxy_root_image"
    local buildlog
    buildlog=$(mktemp "$cache/build.XXXXXX")
    docker build --build-arg "BASE=$haproxy_root_image" \
        -t "$haproxy_image" -f "$here/haproxy/Dockerfile" "$here/haproxy" >"$buildlog" 2>&1 \
        || { tail -n 30 "$buildlog" >&2; rm -f "$buildlog"; die "docker build of $haproxy_image failed (log above)"; }
    rm -f "$buildlog"
}

cargo_target_dir() {
    "${CARGO:-cargo}" metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

build_switchboard() {
    if image_exists "$switchboard_image" && [ "$rebuild" -eq 0 ]; then
        log "$switchboard_image exists; keeping it (--rebuild to replace)"
        return 0
    fi
    image_exists "$debian_image" || die "$debian_image is needed first (--only debian,switchboard)"
    if [ "$run_cargo" -eq 1 ]; then
        log "cargo build --release --locked"
        (cd "$repo" && "${CARGO:-cargo}" build --release --locked) || die "cargo build failed"
    fi
    local release ctx bin
    release=$(cargo_target_dir)/release
    ctx=$(mktemp -d "$cache/context.XXXXXX")
    mkdir -p "$ctx/bin"
    for bin in $required_bins; do
        [ -x "$release/$bin" ] || { rm -rf "$ctx"; die "$release/$bin is missing (cargo build --release)"; }
        cp "$release/$bin" "$ctx/bin/"
    done
    cp "$here/Dockerfile.prebuilt" "$ctx/Dockerfile"
    log "building $switchboard_image from $debian_image with $(find "$ctx/bin" -type f -printf '%f ' | sed 's/ $//')"
    docker build -q --build-arg "BASE=$debian_image" \
        --label "org.opencontainers.image.revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)" \
        -t "$switchboard_image" "$ctx" >/dev/null || { rm -rf "$ctx"; die "docker build of $switchboard_image failed"; }
    rm -rf "$ctx"
}

started=$SECONDS
wanted debian && build_debian
wanted postgres && build_postgres
wanted haproxy && build_haproxy
wanted switchboard && build_switchboard
log "done in $((SECONDS - started)) s: $(for i in "$debian_image" "$postgres_image" "$haproxy_image" "$switchboard_image"; do image_exists "$i" && printf '%s ' "$i"; done)"
