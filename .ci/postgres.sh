#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages if needed and starts a throwaway server for the
# tests on 127.0.0.1:${PGPORT:-55432}, owned by the postgres user, with password auth.
# Prints the server URL (no database name) that the tests take as SWITCHBOARD_TEST_POSTGRES.
set -euo pipefail
port="${PGPORT:-55432}"
root="${SWITCHBOARD_PG_ROOT:-/tmp/switchboard-ci-postgres}"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
if ! "$bin/pg_isready" -h 127.0.0.1 -p "$port" -q; then
    rm -rf "$root"
    mkdir -p "$root"
    chown postgres:postgres "$root"
    echo "switchboard" > "$root/pwfile"
    chown postgres "$root/pwfile"
    su postgres -c "$bin/initdb -D $root/data -U postgres --pwfile=$root/pwfile -A scram-sha-256" >&2
    su postgres -c "$bin/pg_ctl -D $root/data -l $root/log -w -o '-p $port -k $root -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on' start" >&2
fi
echo "postgres://postgres:switchboard@127.0.0.1:$port"
