#!/usr/bin/env bash
# A three-node cluster holding many keys (100,000 by default, filesystem keystore):
#
#   - fills it through the API with concurrent creates on all endpoints (create throughput),
#   - resident memory (VmRSS) per node, the size of each node's data directory and of the
#     keystore,
#   - restarts each node in turn (SIGTERM, start) and measures the time from process start
#     to GET /v1/ready answering 200, then restarts the whole cluster at once,
#   - starts a fourth node, adds it with `kes cluster add` and measures the time until it has
#     every key (a snapshot install, since the leader's log has been compacted).
#
#   benches/scale.sh
#   KEYS=20000 benches/scale.sh                a smaller run
#
# Every wait is bounded (FILL_LIMIT for the fill, 120 s for each readiness). Results:
# benches/results/scale.json and benches/results/scale.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KEYS="${KEYS:-100000}"
FILL_CONCURRENCY="${FILL_CONCURRENCY:-32}"
FILL_LIMIT="${FILL_LIMIT:-900s}"

OUT="$WORK/scale"
mkdir -p "$OUT" "$RESULTS"
FIG="$OUT/figures.tsv"
: >"$FIG"
fig() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$FIG"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
du_kib() { du -sk "$1" 2>/dev/null | cut -f1; }

kb_build
step "generate a four-node cluster (three initial members, the fourth joins later)"
kb_generate_cluster 4 3
for i in 1 2 3; do kb_start_node "$i"; done
for i in 1 2 3; do
    t="$(kb_wait_node "$i" 60s)"
    echo "node $i ready after ${t}s"
    fig "empty cluster" "node $i: start to ready (s)" "$t"
    fig "empty cluster" "node $i: resident memory (MiB)" "$(mib "$(rss_kib "${NODE_PID[$i]}")")"
done
LEADER="$(kb_wait_leader)"
echo "leader: node $LEADER"
ALL="$(cluster_urls 3)"
ADMIN=(--ca "$CLUSTER_CA" -a "$CLUSTER_KEY")

step "fill: $KEYS creates, $FILL_CONCURRENCY in flight, through all endpoints"
"$BIN/kes-bench" --target kes -s "$ALL" --ca "$CLUSTER_CA" --api-key "$CLUSTER_KEY" \
    -m create -n "$KEYS" -c "$FILL_CONCURRENCY" --warmup 0s -d "$FILL_LIMIT" --timeout 30s \
    --key-prefix scale --label fill --json "$OUT/fill.json" | sed 's/^/  /'
read -r FILLED FILL_RATE FILL_SECS FILL_ERR < <(python3 -c '
import json,sys; r=json.load(open(sys.argv[1]))
print(r["total"]["ok"], round(r["total"]["throughput"]), round(r["duration_s"], 1), r["total"]["errors"])' "$OUT/fill.json")
fig fill "keys created" "$FILLED"
fig fill "creates per second" "$FILL_RATE"
fig fill "fill time (s)" "$FILL_SECS"
fig fill "errors" "$FILL_ERR"
for i in 1 2 3; do
    "$BIN/kes-bench" wait -s "$(node_url "$i")" --ca "$CLUSTER_CA" --api-key "$CLUSTER_KEY" \
        --keys "$FILLED" --timeout 120s >/dev/null
done
sleep 2

measure() { # label nodes...
    local label="$1" i
    shift
    for i in "$@"; do
        fig "$label" "node $i: resident memory (MiB)" "$(mib "$(rss_kib "${NODE_PID[$i]}")")"
        fig "$label" "node $i: data directory (MiB)" "$(mib "$(du_kib "$CLUSTER_DIR/node$i/data")")"
    done
}
step "memory and disk with $FILLED keys"
measure "$FILLED keys" 1 2 3
fig "$FILLED keys" "filesystem keystore (MiB)" "$(mib "$(du_kib "$CLUSTER_DIR/keys")")"
t0="$(now_ms)"
"$BIN/kes" cluster snapshot -s "$(node_url "$LEADER")" "${ADMIN[@]}"
fig "$FILLED keys" "snapshot on the leader (s)" "$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.3f", (b - a) / 1000 }')"
measure "after a snapshot" 1 2 3

step "restart each node in turn (SIGTERM, start): time to ready"
for i in 1 2 3; do
    kb_stop_node "$i"
    kb_start_node "$i"
    t="$(kb_wait_node "$i" 120s)"
    "$BIN/kes-bench" wait -s "$(node_url "$i")" --ca "$CLUSTER_CA" --api-key "$CLUSTER_KEY" \
        --keys "$FILLED" --timeout 120s >/dev/null
    echo "node $i ready ${t}s after its start"
    fig restart "node $i: start to ready (s)" "$t"
done
sleep 2
measure "after restarting each node" 1 2 3

step "restart the whole cluster at once"
for i in 1 2 3; do kb_stop_node "$i"; done
for i in 1 2 3; do kb_start_node "$i"; done
for i in 1 2 3; do
    t="$(kb_wait_node "$i" 120s)"
    echo "node $i ready ${t}s after its start"
    fig "whole-cluster restart" "node $i: start to ready (s)" "$t"
done
LEADER="$(kb_wait_leader)"

step "add a fourth node: snapshot install"
kb_start_node 4
sleep 1
t0="$(now_ms)"
"$BIN/kes" cluster add 4 "$(node_peer 4)" -s "$(node_url "$LEADER")" "${ADMIN[@]}"
t_add="$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.3f", (b - a) / 1000 }')"
t_keys="$("$BIN/kes-bench" wait -s "$(node_url 4)" --ca "$CLUSTER_CA" --api-key "$CLUSTER_KEY" \
    --keys "$FILLED" --since "$t0" --timeout 300s)"
t_ready="$("$BIN/kes-bench" wait -s "$(node_url 4)" --ca "$CLUSTER_CA" --api-key "$CLUSTER_KEY" \
    --since "$t0" --timeout 120s)"
echo "node 4: add returned after ${t_add}s, all $FILLED keys after ${t_keys}s, ready after ${t_ready}s"
fig "new node" "kes cluster add returned after (s)" "$t_add"
fig "new node" "every key present after (s)" "$t_keys"
fig "new node" "ready after (s)" "$t_ready"
fig "new node" "log lines mentioning a snapshot" "$(grep -ci snapshot "$CLUSTER_DIR/node4/node.log" || true)"
sleep 2
measure "new node" 4

step "summary"
kb_meta_args
printf '%s\n' "${META[@]}" | grep -v '^--meta$' >"$OUT/meta.txt"
echo "method=one run; cluster from kes cluster local (filesystem keystore), $KEYS keys created through the API by kes-bench -m create -c $FILL_CONCURRENCY on all endpoints; resident memory from /proc/<pid>/status VmRSS, data directory from du; ready = GET /v1/ready answers 200, polled every 20 ms, counted from the process start" >>"$OUT/meta.txt"
python3 - "$FIG" "$OUT/meta.txt" "$OUT/fill.json" "$RESULTS" <<'EOF'
import json, sys
fig, meta, fill, results = sys.argv[1:5]
rows = [l.rstrip("\n").split("\t") for l in open(fig) if l.strip()]
meta = [l.strip() for l in open(meta) if l.strip()]
md = ["| stage | figure | value |", "|---|---|---:|"]
md += [f"| {s} | {n} | {v} |" for s, n, v in rows]
md.append("")
for m in meta:
    k, _, v = m.partition("=")
    md.append(f"- {k}: {v}")
out = {"meta": meta, "figures": [{"stage": s, "name": n, "value": v} for s, n, v in rows],
       "fill": json.load(open(fill))}
open(f"{results}/scale.json", "w").write(json.dumps(out, indent=2) + "\n")
open(f"{results}/scale.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo
echo "wrote $RESULTS/scale.json and $RESULTS/scale.md"
