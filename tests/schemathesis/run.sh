#!/usr/bin/env bash
# Schemathesis against the chat API's own OpenAPI document (/openapi.json): generated requests,
# valid and invalid, to every operation, and stateful sequences along the document's links, with
# every response checked against the document (status codes, content types, schemas) and for
# server errors. A 5xx or a response the document does not describe fails the run.
#
#   bash tests/schemathesis/run.sh            starts `switchboard up` on free ports (SQLite in a
#                                             temporary directory) and stops it after
#   bash tests/schemathesis/run.sh --url http://127.0.0.1:8080 --admin-token-file F
#                                             runs against a cluster already running there
#
# Three runs, one per credential: a registered user's token for the user operations, the admin
# token for /v1/admin, and a throwaway user's token for logout (which ends the session it is
# called with). The live streams (text/event-stream that never ends) are left out: the tests in
# services/http/tests cover them. `switchboard up` here runs with the per-user and login rate
# limits off, so that generated traffic is never answered 429 instead of being checked (the
# limits have tests of their own in services/http/tests/bad_input.rs).
#
# Installs Schemathesis (pinned) into a venv under target/. The seed is fixed, so a run replays.
# The last line is 'schemathesis: N passed, M failed' (N: generated test cases, M: failures); the
# exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

SCHEMATHESIS_VERSION=4.32.5
SEED=20261204
# Examples per operation and phase; with the coverage and stateful phases this makes well over
# 2,000 test cases.
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-60}

url=""
token_file=""
while [ $# -gt 0 ]; do
    case "$1" in
        --url) url="$2"; shift 2 ;;
        --admin-token-file) token_file="$2"; shift 2 ;;
        *) echo "unknown argument: $1 (use --url URL --admin-token-file FILE)" >&2; exit 2 ;;
    esac
done
if [ -n "$url" ] && [ -z "$token_file" ]; then
    echo "--url needs --admin-token-file" >&2
    exit 2
fi

venv="$root/target/schemathesis-venv"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "creating $venv with schemathesis $SCHEMATHESIS_VERSION" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi

# shellcheck source=tests/switchboard-up.sh
source "$root/tests/switchboard-up.sh"
work=$(mktemp -d)
cleanup() {
    up_stop
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$url" ]; then
    if ! SWITCHBOARD_RATE_LIMIT=0 SWITCHBOARD_LOGIN_RATE_LIMIT=0 \
        up_start "$work/switchboard-up.log" "$work/data"; then
        echo "schemathesis: 0 passed, 1 failed"
        exit 1
    fi
    url="$up_url"
    token_file="$work/data/admin-token"
fi

# A fresh user's bearer token (the username is new on every run, so a cluster can be reused).
register() {
    python3 - "$url" "$1" <<'PY'
import json, secrets, sys, urllib.request
url, prefix = sys.argv[1], sys.argv[2]
body = json.dumps({"username": f"{prefix}-{secrets.token_hex(4)}",
                   "password": secrets.token_hex(16)}).encode()
request = urllib.request.Request(url + "/v1/auth/register", data=body,
                                 headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(request))["token"])
PY
}
printf 'Authorization: Bearer %s' "$(register fuzzer)" >"$work/user-header"
printf 'Authorization: Bearer %s' "$(cat "$token_file")" >"$work/admin-header"
printf 'Authorization: Bearer %s' "$(register leaver)" >"$work/leaver-header"

streams='/events$|/stream$'
passed=0
failed=0
# run NAME HEADER-FILE [selection options...]: one Schemathesis run; adds to the totals.
run() {
    local name="$1" header_file="$2"
    shift 2
    local out="$work/$name.txt"
    echo "== schemathesis: $name" >&2
    set +e
    "$venv/bin/st" --config-file "$root/tests/schemathesis/schemathesis.toml" run "$url/openapi.json" \
        --header "$(cat "$header_file")" \
        --checks all \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "$EXAMPLES" \
        --seed "$SEED" \
        --request-timeout 10 \
        --workers 1 \
        --no-color \
        --output-sanitize true \
        "$@" >"$out" 2>&1
    local status=$?
    set -e
    # Failures and the summary; the headers (tokens) are sanitised by Schemathesis.
    sed -n '/^=* FAILURES =*$/,$p' "$out" | tail -120 >&2
    local cases failures
    cases=$(grep -oE '[0-9]+ generated' "$out" | head -1 | grep -oE '[0-9]+' || echo 0)
    failures=$(grep -oE '[0-9]+ unique failures' "$out" | head -1 | grep -oE '[0-9]+' || true)
    if [ -z "$failures" ]; then
        if [ "$status" -eq 0 ]; then failures=0; else failures=1; tail -40 "$out" >&2; fi
    fi
    echo "   $name: $cases test cases, $failures failures" >&2
    passed=$((passed + cases - failures))
    failed=$((failed + failures))
}

run user "$work/user-header" --exclude-path-regex "^/v1/admin|^/v1/auth/logout\$|$streams"
run admin "$work/admin-header" --include-path-regex '^/v1/admin' --exclude-path-regex "$streams"
run logout "$work/leaver-header" --include-path-regex '^/v1/auth/logout$'

echo "schemathesis: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
