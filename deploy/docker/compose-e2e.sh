#!/usr/bin/env bash
# End-to-end test of docker-compose.yml on this Docker host, with no registry:
#   Compose v2 (install-compose.sh) and the images (offline-images.sh), a throwaway env file with
#   random secrets, `docker compose up`, health of every container, the chat API walkthrough,
#   `--scale database=3` seen in /v1/admin/cluster, a database node killed while a client posts
#   200 messages with Idempotency-Key (retrying until 2xx; each acknowledged message stored
#   exactly once), the analytics container cut off the network and healed, and `down -v`.
# The stack is always taken down (down -v) on exit. Prints `N passed, M failed` last and exits
# non-zero if any step failed. Runs unattended (CI=true, no stdin).
set -uo pipefail

usage() {
    cat <<'EOF'
usage: deploy/docker/compose-e2e.sh [options]

  --infra-only      stop after the infrastructure steps: images, config, up, every container
                    healthy, http /healthz (then down -v)
  --http-optional   report http's health check as skipped rather than failed when it does not
                    pass (for a switchboard-http that does not serve HTTP yet)
  --no-build        use the images that exist; don't run install-compose.sh or offline-images.sh
  --keep            leave the stack running at the end (no down -v) for inspection
  --project NAME    compose project name (default switchboard-e2e)
  --api-only URL    no Docker: run only the chat API walkthrough against an http node already
                    serving at URL (admin token from SWITCHBOARD_ADMIN_TOKEN)
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

api_only_admin_token=${SWITCHBOARD_ADMIN_TOKEN:-}
# The env file below is the only source of these: values from the caller's environment would
# override it in docker compose.
unset SWITCHBOARD_COOKIE SWITCHBOARD_COOKIE_FILE SWITCHBOARD_ADMIN_TOKEN POSTGRES_USER \
    POSTGRES_PASSWORD POSTGRES_DB SWITCHBOARD_HTTP_PORT COMPOSE_PROJECT_NAME COMPOSE_FILE \
    COMPOSE_PROFILES DATABASE_URL

tmp=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-e2e.XXXXXX")
chmod 700 "$tmp"
envfile=$tmp/compose.env
base=""
passed=0
failed=0
skipped=0
stack_up=0
bg_pids=()

log() { printf '[e2e] %s\n' "$*" >&2; }

compose() {
    docker compose -p "$project" -f "$repo/docker-compose.yml" --env-file "$envfile" "$@"
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
        log "--keep: the stack is still up (project $project); its env file is $envfile"
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
        "$here/offline-images.sh" --only debian,postgres || return 1
        # The binaries change with every commit: rebuild the switchboard image from this tree
        # (cargo and the image's layers make this quick when nothing changed).
        "$here/offline-images.sh" --only switchboard --rebuild || return 1
    fi
    local image
    for image in debian:bookworm-slim postgres:15-bookworm "switchboard:${SWITCHBOARD_VERSION:-latest}"; do
        docker image inspect "$image" >/dev/null 2>&1 || fail "image $image is missing" || return 1
    done
}

step_config() {
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    base=http://127.0.0.1:$port
    admin_token=$(random_hex 32)
    (
        umask 077
        cat >"$envfile" <<EOF
SWITCHBOARD_COOKIE=$(random_hex 32)
SWITCHBOARD_ADMIN_TOKEN=$admin_token
POSTGRES_USER=switchboard
POSTGRES_PASSWORD=$(random_hex 24)
POSTGRES_DB=switchboard
SWITCHBOARD_HTTP_PORT=127.0.0.1:$port
RUST_LOG=${RUST_LOG:-info}
EOF
    )
    admin_auth=$(auth_file admin "$admin_token")
    compose config -q || fail "docker compose config rejects docker-compose.yml" || return 1
    # Without the cookie (everything else set) the file must refuse to start, naming the variable.
    grep -v '^SWITCHBOARD_COOKIE=' "$envfile" >"$tmp/nocookie.env"
    if docker compose -p "$project" -f "$repo/docker-compose.yml" --env-file "$tmp/nocookie.env" config -q >"$tmp/nocookie.log" 2>&1; then
        fail "docker compose config accepted a missing SWITCHBOARD_COOKIE"
        return 1
    fi
    grep -q SWITCHBOARD_COOKIE "$tmp/nocookie.log" || fail "the missing-cookie error does not name SWITCHBOARD_COOKIE: $(cat "$tmp/nocookie.log")"
}

step_up() {
    stack_up=1
    compose up -d --no-build --pull never >"$tmp/up.log" 2>&1 || {
        cat "$tmp/up.log" >&2
        diagnose "${services[@]}"
        fail "docker compose up failed"
        return 1
    }
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
http_ready() { api GET /readyz && [ "$status" = 200 ]; }
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

database_nodes() { [ "$(cluster count database)" = 3 ] && [ "$(healthy_count database)" = 3 ]; }
step_scale() {
    compose up -d --no-build --pull never --scale database=3 >"$tmp/scale.log" 2>&1 \
        || { cat "$tmp/scale.log" >&2; fail "docker compose up --scale database=3 failed"; return 1; }
    wait_until "$health_timeout" database_nodes || {
        show_cluster
        diagnose database
        fail "within ${health_timeout}s: $(healthy_count database) healthy database containers, $(cluster count database 2>/dev/null || echo '?') live database nodes in /v1/admin/cluster (want 3 and 3)"
    }
}

cat >"$tmp/client.py" <<'EOF'
"""Posts N messages at a steady rate, each with its own Idempotency-Key, retrying every one on any
non-2xx answer or transport error (same key) until it gets a 2xx or its deadline passes. The rate
spreads the posts over several seconds, so that a node killed meanwhile dies mid-stream."""
import json, os, sys, time, urllib.error, urllib.request

base, room, auth_file, count, run, out = sys.argv[1:7]
count = int(count)
per_message_deadline = float(sys.argv[7])
rate = float(sys.argv[8])
auth = open(auth_file).read().split(":", 1)[1].strip()
acked, errors, failures = [], {}, 0
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
            acked.append({"i": i, "key": key, "id": answer["id"]})
            break
        except urllib.error.HTTPError as e:
            kind = f"HTTP {e.code}"
        except Exception as e:  # connection reset/refused, timeout, bad JSON: all retried
            kind = type(e).__name__
        errors[kind] = errors.get(kind, 0) + 1
        if time.monotonic() > deadline:
            failures += 1
            break
        time.sleep(0.1)  # back-off between retries of one message
    with open(out + ".progress.tmp", "w") as f:
        f.write(str(i + 1))
    os.replace(out + ".progress.tmp", out + ".progress")
json.dump({"acked": acked, "errors": errors, "failures": failures}, open(out, "w"))
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
step_failover() {
    need alice_auth || return 2
    local failover_room victim pid pages=() after="" previous page n at_kill
    failover_room=$(create_room "failover-$(random_hex 4)" "$alice_auth") || return 1
    victim=$(project_containers database | head -n1)
    [ -n "$victim" ] || { fail "no database container"; return 1; }
    rm -f "$tmp/client.json" "$tmp/client.json.progress"
    # 200 messages at 25 a second: the kill lands after about 40, with some 150 still to come.
    python3 "$tmp/client.py" "$base" "$failover_room" "$alice_auth" 200 "$(random_hex 4)" "$tmp/client.json" 60 25 &
    pid=$!
    bg_pids+=("$pid")
    wait_until "$step_timeout" client_progress 40 || { kill "$pid" 2>/dev/null; fail "the client did not get 40 messages acknowledged"; return 1; }
    docker kill "$victim" >/dev/null || { kill "$pid" 2>/dev/null; fail "docker kill failed"; return 1; }
    at_kill=$(client_count)
    log "killed database container ${victim:0:12} after message $at_kill of 200"
    [ "$at_kill" -le 150 ] || { kill "$pid" 2>/dev/null; fail "the client was too far on ($at_kill of 200) when the node died to test failover"; return 1; }
    wait_until 300 client_done || { kill "$pid" 2>/dev/null; fail "the client did not finish within 300 s"; return 1; }
    wait "$pid" 2>/dev/null
    log "client: $(python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); print(len(c["acked"]), "acknowledged,", c["failures"], "failed after retries, client-visible errors:", c["errors"] or "none")' "$tmp/client.json")"
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
log "project $project, http on a free loopback port; $([ "$infra_only" -eq 1 ] && echo 'infrastructure only' || echo 'full walkthrough')"
run_step "docker compose v2 available" step_compose_v2 || finish
run_step "images built locally (debian, postgres, switchboard)" step_images || finish
run_step "compose config valid, refuses a missing cookie" step_config || finish
run_step "docker compose up -d" step_up || finish
run_step "containers healthy (postgres + every node)" step_healthy || finish
run_step "http GET /healthz answers 200" step_http_health
if [ "$infra_only" -eq 1 ]; then
    finish
fi
run_step "http GET /readyz answers 200 (database reachable)" step_readyz
run_step "register two users, log in, wrong password refused" step_register_login
run_step "create a room, second user joins" step_room
run_step "post and list messages, 401 without a token" step_messages
run_step "SSE: a message event arrives after posting" step_sse
run_step "admin cluster: token required, every service live" step_admin_cluster
run_step "scale database to 3: 3 live database nodes" step_scale
run_step "200 idempotent posts while a database node is killed" step_failover
run_step "analytics cut off the network: down, then back up" step_partition
finish
