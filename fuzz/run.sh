#!/usr/bin/env bash
# Builds the AFL++ fuzz targets of fuzz/ and runs each for a fixed number of executions from its
# committed seed corpus; fails if any target crashes or hangs. Installs what it needs on a clean
# Debian machine (a C toolchain for AFL++, cargo-afl at a pinned version, AFL++ itself).
# Prints one line per target with its executions, then "fuzz: N passed, M failed".
#
# FUZZ_EXECS sets the executions per target (default 200000; with the 30 s cap, under 2 minutes in all on 2
# cores); FUZZ_TIMEOUT bounds each target's wall time in seconds (default 30) in case the
# machine is slower than expected.
set -euo pipefail
cd "$(dirname "$0")"

CARGO_AFL_VERSION=0.18.2
EXECS="${FUZZ_EXECS:-200000}"
LIMIT="${FUZZ_TIMEOUT:-30}"
TARGETS=(batch frame handshake)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
# AFL++'s runtime is built from C source by `cargo afl config --build`.
if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential
fi
if [ "$(cargo afl --version 2>/dev/null | awk '{print $2}')" != "$CARGO_AFL_VERSION" ]; then
    cargo install --locked cargo-afl --version "$CARGO_AFL_VERSION"
fi
# Builds AFL++ for this rustc once; a no-op when it is already there.
afl_home="${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs"
rustc_version="$(rustc --version | awk '{print $2}')"
if ! compgen -G "$afl_home/rustc-$rustc_version-*/afl.rs-$CARGO_AFL_VERSION/afl/bin/afl-fuzz" >/dev/null; then
    cargo afl config --build
fi

# A debug build: it compiles in a fraction of a release build's time (the handshake target pulls in
# the whole runtime crate), runs with overflow checks and debug assertions on, and still reaches
# the executions below within the time cap.
CARGO_INCREMENTAL=0 cargo afl build --locked

# CI machines have no core-dump handler to wait for, and may run with other load on the CPU.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_BENCH_UNTIL_CRASH=1 AFL_NO_AFFINITY=1
mkdir -p out
passed=0
failed=0
for target in "${TARGETS[@]}"; do
    out="out/$target"
    rm -rf "$out"
    # -E stops after EXECS executions; a crash stops it at once (AFL_BENCH_UNTIL_CRASH).
    timeout --signal=INT "$((LIMIT + 30))" cargo afl fuzz -i "corpus/$target" -o "$out" \
        -E "$EXECS" -V "$LIMIT" -t 1000 "target/debug/$target" >"$out.log" 2>&1 || true
    stats="$out/default/fuzzer_stats"
    execs="$(awk -F' *: *' '$1=="execs_done"{print $2}' "$stats" 2>/dev/null || echo 0)"
    crashes="$(find "$out/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)"
    hangs="$(find "$out/default/hangs" -type f -name 'id:*' 2>/dev/null | wc -l)"
    if [ ! -f "$stats" ]; then
        echo "fuzz $target: did not start (see fuzz/$out.log)"
        tail -20 "$out.log" || true
        failed=$((failed + 1))
    elif [ "$crashes" -gt 0 ] || [ "$hangs" -gt 0 ]; then
        echo "fuzz $target: $execs execs, $crashes crashes, $hangs hangs (inputs in fuzz/$out/default)"
        failed=$((failed + 1))
    else
        echo "fuzz $target: $execs execs, no crash, no hang"
        passed=$((passed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
