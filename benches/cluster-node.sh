#!/usr/bin/env bash
# Server CPU per operation of a cluster node against a single node and the floor, in one run:
#
#   floor            kes-floor (see compare-builds.sh)
#   single           one kes node, no cluster section
#   cluster-leader   the leader of a three-node cluster, driven alone
#   cluster-follower a follower of that cluster, driven alone
#   cluster-all      the three endpoints together (kes-bench only: oha takes one URL), CPU of
#                    the three nodes summed
#
# generate and decrypt are served by every node from its own key cache, so a node's CPU per
# operation should be the single node's; the difference is what membership costs (Raft
# heartbeats, the cluster's housekeeping). Same loads, tools, warm-up and method as
# compare-builds.sh; every kes runs the working tree's build with the default log settings.
#
#   benches/cluster-node.sh                         3 rounds x 10 s, both tools, all loads
#   ROUNDS=1 SECONDS_PER_RUN=5 TOOLS=oha LOADS=h1 benches/cluster-node.sh
#
# Results: benches/results/$NAME.{json,md,-*.svg} (NAME defaults to cluster-node).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
OPS="${OPS:-generate decrypt}"
LOADS="${LOADS:-h1 h2x8 h2x16}"
TOOLS="${TOOLS:-oha kes-bench}"
TARGETS="${TARGETS:-floor single cluster-leader cluster-follower cluster-all}"
NAME="${NAME:-cluster-node}"
OHA_VERSION="${OHA_VERSION:-1.16.0}"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average before: $LOAD_BEFORE"
kb_build
kb_install_oha
kb_bench_certs

step "start the floor and a single node"
kb_start_floor
kb_start_kes single "$BIN/kes"

step "start a three-node cluster (kes cluster local, filesystem keystore)"
kb_generate_cluster 3
# The cluster's admin is the benchmark's client certificate, so oha and kes-bench can use it.
python3 - "$CLUSTER_DIR" 3 "$ADMIN" <<'EOF'
import re, sys
d, n, admin = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(1, n + 1):
    p = f"{d}/node{i}/config.yaml"
    text = open(p).read()
    text, k = re.subn(r"(admin:\n  identity: )\S+", r"\g<1>" + admin, text)
    if k != 1:
        sys.exit(f"{p}: no admin identity to replace")
    open(p, "w").write(text)
EOF
CLUSTER_KEY="$API_KEY"
for i in 1 2 3; do kb_start_node "$i"; done
for i in 1 2 3; do kb_wait_node "$i" 60s >/dev/null; done
LEADER="$(kb_wait_leader)"
FOLLOWER=$((LEADER % 3 + 1))
echo "leader: node $LEADER, follower driven: node $FOLLOWER"
URL[cluster-leader]="$(node_url "$LEADER")"
URL[cluster-follower]="$(node_url "$FOLLOWER")"
URL[cluster-all]="$(cluster_urls 3)"
for t in cluster-leader cluster-follower cluster-all; do CA[$t]="$CLUSTER_CA"; done
PID[cluster-leader]="${NODE_PID[$LEADER]}"
PID[cluster-follower]="${NODE_PID[$FOLLOWER]}"
PID[cluster-all]="${NODE_PID[1]} ${NODE_PID[2]} ${NODE_PID[3]}"
for t in floor single cluster-leader cluster-follower; do kb_prepare_key "$t"; done
# The key is replicated: a ciphertext of one node decrypts on every node.
DECRYPT_BODY[cluster-all]="${DECRYPT_BODY[cluster-leader]}"

mkdir -p "$WORK/runs" "$RESULTS"
RUNS="$WORK/runs.jsonl"
: >"$RUNS"
for ((round = 1; round <= ROUNDS; round++)); do
    for tool in $TOOLS; do
        for load in $LOADS; do
            for op in $OPS; do
                step "round $round/$ROUNDS: $tool $load $op"
                for t in $TARGETS; do
                    # oha drives one URL.
                    [ "$tool" = oha ] && [ "$t" = cluster-all ] && continue
                    kb_measure "$round" "$tool" "$load" "$op" "$t" "${PID[$t]}"
                done
            done
        done
    done
done

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average after: $LOAD_AFTER"
step "summary"
python3 "$ROOT/benches/compare_builds.py" summary --runs "$RUNS" --baseline single \
    --out "$RESULTS/$NAME" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --meta "machine=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores, $(uname -sr)" \
    --meta "load average before=$LOAD_BEFORE" \
    --meta "load average after=$LOAD_AFTER" \
    --meta "kes=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates benches || echo +changes)" \
    --meta "method=$ROUNDS rounds x ${SECONDS_PER_RUN}s per tool, load, op and target after a 1 s warm-up run; targets alternating innermost; load generator and servers on the same machine over loopback TLS; medians over the rounds; cluster-all: CPU of the three nodes summed" \
    --meta "oha=$("$OHA" --version 2>/dev/null | head -1 || echo none)" \
    --meta "rustc=$(rustc --version)"
echo
echo "wrote $RESULTS/$NAME.json, $RESULTS/$NAME.md and $RESULTS/$NAME-*.svg"
