#!/usr/bin/env bash
# End-to-end test of docker-compose.yml on this Docker host, with no registry, as a new user runs
# it: no env file at all (the API port, a free one, comes from the environment).
#   Compose v2 (install-compose.sh) and the images (offline-images.sh); `docker compose up`;
#   /readyz through the balancer within 60 s; the generated secrets (files with tight modes, kept
#   across a down and up, in no `docker compose config` output and no container's environment);
#   the chat API walkthrough; the browser tests (tests/browser/run.sh) through the balancer, nodes
#   killed with `docker kill` and started again with `docker start`; every service scaled (http=3 database=3 log=2 reporting=2
#   analytics=2), each replica up in /v1/admin/cluster; requests spread over every http replica
#   (X-Served-By); an http replica killed while a client posts with Idempotency-Key (retrying on
#   connection errors and 502/503/504: nothing lost, nothing stored twice); SSE clients cut off by
#   the death of their replica resuming with Last-Event-ID through the balancer, missing nothing;
#   a database node killed under keyed posts; the analytics container cut off the network and
#   healed; no secret and no terminal escape code in `docker compose logs`; `down -v`.
# The stack is always taken down (down -v) on exit. Prints `N passed, M failed` last and exits
# non-zero if any step failed. Runs unattended (CI=true, no stdin).
set -uo pipefail

usage() {
    cat <<'EOF'
usage: deploy/docker/compose-e2e.sh [options]

  --infra-only      stop after the infrastructure steps: images, config, up, /readyz, every
                    container healthy, the secrets, http /healthz (then down -v)
  --http-optional   report http's health check as skipped rather than failed when it does not
                    pass (for a switchboard-http that does not serve HTTP yet)
  --no-build        use the images that exist; don't run install-compose.sh or offline-images.sh
  --keep            leave the stack running at the end (no down -v) for inspection
  --project NAME    compose project name (default switchboard-e2e)
  --api-only URL    no Docker: run only the chat API walkthrough against an http node (or the
                    balancer) already serving at URL (admin token from SWITCHBOARD_ADMIN_TOKEN)
  -h, --help        this text

environment: E2E_HEALTH_TIMEOUT (s, default 240), E2E_STEP_TIMEOUT (s, default 90),
  SWITCHBOARD_VERSION (image tag, default latest).
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
infra_only=0
http_optional=0
build=1
keep=0
project=switchboard-e2e
api_only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --infra-only) infra_only=1 ;;
        --http-optional) http_optional=1 ;;
        --no-build) build=0 ;;
        --keep) keep=1 ;;
        --project) project=${2:?--project needs a name}; shift ;;
        --project=*) project=${1#--project=} ;;
        --api-only) api_only=${2:?--api-only needs a URL}; shift ;;
        --api-only=*) api_only=${1#--api-only=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compose-e2e: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
exec </dev/null

health_timeout=${E2E_HEALTH_TIMEOUT:-240}
step_timeout=${E2E_STEP_TIMEOUT:-90}
services=(postgres http database log reporting analytics)
node_services=(http database log reporting analytics)
# The scale of the scaling step, and how many replicas of each service it then expects.
scale_args=(--scale http=3 --scale database=3 --scale log=2 --scale reporting=2 --scale analytics=2)
declare -A scaled=([http]=3 [database]=3 [log]=2 [reporting]=2 [analytics]=2)

api_only_admin_token=${SWITCHBOARD_ADMIN_TOKEN:-}
# A new user's environment: none of the compose file's variables is set (the secrets are
# generated), except the published port; no .env file is read (COMPOSE_DISABLE_ENV_FILE).
unset SWITCHBOARD_COOKIE SWITCHBOARD_COOKIE_FILE SWITCHBOARD_ADMIN_TOKEN POSTGRES_USER \
    POSTGRES_PASSWORD POSTGRES_DB SWITCHBOARD_HTTP_PORT COMPOSE_PROJECT_NAME COMPOSE_FILE \
    COMPOSE_PROFILES DATABASE_URL SWITCHBOARD_LOG_FORMAT COMPOSE_ENV_FILES
export COMPOSE_DISABLE_ENV_FILE=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-e2e.XXXXXX")
chmod 700 "$tmp"
base=""
passed=0
failed=0
skipped=0
stack_up=0
bg_pids=()

log() { printf '[e2e] %s\n' "$*" >&2; }

compose() {
    docker compose -p "$project" -f "$repo/docker-compose.yml" "$@"
}

teardown() {
    local pid
    for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; done
    if [ "$stack_up" -eq 1 ] && [ "$keep" -eq 0 ]; then
        log "docker compose down -v"
        compose down -v --remove-orphans --timeout 20 >"$tmp/down.log" 2>&1 || cat "$tmp/down.log" >&2
        stack_up=0
    fi
    if [ "$keep" -eq 1 ] && [ "$stack_up" -eq 1 ]; then
        log "--keep: the stack is still up (project $project, SWITCHBOARD_HTTP_PORT=${SWITCHBOARD_HTTP_PORT:-}); scratch files in $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap teardown EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---- step runner -------------------------------------------------------------------------------
# A step function returns 0 (pass), 1 (fail) or 2 (skipped: a prerequisite is missing).
run_step() {
    local name=$1 fn=$2 rc started=$SECONDS
    log "--- $name"
    "$fn"
    rc=$?
    case "$rc" in
        0) passed=$((passed + 1)); printf 'ok      %-58s %4ss\n' "$name" $((SECONDS - started)) ;;
        2) skipped=$((skipped + 1)); printf 'skipped %-58s %4ss\n' "$name" $((SECONDS - started)) ;;
        *) failed=$((failed + 1)); printf 'FAILED  %-58s %4ss\n' "$name" $((SECONDS - started)) ;;
    esac
    return "$rc"
}
summary() {
    if [ "$skipped" -gt 0 ]; then
        printf '%d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
    else
        printf '%d passed, %d failed\n' "$passed" "$failed"
    fi
}
fail() { log "FAIL: $*"; return 1; }
skip() { log "skip: $*"; return 2; }
need() {
    local v
    for v in "$@"; do
        [ -n "${!v:-}" ] || { skip "needs $v from an earlier step"; return 2; }
    done
}

# Polls `"$@"` until it succeeds or `seconds` pass; the command itself does the checking.
wait_until() {
    local seconds=$1; shift
    local deadline=$((SECONDS + seconds))
    while :; do
        "$@" && return 0
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

random_hex() { python3 -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"; }

# ---- HTTP helpers ------------------------------------------------------------------------------
# api METHOD PATH [JSON-BODY] [AUTH-HEADER-FILE] [curl args...]: the status code in $status, the
# body in $tmp/body.
status=000
api() {
    local method=$1 path=$2 data=${3:-} auth=${4:-}
    shift $(($# < 4 ? $# : 4))
    local args=(-sS -o "$tmp/body" -w '%{http_code}' -X "$method" --max-time 15)
    [ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
    [ -n "$auth" ] && args+=(-H "@$auth")
    : >"$tmp/body"
    status=$(curl "${args[@]}" "$@" "$base$path" 2>"$tmp/curl.err") || status=000
}
# A value out of the JSON in $tmp/body: jget 'd["user"]["id"]' (strings raw, the rest as JSON).
jget() {
    python3 - "$1" "$tmp/body" <<'EOF' 2>/dev/null
import json, sys
d = json.load(open(sys.argv[2]))
v = eval(sys.argv[1], {"d": d})
print(v if isinstance(v, str) else json.dumps(v))
EOF
}
show_body() { log "HTTP $status: $(head -c 600 "$tmp/body" 2>/dev/null)"; }
# A Authorization header file for a bearer token (keeps tokens off command lines).
auth_file() { printf 'Authorization: Bearer %s\n' "$2" >"$tmp/$1.auth"; printf '%s' "$tmp/$1.auth"; }
json_str() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }

# ---- docker helpers ----------------------------------------------------------------------------
project_containers() {
    docker ps -a -q --filter "label=com.docker.compose.project=$project" ${1:+--filter "label=com.docker.compose.service=$1"}
}
# One line per container: SERVICE STATE HEALTH NAME
container_states() {
    local ids
    ids=$(project_containers)
    [ -n "$ids" ] || return 0
    # shellcheck disable=SC2086
    docker inspect --format '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.Name}}' $ids
}
# True when every listed service has at least one container and all its containers are healthy.
services_healthy() {
    local states service
    states=$(container_states)
    for service in "$@"; do
        awk -v s="$service" '$1 == s { n++; if ($3 != "healthy") bad++ } END { exit !(n > 0 && bad == 0) }' <<<"$states" || return 1
    done
}
healthy_count() {
    container_states | awk -v s="$1" '$1 == s && $3 == "healthy" { n++ } END { print n + 0 }'
}
diagnose() {
    log "container states:"
    container_states | sed 's/^/[e2e]   /' >&2
    local service
    for service in "$@"; do
        log "last log lines of $service:"
        compose logs --no-color --tail 25 "$service" 2>&1 | sed 's/^/[e2e]   /' >&2
    done
}

# ---- cluster helpers ---------------------------------------------------------------------------
cat >"$tmp/cluster.py" <<'EOF'
"""Questions about a GET /v1/admin/cluster answer: {"nodes": [{"name", "address", "state",
"services": [...], "groups": [...]}]}."""
import json, sys

def live(node):
    return str(node.get("state", "")).split(" ")[0] in ("self", "up")

nodes = json.load(open(sys.argv[1]))["nodes"]
question = sys.argv[2]
if question == "count":          # live nodes offering a service
    print(sum(1 for n in nodes if live(n) and sys.argv[3] in n.get("services", [])))
elif question == "services":     # every service some live node offers
    print(" ".join(sorted({s for n in nodes if live(n) for s in n.get("services", [])})))
elif question == "kinds":        # the kinds of live nodes (the part of each name before @)
    print(" ".join(sorted({str(n.get("name", "")).split("@")[0] for n in nodes if live(n)})))
elif question == "kind_count":   # live nodes of a kind
    print(sum(1 for n in nodes if live(n) and str(n.get("name", "")).split("@")[0] == sys.argv[3]))
elif question == "names":        # names of the live nodes of a kind
    print(" ".join(sorted(n["name"] for n in nodes if live(n) and str(n.get("name", "")).split("@")[0] == sys.argv[3])))
elif question == "answerer":     # the kind of node answering (state "self")
    print(" ".join(str(n.get("name", "")).split("@")[0] for n in nodes if n.get("state") == "self"))
elif question == "state":        # state of the node on a host (name ends @host, or address host:port)
    host = sys.argv[3]
    for n in nodes:
        if str(n.get("name", "")).endswith("@" + host) or str(n.get("address", "")).startswith(host + ":"):
            print(n.get("state", ""))
            break
    else:
        print("absent")
else:
    sys.exit("unknown question " + question)
EOF
admin_auth=""
show_cluster() { api GET /v1/admin/cluster "" "$admin_auth"; show_body; }
cluster() {  # cluster QUESTION [ARG]: asks /v1/admin/cluster, answers on stdout (run in $(...))
    api GET /v1/admin/cluster "" "$admin_auth"
    [ "$status" = 200 ] || return 1
    python3 "$tmp/cluster.py" "$tmp/body" "$@" 2>/dev/null
}

# ---- infrastructure steps ----------------------------------------------------------------------
step_compose_v2() {
    if [ "$build" -eq 1 ]; then
        "$here/install-compose.sh" || return 1
    fi
    docker compose version >/dev/null 2>&1 || fail "docker compose (v2) is not available"
}

step_images() {
    if [ "$build" -eq 1 ]; then
        "$here/offline-images.sh" --only debian,postgres,haproxy || return 1
        # The binaries change with every commit: rebuild the switchboard image from this tree
        # (cargo and the image's layers make this quick when nothing changed).
        "$here/offline-images.sh" --only switchboard --rebuild || return 1
    fi
    local image
    for image in debian:bookworm-slim postgres:15-bookworm haproxy:2.6-bookworm "switchboard:${SWITCHBOARD_VERSION:-latest}"; do
        docker image inspect "$image" >/dev/null 2>&1 || fail "image $image is missing" || return 1
    done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
step_config() {
    local port
    port=$(free_port)
    base=http://127.0.0.1:$port
    # The one variable the test sets, in the environment (there is no env file): a free port.
    export SWITCHBOARD_HTTP_PORT=127.0.0.1:$port
    compose config >"$tmp/config.yml" 2>"$tmp/config.err" \
        || { cat "$tmp/config.err" >&2; fail "docker compose config rejects docker-compose.yml with no env file"; return 1; }
    grep -q "published: \"$port\"" "$tmp/config.yml" || fail "the balancer does not publish port $port: $(grep -n published "$tmp/config.yml")"
}

up_started=0
step_up() {
    stack_up=1
    up_started=$SECONDS
    compose up -d --no-build --pull never >"$tmp/up.log" 2>&1 || {
        cat "$tmp/up.log" >&2
        diagnose secrets "${services[@]}" balancer
        fail "docker compose up failed"
        return 1
    }
}

http_ready() { api GET /readyz && [ "$status" = 200 ]; }
# /readyz through the balancer answers 200 within 60 s of the `up` that started the stack.
step_ready_in_60s() {
    local left=$((up_started + 60 - SECONDS))
    [ "$left" -gt 0 ] || left=1
    if wait_until "$left" http_ready; then
        log "ready $((SECONDS - up_started)) s after docker compose up"
        return 0
    fi
    show_body
    diagnose http balancer
    fail "/readyz on $base is not 200 within 60 s of docker compose up (last: $status)"
}

step_healthy() {
    local want=("${services[@]}")
    if [ "$http_optional" -eq 1 ]; then
        want=(postgres database log reporting analytics)
    fi
    wait_until "$health_timeout" services_healthy "${want[@]}" || {
        diagnose "${want[@]}"
        fail "not every container of ${want[*]} became healthy within ${health_timeout}s"
        return 1
    }
    log "healthy: $(container_states | awk '{ print $1 "=" $3 }' | sort | tr '\n' ' ')"
    # The one-shot secrets service ran to completion; the balancer runs.
    local id
    id=$(project_containers secrets | head -n1)
    [ -n "$id" ] && [ "$(docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$id")" = "exited 0" ] \
        || { diagnose secrets; fail "the secrets service did not exit 0"; return 1; }
    id=$(project_containers balancer | head -n1)
    [ -n "$id" ] && [ "$(docker inspect --format '{{.State.Status}}' "$id")" = running ] \
        || { diagnose balancer; fail "the balancer is not running"; return 1; }
}

# The secrets as the containers see them: each 64 hex characters, with its owner and mode.
secret_cookie="" secret_admin="" secret_pg=""
read_secrets() {
    secret_cookie=$(compose exec -T http cat /run/switchboard-secrets/cookie 2>"$tmp/exec.err")
    secret_admin=$(compose exec -T http switchboard admin-token 2>>"$tmp/exec.err")
    # Readable by the database node through its group.
    secret_pg=$(compose exec -T database cat /run/switchboard-secrets/postgres-password 2>>"$tmp/exec.err")
}
is_hex64() { [[ "$1" =~ ^[0-9a-f]{64}$ ]]; }
# Fails if any secret appears in the file named.
no_secret_in() {
    local file=$1 what=$2 name value
    for name in secret_cookie secret_admin secret_pg; do
        value=${!name}
        [ -n "$value" ] || continue
        if grep -qF -- "$value" "$file"; then
            fail "$what contains ${name#secret_}"
            return 1
        fi
    done
}
step_secrets() {
    read_secrets
    is_hex64 "$secret_cookie" && is_hex64 "$secret_admin" && is_hex64 "$secret_pg" \
        || { cat "$tmp/exec.err" >&2; fail "the cookie, admin token and PostgreSQL password are not three 64-hex-character secrets"; return 1; }
    [ "$secret_cookie" != "$secret_admin" ] && [ "$secret_admin" != "$secret_pg" ] && [ "$secret_cookie" != "$secret_pg" ] \
        || { fail "two generated secrets are equal"; return 1; }
    admin_auth=$(auth_file admin "$secret_admin")
    # Owner, group and mode of each file.
    local modes
    modes=$(compose exec -T --user 0 http stat -c '%n %u:%g %a' /run/switchboard-secrets/cookie \
        /run/switchboard-secrets/admin-token /run/switchboard-secrets/postgres-password | tr -d '\r')
    [ "$modes" = "/run/switchboard-secrets/cookie 10001:10001 400
/run/switchboard-secrets/admin-token 10001:10001 400
/run/switchboard-secrets/postgres-password 999:10001 440" ] || { log "$modes"; fail "the secret files' owners or modes are not as documented"; return 1; }
    # Nowhere in the configuration or in any container's settings.
    compose config >"$tmp/config.yml" 2>/dev/null || { fail "docker compose config failed"; return 1; }
    no_secret_in "$tmp/config.yml" "docker compose config" || return 1
    # shellcheck disable=SC2046
    docker inspect $(project_containers) >"$tmp/inspect.json" || { fail "docker inspect failed"; return 1; }
    no_secret_in "$tmp/inspect.json" "docker inspect of the containers" || return 1
    # The admin token works.
    api GET /v1/admin/cluster "" "$admin_auth"
    [ "$status" = 200 ] || { show_body; fail "/v1/admin/cluster with the admin token from switchboard admin-token: $status"; }
}

# docker compose down (volumes kept) and up again: the same secrets, PostgreSQL's data still
# opens with its password, and /readyz is back within 60 s.
step_restart_keeps_secrets() {
    need secret_cookie || return 2
    local cookie=$secret_cookie admin=$secret_admin pg=$secret_pg
    compose down --timeout 20 >"$tmp/down.log" 2>&1 || { cat "$tmp/down.log" >&2; fail "docker compose down failed"; return 1; }
    up_started=$SECONDS
    compose up -d --no-build --pull never >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; fail "docker compose up (again) failed"; return 1; }
    step_ready_in_60s || return 1
    read_secrets
    [ "$secret_cookie" = "$cookie" ] && [ "$secret_admin" = "$admin" ] && [ "$secret_pg" = "$pg" ] \
        || { fail "the secrets changed across docker compose down and up"; return 1; }
    compose logs --no-color secrets >"$tmp/secrets.log" 2>&1
    [ "$(grep -c ' kept$' "$tmp/secrets.log")" -ge 3 ] || { cat "$tmp/secrets.log" >&2; fail "the secrets service did not report keeping all three"; return 1; }
    wait_until "$health_timeout" services_healthy "${services[@]}" || { diagnose "${services[@]}"; fail "not every container is healthy again"; }
}

http_healthz() { api GET /healthz && [ "$status" = 200 ]; }
step_http_health() {
    local wait=$health_timeout
    [ "$http_optional" -eq 1 ] && wait=20
    if wait_until "$wait" http_healthz && wait_until "$wait" services_healthy http; then
        return 0
    fi
    if [ "$http_optional" -eq 1 ]; then
        skip "http /healthz on $base did not answer 200 (last: $status) and --http-optional was given"
        return 2
    fi
    diagnose http
    fail "http /healthz on $base did not answer 200 within ${wait}s (last: $status)"
}

# ---- chat API walkthrough ----------------------------------------------------------------------
step_readyz() {
    wait_until "$step_timeout" http_ready || { show_body; fail "/readyz is not 200 (last: $status)"; }
}

alice_auth="" bob_auth="" room=""
register() {  # register NAME -> prints the token
    local user=$1 password=$2
    api POST /v1/auth/register "{\"username\":$(json_str "$user"),\"password\":$(json_str "$password")}"
    [ "$status" = 201 ] || { show_body; fail "register $user: expected 201, got $status"; return 1; }
    [ "$(jget 'd["user"]["username"]')" = "$user" ] || { show_body; fail "register $user: user.username differs"; return 1; }
    [ -n "$(jget 'd["user"]["id"]')" ] || { show_body; fail "register $user: no user.id"; return 1; }
    jget 'd["token"]'
}
step_register_login() {
    local suffix password token
    suffix=$(random_hex 4)
    password=$(random_hex 12)
    token=$(register "alice_$suffix" "$password") && [ -n "$token" ] || return 1
    api POST /v1/auth/login "{\"username\":$(json_str "alice_$suffix"),\"password\":$(json_str "$password")}"
    [ "$status" = 200 ] || { show_body; fail "login: expected 200, got $status"; return 1; }
    token=$(jget 'd["token"]')
    [ -n "$token" ] || { show_body; fail "login: no token"; return 1; }
    alice_auth=$(auth_file alice "$token")
    api POST /v1/auth/login "{\"username\":$(json_str "alice_$suffix"),\"password\":\"wrong-password\"}"
    case "$status" in 2*|000) show_body; fail "login with a wrong password answered $status"; return 1 ;; esac
    token=$(register "bob_$suffix" "$password") && [ -n "$token" ] || return 1
    bob_auth=$(auth_file bob "$token")
}

create_room() {  # create_room NAME AUTH -> prints the room id
    api POST /v1/rooms "{\"name\":$(json_str "$1"),\"topic\":\"compose e2e\"}" "$2"
    [ "$status" = 201 ] || { show_body; fail "create room: expected 201, got $status"; return 1; }
    local id
    id=$(jget 'd["id"]')
    [ -n "$id" ] && [ "$(jget 'd["name"]')" = "$1" ] || { show_body; fail "create room: no id or wrong name"; return 1; }
    printf '%s' "$id"
}
step_room() {
    need alice_auth bob_auth || return 2
    room=$(create_room "e2e-$(random_hex 4)" "$alice_auth") || return 1
    api POST "/v1/rooms/$room/join" "" "$bob_auth"
    case "$status" in 2*) ;; *) show_body; fail "bob joins the room: got $status"; return 1 ;; esac
}

step_messages() {
    need room alice_auth bob_auth || return 2
    local body id
    api POST "/v1/rooms/$room/messages" '{"body":"no token"}'
    [ "$status" = 401 ] || { show_body; fail "posting without a token: expected 401, got $status"; return 1; }
    body="hello from alice $(random_hex 4)"
    api POST "/v1/rooms/$room/messages" "{\"body\":$(json_str "$body")}" "$alice_auth"
    [ "$status" = 201 ] || { show_body; fail "post message: expected 201, got $status"; return 1; }
    id=$(jget 'd["id"]')
    [ -n "$id" ] && [ "$(jget 'd["body"]')" = "$body" ] && [ -n "$(jget 'd["seq"]')" ] \
        && [ -n "$(jget 'd["author"]["username"]')" ] || { show_body; fail "post message: missing id/body/seq/author"; return 1; }
    api POST "/v1/rooms/$room/messages" '{"body":"second, from bob"}' "$bob_auth"
    [ "$status" = 201 ] || { show_body; fail "bob posts: expected 201, got $status"; return 1; }
    api GET "/v1/rooms/$room/messages?limit=50" "" "$bob_auth"
    [ "$status" = 200 ] || { show_body; fail "list messages: expected 200, got $status"; return 1; }
    [ "$(jget 'len(d["messages"])')" = 2 ] || { show_body; fail "list messages: expected 2 messages"; return 1; }
    [ "$(jget "[str(m['id']) for m in d['messages']].count(str($(json_str "$id")))")" = 1 ] \
        || { show_body; fail "list messages: the posted message is not listed once"; return 1; }
    api GET "/v1/rooms/$room/messages?limit=1" "" "$bob_auth"
    [ "$status" = 200 ] && [ "$(jget 'len(d["messages"])')" = 1 ] && jget 'd["next_after"], d["prev_before"]' >/dev/null \
        || { show_body; fail "list messages with limit=1: expected one message and next_after/prev_before"; return 1; }
}

sse_connected() { [ -s "$tmp/sse.headers" ]; }
sse_has() { grep -q '^event: *message' "$tmp/sse.out" && grep -qF "$1" "$tmp/sse.out"; }
step_sse() {
    need room alice_auth bob_auth || return 2
    : >"$tmp/sse.out"; : >"$tmp/sse.headers"
    curl -sS -N --max-time 20 -D "$tmp/sse.headers" -H "@$bob_auth" -H 'Accept: text/event-stream' \
        "$base/v1/rooms/$room/events" >"$tmp/sse.out" 2>"$tmp/sse.err" &
    local pid=$! body
    bg_pids+=("$pid")
    wait_until 10 sse_connected || { kill "$pid" 2>/dev/null; fail "no SSE response headers within 10 s"; return 1; }
    grep -qi '^content-type: *text/event-stream' "$tmp/sse.headers" \
        || { kill "$pid" 2>/dev/null; fail "events: content-type is not text/event-stream: $(tr -d '\r' <"$tmp/sse.headers" | head -n 3 | tr '\n' ' ')"; return 1; }
    body="sse check $(random_hex 6)"
    api POST "/v1/rooms/$room/messages" "{\"body\":$(json_str "$body")}" "$alice_auth"
    [ "$status" = 201 ] || { kill "$pid" 2>/dev/null; show_body; fail "post for SSE: got $status"; return 1; }
    if ! wait_until 10 sse_has "$body"; then
        kill "$pid" 2>/dev/null
        fail "no 'message' event carrying the new message within 10 s: $(head -c 300 "$tmp/sse.out")"
        return 1
    fi
    kill "$pid" 2>/dev/null
    return 0
}

step_admin_cluster() {
    local services
    api GET /v1/admin/cluster
    case "$status" in 401|403) ;; *) show_body; fail "/v1/admin/cluster without a token: expected 401/403, got $status"; return 1 ;; esac
    [ -n "$alice_auth" ] && {
        api GET /v1/admin/cluster "" "$alice_auth"
        case "$status" in 401|403) ;; *) show_body; fail "/v1/admin/cluster with a user's token: expected 401/403, got $status"; return 1 ;; esac
    }
    # The http node answers (state "self"); a live node of every other kind offers its service.
    all_services_listed() {
        services=" $(cluster services) "
        kinds=" $(cluster kinds) "
        local s
        [ "$(cluster answerer)" = http ] || return 1
        for s in "${node_services[@]}"; do
            [ "$s" = http ] && continue
            case "$services" in *" $s "*) ;; *) return 1 ;; esac
            case "$kinds" in *" $s "*) ;; *) return 1 ;; esac
        done
    }
    local kinds
    wait_until "$step_timeout" all_services_listed \
        || { show_cluster; fail "/v1/admin/cluster: want the http node as self and live nodes offering ${node_services[*]:1} (services offered: ${services:-no answer})"; }
}

# ---- browser tests -----------------------------------------------------------------------------
# tests/browser/run.sh against the balancer: the chat client and the dashboard in headless
# chromium, with the admin token in a file only this user reads (never on a command line or in
# the output), and nodes killed through a node-control command that `docker kill`s the node's
# container (SIGKILL to its process) and `docker start`s it again.
write_node_control() {
    {
        printf '#!/usr/bin/env bash\n'
        printf '# Written by compose-e2e.sh: `%s kill|restart NODE` for project %s.\n' "$1" "$project"
        printf 'project=%q\n' "$project"
        cat <<'EOF_CONTROL'
# A node is named <service>@<hostname>, and a container's host name is its short id.
set -euo pipefail
action=$1 host=${2#*@}
for id in $(docker ps -aq --filter "label=com.docker.compose.project=$project"); do
    if [ "$(docker inspect --format '{{.Config.Hostname}}' "$id")" = "$host" ]; then
        case "$action" in
            kill) docker kill "$id" >/dev/null ;;
            restart) docker start "$id" >/dev/null ;;
            *) echo "unknown action $action" >&2; exit 2 ;;
        esac
        exit 0
    fi
done
echo "no container of project $project has the host name $host" >&2
exit 1
EOF_CONTROL
    } >"$1"
    chmod 700 "$1"
}
step_browser() {
    local token_file=$tmp/browser-admin-token rc
    # The file is created 0600 (umask) before the token is written into it.
    (umask 077 && compose exec -T http switchboard admin-token >"$token_file" 2>"$tmp/exec.err") \
        || { cat "$tmp/exec.err" >&2; fail "docker compose exec http switchboard admin-token failed"; return 1; }
    [ -s "$token_file" ] || { fail "switchboard admin-token printed nothing"; return 1; }
    write_node_control "$tmp/node-control"
    bash "$repo/tests/browser/run.sh" --url "$base" --admin-token-file "$token_file" \
        --node-control "$tmp/node-control" --artifacts "$repo/target/browser-artifacts/compose" \
        >"$tmp/browser.out" 2>&1
    rc=$?
    secret_admin=${secret_admin:-$(tr -d '[:space:]' <"$token_file")}
    no_secret_in "$tmp/browser.out" "the browser tests' output" || return 1
    sed 's/^/[e2e]   /' "$tmp/browser.out" | grep -v '^\[e2e\]   *$' | tail -n 40 >&2
    [ "$rc" = 0 ] && tail -n 1 "$tmp/browser.out" | grep -Eq '^[0-9]+ passed, 0 failed$' \
        || fail "the browser tests failed (exit $rc): $(tail -n 1 "$tmp/browser.out")"
}

# Every replica of every service is up in /v1/admin/cluster (the answering http node counts as
# one of its kind) and its container is healthy.
all_scaled() {
    local service
    for service in "${node_services[@]}"; do
        [ "$(cluster kind_count "$service")" = "${scaled[$service]}" ] || return 1
        [ "$(healthy_count "$service")" = "${scaled[$service]}" ] || return 1
    done
}
scale_report() {
    local service out=""
    for service in "${node_services[@]}"; do
        out+="$service: $(healthy_count "$service") healthy, $(cluster kind_count "$service" 2>/dev/null || echo '?') up; "
    done
    printf '%s' "$out"
}
step_scale() {
    compose up -d --no-build --pull never "${scale_args[@]}" >"$tmp/scale.log" 2>&1 \
        || { cat "$tmp/scale.log" >&2; fail "docker compose up -d ${scale_args[*]} failed"; return 1; }
    wait_until "$health_timeout" all_scaled || {
        show_cluster
        diagnose "${node_services[@]}"
        fail "within ${health_timeout}s: $(scale_report)want ${scale_args[*]}"
        return 1
    }
    log "$(scale_report)"
}

# http node name -> container id, from each http container's host name (nodes are named
# <service>@<hostname>).
http_containers_json() {
    local id
    for id in $(project_containers http); do
        docker inspect --format '{{.Config.Hostname}} {{.Id}} {{.State.Status}}' "$id"
    done | python3 -c '
import json, sys
print(json.dumps({"http@" + h: i for h, i, state in (l.split() for l in sys.stdin) if state == "running"}))'
}

# Requests through the balancer reach every live http replica: X-Served-By names each of them.
served_by_all() {
    local want seen n
    want=$(cluster names http) || return 1
    [ "$(wc -w <<<"$want")" = "${scaled[http]}" ] || return 1
    : >"$tmp/served_by"
    for n in $(seq 1 $((4 * scaled[http]))); do
        curl -sS -o /dev/null -D - --max-time 5 "$base/readyz" 2>/dev/null \
            | tr -d '\r' | awk -F': ' 'tolower($1) == "x-served-by" { print $2 }' >>"$tmp/served_by"
    done
    seen=$(sort -u "$tmp/served_by" | tr '\n' ' ' | sed 's/ $//')
    [ "$seen" = "$want" ]
}
step_spread() {
    wait_until 60 served_by_all || {
        fail "X-Served-By over $((4 * scaled[http])) requests: $(sort "$tmp/served_by" | uniq -c | tr '\n' ';' | tr -s ' ') want every http node: $(cluster names http)"
        return 1
    }
    log "X-Served-By over $((4 * scaled[http])) requests: $(sort "$tmp/served_by" | uniq -c | tr '\n' ';' | tr -s ' ')"
}

cat >"$tmp/client.py" <<'EOF'
"""Posts N messages at a steady rate, each with its own Idempotency-Key, retrying one (same key)
until it gets a 2xx or its deadline passes: on any non-2xx answer or transport error (policy
`any`), or only on transport errors and 502/503/504, what a load balancer answers when a replica
is gone (policy `gateway`; any other answer fails the message at once). The rate spreads the
posts over several seconds, so that a node killed meanwhile dies mid-stream."""
import json, os, sys, time, urllib.error, urllib.request

base, room, auth_file, count, run, out = sys.argv[1:7]
count = int(count)
per_message_deadline = float(sys.argv[7])
rate = float(sys.argv[8])
policy = sys.argv[9] if len(sys.argv) > 9 else "any"
auth = open(auth_file).read().split(":", 1)[1].strip()
acked, errors, failures, served_by = [], {}, 0, {}
start = time.monotonic()
for i in range(count):
    time.sleep(max(0.0, start + i / rate - time.monotonic()))
    key = f"e2e-{run}-{i}"
    data = json.dumps({"body": f"failover {run} #{i}"}).encode()
    deadline = time.monotonic() + per_message_deadline
    while True:
        request = urllib.request.Request(
            f"{base}/v1/rooms/{room}/messages", data=data, method="POST",
            headers={"Content-Type": "application/json", "Authorization": auth, "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.load(response)
                node = response.headers.get("X-Served-By", "?")
            served_by[node] = served_by.get(node, 0) + 1
            acked.append({"i": i, "key": key, "id": answer["id"]})
            break
        except urllib.error.HTTPError as e:
            kind = f"HTTP {e.code}"
            retried = policy == "any" or e.code in (502, 503, 504)
        except Exception as e:  # connection reset/refused, timeout, bad JSON: all retried
            kind = type(e).__name__
            retried = True
        errors[kind] = errors.get(kind, 0) + 1
        if not retried or time.monotonic() > deadline:
            failures += 1
            break
        time.sleep(0.1)  # back-off between retries of one message
    with open(out + ".progress.tmp", "w") as f:
        f.write(str(i + 1))
    os.replace(out + ".progress.tmp", out + ".progress")
json.dump({"acked": acked, "errors": errors, "failures": failures, "served_by": served_by}, open(out, "w"))
EOF
cat >"$tmp/verify.py" <<'EOF'
"""Checks that every acknowledged message is listed exactly once and nothing else of the run is."""
import json, sys

client, pages = json.load(open(sys.argv[1])), sys.argv[2:]
listed = []
for page in pages:
    listed += json.load(open(page))["messages"]
ids = [str(m["id"]) for m in listed]
problems = []
for a in client["acked"]:
    n = ids.count(str(a["id"]))
    if n != 1:
        problems.append(f"message #{a['i']} (id {a['id']}) is listed {n} times")
bodies = [m.get("body") for m in listed]
dups = {b for b in bodies if bodies.count(b) > 1}
if dups:
    problems.append(f"{len(dups)} bodies are stored more than once, e.g. {sorted(dups)[0]!r}")
if len(listed) != len(client["acked"]):
    problems.append(f"{len(listed)} messages listed, {len(client['acked'])} acknowledged")
print("; ".join(problems[:5]) if problems else f"{len(listed)} messages, each acknowledged one exactly once")
sys.exit(1 if problems else 0)
EOF
client_count() { local n; n=$(cat "$tmp/client.json.progress" 2>/dev/null); printf '%s' "${n:-0}"; }
client_progress() { [ "$(client_count)" -ge "$1" ]; }
client_done() { [ -s "$tmp/client.json" ]; }
# keyed_posts_under_kill SERVICE POLICY: a client posts 200 messages at 25 a second with
# Idempotency-Key (retrying per POLICY, see client.py) while one container of SERVICE is killed;
# every message must be acknowledged and stored exactly once.
keyed_posts_under_kill() {
    need alice_auth || return 2
    local service=$1 policy=$2 failover_room victim pid pages=() after="" previous page n at_kill
    failover_room=$(create_room "$service-kill-$(random_hex 4)" "$alice_auth") || return 1
    victim=$(project_containers "$service" | head -n1)
    [ -n "$victim" ] || { fail "no $service container"; return 1; }
    rm -f "$tmp/client.json" "$tmp/client.json.progress"
    # 200 messages at 25 a second: the kill lands after about 40, with some 150 still to come.
    python3 "$tmp/client.py" "$base" "$failover_room" "$alice_auth" 200 "$(random_hex 4)" "$tmp/client.json" 60 25 "$policy" &
    pid=$!
    bg_pids+=("$pid")
    wait_until "$step_timeout" client_progress 40 || { kill "$pid" 2>/dev/null; fail "the client did not get 40 messages acknowledged"; return 1; }
    docker kill "$victim" >/dev/null || { kill "$pid" 2>/dev/null; fail "docker kill failed"; return 1; }
    at_kill=$(client_count)
    log "killed $service container ${victim:0:12} after message $at_kill of 200"
    [ "$at_kill" -le 150 ] || { kill "$pid" 2>/dev/null; fail "the client was too far on ($at_kill of 200) when the node died to test failover"; return 1; }
    wait_until 300 client_done || { kill "$pid" 2>/dev/null; fail "the client did not finish within 300 s"; return 1; }
    wait "$pid" 2>/dev/null
    log "client: $(python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); print(len(c["acked"]), "acknowledged,", c["failures"], "failed, client-visible errors:", c["errors"] or "none", "; served by:", c["served_by"])' "$tmp/client.json")"
    [ "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["failures"])' "$tmp/client.json")" = 0 ] \
        || { fail "some messages were never acknowledged"; return 1; }
    # Read the room back (following next_after should the server cap limit).
    for n in 1 2 3 4 5 6 7 8 9 10; do
        api GET "/v1/rooms/$failover_room/messages?limit=200${after:+&after=$after}" "" "$alice_auth"
        [ "$status" = 200 ] || { show_body; fail "reading the room back: got $status"; return 1; }
        page=$tmp/page.$n.json
        cp "$tmp/body" "$page"
        pages+=("$page")
        [ "$(jget 'len(d["messages"])')" != 0 ] || break
        previous=$after
        after=$(jget 'd.get("next_after") or ""')
        if [ -z "$after" ] || [ "$after" = "$previous" ]; then break; fi
    done
    python3 "$tmp/verify.py" "$tmp/client.json" "${pages[@]}" >"$tmp/verify.out" 2>&1
    local rc=$?
    log "verify: $(cat "$tmp/verify.out")"
    [ "$rc" = 0 ] || fail "acknowledged messages are not stored exactly once"
}
step_failover() { keyed_posts_under_kill database any; }
step_http_kill() { keyed_posts_under_kill http gateway; }

cat >"$tmp/sse.py" <<'EOF'
"""SSE clients of one room, through the balancer. Each reads its stream and, whenever the stream
ends or fails (its replica died), connects again with Last-Event-ID: the id of the last event it
saw. Meanwhile messages are posted with Idempotency-Key (retried on transport errors and
502/503/504), and once the first client has seen `kill_after` of them, the http replica serving
it is killed with `docker kill`. Every client must end up with every posted message exactly once,
in order. Writes a JSON report; exits 1 on any problem."""
import http.client, json, subprocess, sys, threading, time, urllib.error, urllib.parse, urllib.request

base, room, auth_file, containers_file, out = sys.argv[1:6]
clients_n, posts_n, kill_after = (int(a) for a in sys.argv[6:9])
auth = open(auth_file).read().split(":", 1)[1].strip()
containers = json.load(open(containers_file))
url = urllib.parse.urlsplit(base)
run = f"{time.time_ns() % 10**9:x}"


class Client(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.last, self.bodies, self.served_by, self.cuts, self.errors = None, [], [], 0, []
        self.connected, self.stop = threading.Event(), False

    def run(self):
        while not self.stop:
            try:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=40)
                headers = {"Authorization": auth, "Accept": "text/event-stream"}
                if self.last is not None:
                    headers["Last-Event-ID"] = self.last
                conn.request("GET", f"/v1/rooms/{room}/events", headers=headers)
                response = conn.getresponse()
                if response.status != 200:
                    self.errors.append(f"HTTP {response.status}")
                    conn.close()
                    time.sleep(0.2)
                    continue
                self.served_by.append(response.getheader("X-Served-By"))
                self.connected.set()
                event = {}
                while True:
                    line = response.readline()
                    if not line:
                        break
                    line = line.decode().rstrip("\r\n")
                    if not line:
                        self.dispatch(event)
                        event = {}
                    elif not line.startswith(":"):
                        field, _, value = line.partition(":")
                        event[field] = value[1:] if value.startswith(" ") else value
                conn.close()
            except Exception as e:  # the replica died mid-stream: connect again
                self.errors.append(type(e).__name__)
            if not self.stop:
                self.cuts += 1
                time.sleep(0.2)

    def dispatch(self, event):
        if "id" in event:
            self.last = event["id"]
        if event.get("event") == "message":
            self.bodies.append(json.loads(event["data"])["body"])
        elif event.get("event") == "reset":
            self.errors.append("reset")


def post(i):
    data = json.dumps({"body": f"sse {run} #{i}"}).encode()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"{base}/v1/rooms/{room}/messages", data=data, method="POST",
            headers={"Content-Type": "application/json", "Authorization": auth,
                     "Idempotency-Key": f"sse-{run}-{i}"})
        try:
            with urllib.request.urlopen(request, timeout=10):
                return True
        except urllib.error.HTTPError as e:
            if e.code not in (502, 503, 504):
                return False
        except Exception:
            pass
        time.sleep(0.1)
    return False


clients = [Client() for _ in range(clients_n)]
for c in clients:
    c.start()
problems = []
if not all(c.connected.wait(15) for c in clients):
    problems.append("not every client connected within 15 s")
victim_name = clients[0].served_by[0] if clients[0].served_by else None
victim = containers.get(victim_name)
if victim is None:
    problems.append(f"the first client's replica {victim_name!r} is not among {sorted(containers)}")
posted, killed = [], None
for i in range(posts_n):
    if i == kill_after and victim and not problems:
        end = time.monotonic() + 15
        while len(clients[0].bodies) < kill_after and time.monotonic() < end:
            time.sleep(0.05)
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
        killed = victim_name
    if post(i):
        posted.append(f"sse {run} #{i}")
    else:
        problems.append(f"message #{i} was never acknowledged")
    time.sleep(0.05)
end = time.monotonic() + 60
while any(len(c.bodies) < len(posted) for c in clients) and time.monotonic() < end:
    time.sleep(0.1)
for c in clients:
    c.stop = True
cut = [n for n, c in enumerate(clients) if c.served_by and c.served_by[0] == killed]
for n, c in enumerate(clients):
    if c.bodies != posted:
        missing = [b for b in posted if b not in c.bodies]
        doubled = sorted({b for b in c.bodies if c.bodies.count(b) > 1})
        problems.append(f"client {n} (replicas {c.served_by}) has {len(c.bodies)} of {len(posted)} messages: "
                        f"missing {missing[:3]}, twice {doubled[:3]}")
    if "reset" in c.errors:
        problems.append(f"client {n} got a reset event")
for n in cut:
    if len(clients[n].served_by) < 2:
        problems.append(f"client {n} was on the killed replica but never connected again")
if killed and not cut:
    problems.append("no client was on the killed replica")
report = {"killed": killed, "posted": len(posted), "cut_clients": cut, "problems": problems,
          "clients": [{"replicas": c.served_by, "messages": len(c.bodies), "errors": c.errors} for c in clients]}
json.dump(report, open(out, "w"), indent=1)
print(f"{len(posted)} posted; killed {killed}; clients on it: {cut}; "
      + "; ".join(f"client {n}: {len(c.bodies)} messages via {' -> '.join(c.served_by)}" for n, c in enumerate(clients)))
for p in problems[:6]:
    print("problem:", p)
sys.exit(1 if problems else 0)
EOF
step_sse_failover() {
    need alice_auth || return 2
    local sse_room rc
    sse_room=$(create_room "sse-kill-$(random_hex 4)" "$alice_auth") || return 1
    http_containers_json >"$tmp/http_containers.json"
    # Six clients spread over the live replicas (round robin): the one killed serves some.
    timeout 240 python3 "$tmp/sse.py" "$base" "$sse_room" "$alice_auth" "$tmp/http_containers.json" "$tmp/sse.json" 6 60 20 >"$tmp/sse.out" 2>&1
    rc=$?
    log "sse: $(cat "$tmp/sse.out")"
    [ "$rc" = 0 ] || fail "SSE clients did not all resume without a gap (exit $rc)"
}

# Nothing any container logged shows a secret, and nothing is coloured for a terminal.
step_logs_clean() {
    need secret_cookie || return 2
    compose logs --no-color --no-log-prefix >"$tmp/all.log" 2>&1 || { fail "docker compose logs failed"; return 1; }
    no_secret_in "$tmp/all.log" "docker compose logs" || return 1
    if grep -q $'\x1b' "$tmp/all.log"; then
        grep -m3 $'\x1b' "$tmp/all.log" | cat -v >&2
        fail "docker compose logs holds terminal escape codes"
        return 1
    fi
    log "$(wc -l <"$tmp/all.log") log lines, no secret, no escape code"
}

analytics_cid="" analytics_net="" analytics_host="" analytics_aliases=()
analytics_state_is() { local s; s=$(cluster state "$analytics_host") || return 1; case "$s" in "$1"*) return 0 ;; *) return 1 ;; esac; }
step_partition() {
    local alias
    analytics_cid=$(project_containers analytics | head -n1)
    [ -n "$analytics_cid" ] || { fail "no analytics container"; return 1; }
    analytics_host=$(docker inspect --format '{{.Config.Hostname}}' "$analytics_cid")
    analytics_net=$(docker inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{"\n"}}{{end}}' "$analytics_cid" | grep -m1 .)
    mapfile -t analytics_aliases < <(docker inspect --format "{{range (index .NetworkSettings.Networks \"$analytics_net\").Aliases}}{{.}}{{\"\\n\"}}{{end}}" "$analytics_cid" | grep .)
    wait_until "$step_timeout" analytics_state_is up \
        || { show_cluster; fail "analytics node on $analytics_host is not 'up' in /v1/admin/cluster before the partition"; return 1; }
    log "disconnecting analytics ${analytics_cid:0:12} from $analytics_net"
    docker network disconnect "$analytics_net" "$analytics_cid" || { fail "docker network disconnect failed"; return 1; }
    wait_until "$step_timeout" analytics_state_is down \
        || { show_cluster; fail "/v1/admin/cluster does not show the cut-off analytics node down within ${step_timeout}s"; return 1; }
    local args=()
    for alias in "${analytics_aliases[@]}"; do args+=(--alias "$alias"); done
    docker network connect "${args[@]}" "$analytics_net" "$analytics_cid" || { fail "docker network connect failed"; return 1; }
    analytics_net=""
    wait_until "$step_timeout" analytics_state_is up \
        || { show_cluster; fail "the analytics node is not back 'up' within ${step_timeout}s of reconnecting"; return 1; }
}

step_down() {
    compose down -v --remove-orphans --timeout 20 >"$tmp/down.log" 2>&1 || { cat "$tmp/down.log" >&2; fail "docker compose down -v failed"; return 1; }
    stack_up=0
    [ -z "$(project_containers)" ] || fail "containers of project $project remain after down -v"
}

# ---- run ---------------------------------------------------------------------------------------
finish() {
    if [ "$keep" -eq 0 ] && [ "$stack_up" -eq 1 ]; then
        # A partition test cut short must not leave the container without its network.
        [ -n "$analytics_net" ] && [ -n "$analytics_cid" ] && docker network connect "$analytics_net" "$analytics_cid" 2>/dev/null
        run_step "docker compose down -v" step_down
    fi
    summary
    [ "$failed" -eq 0 ]
    exit
}

if [ -n "$api_only" ]; then
    log "API walkthrough only, against $api_only"
    base=${api_only%/}
    admin_auth=$(auth_file admin "$api_only_admin_token")
    run_step "http GET /readyz answers 200 (database reachable)" step_readyz
    run_step "register two users, log in, wrong password refused" step_register_login
    run_step "create a room, second user joins" step_room
    run_step "post and list messages, 401 without a token" step_messages
    run_step "SSE: a message event arrives after posting" step_sse
    run_step "admin cluster: token required, every service live" step_admin_cluster
    finish
fi
log "project $project, no env file, the API on a free loopback port; $([ "$infra_only" -eq 1 ] && echo 'infrastructure only' || echo 'full walkthrough')"
run_step "docker compose v2 available" step_compose_v2 || finish
run_step "images built locally (debian, postgres, haproxy, switchboard)" step_images || finish
run_step "compose config valid with no env file" step_config || finish
run_step "docker compose up -d (no env file)" step_up || finish
run_step "GET /readyz through the balancer: 200 within 60 s of up" step_ready_in_60s
run_step "containers healthy; secrets ran once, balancer runs" step_healthy || finish
run_step "secrets generated, 0400/0440, in no config or container env" step_secrets
run_step "http GET /healthz answers 200" step_http_health
run_step "down and up again: same secrets, ready within 60 s" step_restart_keeps_secrets || finish
if [ "$infra_only" -eq 1 ]; then
    finish
fi
run_step "register two users, log in, wrong password refused" step_register_login
run_step "create a room, second user joins" step_room
run_step "post and list messages, 401 without a token" step_messages
run_step "SSE: a message event arrives after posting" step_sse
run_step "admin cluster: token required, every service live" step_admin_cluster
run_step "browser tests through the balancer (docker kill / start)" step_browser
run_step "scale http=3 database=3 log=2 reporting=2 analytics=2: all up" step_scale
run_step "requests spread over every http replica (X-Served-By)" step_spread
run_step "200 keyed posts while an http replica is killed" step_http_kill
run_step "SSE clients cut by a replica's death resume, miss nothing" step_sse_failover
run_step "200 idempotent posts while a database node is killed" step_failover
run_step "analytics cut off the network: down, then back up" step_partition
run_step "docker compose logs: no secret, no escape codes" step_logs_clean
finish
