#!/usr/bin/env bash
# Browser tests of the web chat client and the dashboard: headless Debian chromium driven through
# chromium-driver by Python's selenium, against a real cluster.
#
#   bash tests/browser/run.sh                       starts `switchboard up` on free ports (SQLite
#                                                   in a temporary directory) and stops it after
#   bash tests/browser/run.sh --url http://127.0.0.1:8080 --admin-token-file F [--node-control CMD]
#                                                   runs against a cluster already running there
#                                                   (e.g. compose behind its load balancer); the
#                                                   tests that kill a node run only with
#                                                   --node-control: CMD is run as `CMD kill NODE`
#                                                   and `CMD restart NODE` (compose-e2e.sh passes
#                                                   one that docker kills and starts the node's
#                                                   container), and are skipped without it
#
# Installs what is missing (chromium, chromium-driver, a venv with selenium under target/).
# Screenshots go to target/browser-artifacts/ (--artifacts DIR elsewhere). The last line is
# 'N passed, M failed'; the exit status is non-zero when a test failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

url=""
token_file=""
node_control=""
artifacts="$root/target/browser-artifacts"
while [ $# -gt 0 ]; do
    case "$1" in
        --url) url="$2"; shift 2 ;;
        --admin-token-file) token_file="$2"; shift 2 ;;
        --node-control) node_control="$2"; shift 2 ;;
        --artifacts) artifacts="$2"; shift 2 ;;
        *) echo "unknown argument: $1 (use --url URL --admin-token-file FILE [--node-control CMD])" >&2; exit 2 ;;
    esac
done
if [ -n "$url" ] && [ -z "$token_file" ]; then
    echo "--url needs --admin-token-file" >&2
    exit 2
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver from Debian's packages" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2
fi

venv="$root/target/browser-venv"
if ! "$venv/bin/python" -c 'import selenium' >/dev/null 2>&1; then
    echo "creating $venv with selenium" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q 'selenium>=4.20' >&2
fi

mkdir -p "$artifacts"

# shellcheck source=tests/switchboard-up.sh
source "$root/tests/switchboard-up.sh"
data_dir=""
cleanup() {
    up_stop
    if [ -n "$data_dir" ]; then rm -rf "$data_dir"; fi
}
trap cleanup EXIT

if [ -z "$url" ]; then
    data_dir=$(mktemp -d)
    if ! up_start "$artifacts/switchboard-up.log" "$data_dir"; then
        echo "0 passed, 1 failed"
        exit 1
    fi
    url="$up_url"
    token_file="$data_dir/admin-token"
fi

args=(--url "$url" --admin-token-file "$token_file" --artifacts "$artifacts")
if [ -n "$up_pid" ]; then args+=(--up-pid "$up_pid"); fi
if [ -n "$node_control" ]; then args+=(--node-control "$node_control"); fi
set +e
"$venv/bin/python" "$root/tests/browser/test_web.py" "${args[@]}"
status=$?
set -e
exit "$status"
