#!/usr/bin/env bash
# Sourced by the scripts that test a whole running cluster (tests/browser/run.sh,
# tests/schemathesis/run.sh) when they are not given one: builds the binaries and runs
# `switchboard up` on free ports, on SQLite in a data directory of the caller's, in the
# background.
#
#   up_start LOG DATA_DIR   starts it (with the caller's environment, so settings can be given as
#                           `VAR=value up_start ...`), waits up to 120 s for "Switchboard is up:",
#                           then sets `up_url` to the first http node's URL and `up_pid`; returns 1,
#                           with the log's last lines on stderr, if it did not come up
#   up_stop                 stops it (SIGTERM, and waits), if it runs

up_pid=""
up_url=""

up_start() {
    local log="$1" data_dir="$2" root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    # The binaries `up` runs are built beside it; a debug build is what the tests build too.
    # Explicit: `set -e` does not reach a function called as an `if` condition.
    cargo build --workspace --bins --locked >&2 || return 1
    : >"$log"
    "$root/target/debug/switchboard" up --http 127.0.0.1:0 --data-dir "$data_dir" >"$log" 2>&1 &
    up_pid=$!
    local deadline=$(( $(date +%s) + 120 ))
    until grep -q "Switchboard is up:" "$log"; do
        if ! kill -0 "$up_pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
            echo "switchboard up did not come up:" >&2
            tail -50 "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    # The first URL after "Switchboard is up:" is the first http node's.
    up_url=$(sed -n '/Switchboard is up:/,$p' "$log" | grep -o 'http://[0-9.:]*' | head -1)
}

up_stop() {
    if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
        kill -TERM "$up_pid" 2>/dev/null || true
        wait "$up_pid" 2>/dev/null || true
    fi
}
