#!/usr/bin/env bash
# Server CPU per operation, throughput and latency of two builds of kes next to a floor, in one
# run, with two load generators:
#
#   floor     kes-floor: mutual TLS (the same rustls configuration as kes), HTTP/1.1 and HTTP/2,
#             reads the body, answers a fixed 150-byte JSON; no routing, no crypto, no logging
#   baseline  kes built from BASE (default 14f6097) in a git worktree under the target directory
#   current   kes built from the working tree
#
# Both kes builds run as single nodes with the same configuration (filesystem keystore, mutual
# TLS, the admin identity an API key's certificate, `log:` left at its default unless LOG_AUDIT
# is set); stdout goes to /dev/null, the cheapest sink there is (a file or journald's pipe
# costs more per line). The load: POST /v1/key/generate|decrypt/<key> with {"context":"e30="}
# (a ciphertext the server produced for decrypt), closed loop, driven by
#
#   oha        a neutral load generator (crates.io; installed under the target directory when
#              missing), --no-tui, the API key's certificate as client certificate
#   kes-bench  the project's load generator, the API key
#
# over HTTP/1.1 with 16 connections (h1), HTTP/2 with 2 connections x 8 streams (h2x8) and
# HTTP/2 with 16 connections x 1 stream (h2x16). Targets alternate innermost, so a change in
# the machine's speed hits all three alike; each measured run is preceded by a 1 s warm-up run.
# Server CPU is utime+stime from /proc/<pid>/stat over the measured run, divided by the
# requests answered; context switches are summed over the server's threads. The summary takes
# medians over the rounds and prints ratios to the floor and to the baseline.
#
#   benches/compare-builds.sh                       3 rounds x 10 s, both tools, all loads
#   BASE=e32857e ROUNDS=5 SECONDS_PER_RUN=20 benches/compare-builds.sh
#   TOOLS=oha LOADS="h1 h2x8" OPS=generate benches/compare-builds.sh
#   LOG_AUDIT=DEBUG benches/compare-builds.sh      both builds print every operation
#   OHA_QPS=25000 TOOLS=oha NAME=compare-builds-rate benches/compare-builds.sh
#                                                   latency at one fixed offered load for all
#
# Results: benches/results/$NAME.{json,md} and $NAME-{throughput,cpu,latency}.svg (NAME
# defaults to compare-builds). SKIP_BUILD=1 reuses target/release; a built baseline is kept in
# the target directory (compare-baseline/kes-<commit>) and reused.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BASE="${BASE:-14f6097}"
ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
OPS="${OPS:-generate decrypt}"
LOADS="${LOADS:-h1 h2x8 h2x16}"
TOOLS="${TOOLS:-oha kes-bench}"
TARGETS="${TARGETS:-floor baseline current}"
NAME="${NAME:-compare-builds}"
LOG_AUDIT="${LOG_AUDIT:-}"
OHA_VERSION="${OHA_VERSION:-1.16.0}"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# The baseline first: its build shares the target directory's dependencies, and the working
# tree's binaries are uplifted into target/release afterwards.
BASE_SHA="$(git rev-parse --short "$BASE^{commit}")"
BASE_DIR="$TARGET_DIR/compare-baseline"
BASE_BIN="$BASE_DIR/kes-$BASE_SHA"
if [ ! -x "$BASE_BIN" ]; then
    step "build the baseline $BASE_SHA (release) in a worktree"
    mkdir -p "$BASE_DIR"
    src="$BASE_DIR/src-$BASE_SHA"
    git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git worktree add --detach "$src" "$BASE_SHA" >/dev/null
    remove_worktree() { git -C "$ROOT" worktree remove --force "$src" 2>/dev/null || true; }
    trap 'remove_worktree; kb_cleanup' EXIT
    (cd "$src" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked -p kes-cli)
    cp "$TARGET_DIR/release/kes" "$BASE_BIN"
    remove_worktree
    trap kb_cleanup EXIT
    # target/release/kes is the baseline's now: build the working tree again.
    rm -f "$TARGET_DIR/release/kes"
    unset SKIP_BUILD
fi
kb_build
if cmp -s "$BIN/kes" "$BASE_BIN"; then
    echo "target/release/kes is the baseline's binary, not the working tree's" >&2
    exit 1
fi

kb_install_oha

kb_bench_certs

step "start the floor, the baseline ($BASE_SHA) and the working tree's kes"
kb_start_floor
kb_start_kes baseline "$BASE_BIN"
kb_start_kes current "$BIN/kes"
CURRENT_SHA="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates benches || echo +changes)"
for t in floor baseline current; do kb_prepare_key "$t"; done

mkdir -p "$WORK/runs" "$RESULTS"
RUNS="$WORK/runs.jsonl"
: >"$RUNS"
for ((round = 1; round <= ROUNDS; round++)); do
    for tool in $TOOLS; do
        for load in $LOADS; do
            for op in $OPS; do
                step "round $round/$ROUNDS: $tool $load $op"
                for t in $TARGETS; do
                    kb_measure "$round" "$tool" "$load" "$op" "$t" "${PID[$t]}"
                done
            done
        done
    done
done

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average after: $LOAD_AFTER"
step "summary"
if [ -n "${OHA_QPS:-}" ]; then
    OFFERED="oha at a fixed $OHA_QPS requests/s in all (kes-bench closed loop)"
else
    OFFERED="closed loop"
fi
python3 "$ROOT/benches/compare_builds.py" summary --runs "$RUNS" \
    --out "$RESULTS/$NAME" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --meta "machine=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores, $(uname -sr)" \
    --meta "load average before=$LOAD_BEFORE" \
    --meta "load average after=$LOAD_AFTER" \
    --meta "baseline=$BASE_SHA" \
    --meta "current=$CURRENT_SHA" \
    --meta "log.audit=${LOG_AUDIT:-default (not set)}" \
    --meta "method=$ROUNDS rounds x ${SECONDS_PER_RUN}s per tool, load, op and target after a 1 s warm-up run; targets alternating innermost; load generator and servers on the same machine over loopback TLS; medians over the rounds" \
    --meta "offered load=$OFFERED" \
    --meta "oha=$("$OHA" --version 2>/dev/null | head -1 || echo none)" \
    --meta "rustc=$(rustc --version)"
echo
echo "wrote $RESULTS/$NAME.json, $RESULTS/$NAME.md and $RESULTS/$NAME-*.svg"
