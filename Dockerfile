# Switchboard: one image holding every node binary (switchboard-node, switchboard-http, -database, -log,
# -reporting, -analytics, and the `switchboard` operator command); each container runs
# one of them (docker-compose.yml sets `command:`). Works with the classic builder (no BuildKit).
#
#   docker build -t switchboard:latest .
#
# With no registry reachable, deploy/docker/offline-images.sh builds the same runtime image from
# host-built binaries instead (deploy/docker/Dockerfile.prebuilt).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- planner: a skeleton of the workspace (manifests, lockfile, empty targets), so that the
# dependency layer below is rebuilt only when a manifest or the lockfile changes. ---------------
FROM ${RUST_IMAGE} AS planner
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /skeleton; \
    cp Cargo.toml Cargo.lock /skeleton/; \
    for extra in .cargo rust-toolchain rust-toolchain.toml; do \
        if [ -e "$extra" ]; then cp -R "$extra" /skeleton/; fi; \
    done; \
    find . -name Cargo.toml -not -path './target/*' -not -path './Cargo.toml' | while read -r manifest; do \
        dir=$(dirname "$manifest"); \
        mkdir -p "/skeleton/$dir"; \
        cp "$manifest" "/skeleton/$manifest"; \
        (cd "$dir" && find . \( -path ./src/lib.rs -o -path ./build.rs -o -path ./src/main.rs \
            -o -path './src/bin/*.rs' -o -path './src/bin/*/main.rs' -o -path './benches/*.rs' \
            -o -path './examples/*.rs' -o -path './tests/*.rs' \) -type f) | while read -r target; do \
            mkdir -p "$(dirname "/skeleton/$dir/$target")"; \
            case "$target" in \
                ./src/lib.rs) : > "/skeleton/$dir/$target" ;; \
                *) echo 'fn main() {}' > "/skeleton/$dir/$target" ;; \
            esac; \
        done; \
    done

# --- builder ------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Dependencies only (cached while no manifest changes).
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked
# The real sources. Their files are made newer than the skeleton's build so that cargo rebuilds
# every workspace crate (COPY keeps the context's modification times).
COPY . .
ARG SERVICE_BINARIES="switchboard switchboard-node switchboard-http switchboard-database switchboard-log switchboard-reporting switchboard-analytics"
RUN set -eu; \
    find . -path ./target -prune -o -type f \( -name '*.rs' -o -name '*.proto' -o -name '*.sql' \) -exec touch {} +; \
    cargo build --release --locked; \
    mkdir -p /out; \
    for bin in $SERVICE_BINARIES; do \
        test -x "target/release/$bin" || { echo "missing binary $bin" >&2; exit 1; }; \
        cp "target/release/$bin" /out/; \
    done; \
    ls -l /out

# --- runtime ------------------------------------------------------------------------------------
# Keep in step with deploy/docker/Dockerfile.prebuilt.
FROM ${RUNTIME_IMAGE} AS runtime
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 switchboard; \
    useradd --system --uid 10001 --gid switchboard --home-dir /var/lib/switchboard \
        --shell /usr/sbin/nologin switchboard; \
    install -d -o switchboard -g switchboard -m 0750 /var/lib/switchboard

COPY --from=builder /out/ /usr/local/bin/

ENV SWITCHBOARD_DATA_DIR=/var/lib/switchboard
WORKDIR /var/lib/switchboard
USER 10001:10001
# 7070 inter-node gRPC, 8080 the http node's API, 9090 metrics and /healthz.
EXPOSE 7070 8080 9090
CMD ["switchboard-http"]
