#!/usr/bin/env bash
# Scenarios beyond steady state, each with the same load generator on loopback TLS:
#
#   reconnect   a new connection with a full TLS handshake for every request (handshakes/s):
#               one kes node against OpenBao, alternating
#   create      key creation through Raft: one kes node (filesystem keystore), a three-node
#               cluster (filesystem keystore) through all endpoints, OpenBao transit key
#               creation for reference, alternating
#   create-openbao  the same through a cluster whose keystore is OpenBao (KV engine, AppRole
#               login), alternating with OpenBao transit key creation
#   leaderkill  generate/decrypt through all three endpoints (closed loop) plus open-loop
#               creates, while the leader is killed with SIGKILL mid-run: errors, the
#               throughput second by second, time to a new leader, restart-to-ready
#   kmsdown     generate/decrypt on a cluster whose keystore is OpenBao, with OpenBao up,
#               stopped (SIGSTOP: hung) and killed, alternating up and down
#
#   benches/scenarios.sh                         every scenario
#   SCENARIOS="reconnect leaderkill" NAME=part benches/scenarios.sh   some, into part.{json,md}
#   ROUNDS=3 SECONDS_PER_RUN=10 KILL_RUN=30 benches/scenarios.sh
#
# The OpenBao-keystore parts need a kes that serves `keystore: vault:`; when the nodes do not
# start with it, those parts are reported as skipped. Results: benches/results/scenarios.json
# and benches/results/scenarios.md (NAME=other: other.json and other.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-16}"
SCENARIOS="${SCENARIOS:-reconnect create leaderkill create-openbao kmsdown}"
NAME="${NAME:-scenarios}"
# Length of the leader-kill run and when in it the leader is killed (seconds).
KILL_RUN="${KILL_RUN:-30}"
KILL_AT="${KILL_AT:-12}"
# Open-loop create rate during the leader kill (requests per second).
KILL_CREATE_RATE="${KILL_CREATE_RATE:-50}"

OUT="$WORK/scen"
mkdir -p "$OUT" "$RESULTS"
EXTRAS="$OUT/extras.tsv"
: >"$EXTRAS"
# A figure for the report: scenario, name, value.
extra() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$EXTRAS"; }
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }

kb_build
kb_install_openbao
step "start a single kes node and OpenBao"
kb_start_single
kb_start_openbao

KES_T=(--target kes -s "$KES_URL" --ca "$KES_CA" --api-key "$KES_KEY")
BAO_T=(--target openbao -s "$BAO_URL" --ca "$BAO_CA" --token "$BAO_TOKEN_VALUE")
cluster_t() { echo "--target kes -s $1 --ca $CLUSTER_CA --api-key $CLUSTER_KEY"; }
COMMON=(-c "$CONCURRENCY" --warmup "$WARMUP" -d "${SECONDS_PER_RUN}s" --wait 30s -q)

# bench SCENARIO LABEL ROUND kes-bench-args...
bench() {
    local scen="$1" label="$2" round="$3"
    shift 3
    "$BIN/kes-bench" "$@" --label "$label" --json "$OUT/$scen--$label--$round.json" | sed "s/^/  /" ||
        echo "  (the run failed: $label)"
}

start_cluster() { # [keystore yaml]
    kb_generate_cluster 3 || return 1
    if [ -n "${1:-}" ]; then
        kb_cluster_keystore "$1" || return 1
    fi
    kb_start_nodes 3 || return 1
    echo "leader: node $(kb_wait_leader)"
}

stop_cluster() {
    local i
    for i in 1 2 3; do kb_stop_node "$i"; done
}

if has reconnect; then
    for ((r = 1; r <= ROUNDS; r++)); do
        step "reconnect storm, round $r/$ROUNDS"
        bench reconnect kes "$r" "${KES_T[@]}" "${COMMON[@]}" -m generate --reconnect
        bench reconnect openbao "$r" "${BAO_T[@]}" "${COMMON[@]}" -m generate --reconnect
    done
fi

CLUSTER_UP=""
if has create || has leaderkill; then
    step "start a three-node cluster (filesystem keystore)"
    start_cluster
    CLUSTER_UP=1
fi

if has create; then
    for ((r = 1; r <= ROUNDS; r++)); do
        step "create throughput, round $r/$ROUNDS"
        bench create kes-fs "$r" "${KES_T[@]}" "${COMMON[@]}" -m create
        # shellcheck disable=SC2046
        bench create cluster-fs "$r" $(cluster_t "$(cluster_urls 3)") "${COMMON[@]}" -m create
        bench create openbao-transit "$r" "${BAO_T[@]}" "${COMMON[@]}" -m create
    done
fi

if has leaderkill; then
    step "leader kill: ${KILL_RUN}s of generate/decrypt through all endpoints, SIGKILL to the leader at ${KILL_AT}s"
    old="$(kb_wait_leader)"
    t0="$(now_ms)"
    # shellcheck disable=SC2046
    "$BIN/kes-bench" $(cluster_t "$(cluster_urls 3)") -c "$CONCURRENCY" --warmup 0s \
        -d "${KILL_RUN}s" -q -m generate=1,decrypt=1 --label crypto \
        --json "$OUT/leaderkill--crypto--1.json" >"$OUT/leaderkill-crypto.txt" &
    crypto=$!
    # shellcheck disable=SC2046
    "$BIN/kes-bench" $(cluster_t "$(cluster_urls 3)") -c 8 --warmup 0s -d "${KILL_RUN}s" -q \
        -m create --rate "$KILL_CREATE_RATE" --label create-open-loop \
        --json "$OUT/leaderkill--create-open-loop--1.json" >"$OUT/leaderkill-create.txt" &
    creates=$!
    sleep "$KILL_AT"
    old="$(kb_leader "$old" 2>/dev/null || echo "$old")"
    tk="$(now_ms)"
    kb_stop_node "$old" KILL
    echo "killed node $old (the leader) at $(((tk - t0) / 1000))s"
    new=""
    for ((i = 0; i < 600; i++)); do
        [ -z "$new" ] || break
        for n in 1 2 3; do
            [ "$n" = "$old" ] && continue
            l="$(kb_leader "$n" 2>/dev/null || true)"
            if [ -n "$l" ] && [ "$l" != "$old" ]; then
                new="$l"
                break
            fi
        done
        [ -n "$new" ] || sleep 0.05
    done
    tn="$(now_ms)"
    echo "new leader: node ${new:-none} after $(((tn - tk)))ms"
    wait "$crypto" || true
    wait "$creates" || true
    sed 's/^/  /' "$OUT/leaderkill-crypto.txt" "$OUT/leaderkill-create.txt"
    extra leaderkill "killed at (s after the run started)" "$(((tk - t0) / 1000))"
    extra leaderkill "new leader seen after (ms)" "$((tn - tk))"
    kb_start_node "$old"
    t="$(kb_wait_node "$old" 120s)"
    echo "node $old restarted after SIGKILL, ready after ${t}s"
    extra leaderkill "restart after SIGKILL: ready after (s)" "$t"
fi

if [ -n "$CLUSTER_UP" ]; then
    stop_cluster
fi

if has create-openbao || has kmsdown; then
    step "a three-node cluster whose keystore is OpenBao (KV v1 engine, AppRole login)"
    "$BAO" secrets enable -path=kv -version=1 kv >/dev/null
    "$BAO" auth enable approle >/dev/null
    printf 'path "kv/*" {\n  capabilities = ["create", "read", "update", "delete", "list"]\n}\n' |
        "$BAO" policy write kes - >/dev/null
    "$BAO" write auth/approle/role/kes token_policies=kes token_ttl=1h secret_id_ttl=0 >/dev/null
    ROLE_ID="$("$BAO" read -field=role_id auth/approle/role/kes/role-id)"
    SECRET_ID="$("$BAO" write -f -field=secret_id auth/approle/role/kes/secret-id)"
    KS="  vault:
    endpoint: $BAO_URL
    engine: kv
    version: v1
    prefix: kes
    approle:
      id: $ROLE_ID
      secret: $SECRET_ID
    tls:
      ca: $BAO_CA
"
    if start_cluster "$KS"; then
        BAO_CLUSTER=1
    else
        BAO_CLUSTER=""
        echo "skipped: this kes does not serve an OpenBao keystore"
        extra openbao-keystore "skipped" "the nodes did not start with keystore: vault"
        stop_cluster
    fi
    if [ -n "$BAO_CLUSTER" ] && has create-openbao; then
        for ((r = 1; r <= ROUNDS; r++)); do
            step "create throughput with the OpenBao keystore, round $r/$ROUNDS"
            # shellcheck disable=SC2046
            bench create cluster-openbao-kv "$r" $(cluster_t "$(cluster_urls 3)") "${COMMON[@]}" -m create
            bench create openbao-transit "$((r + ROUNDS))" "${BAO_T[@]}" "${COMMON[@]}" -m create
        done
    fi
    if [ -n "$BAO_CLUSTER" ] && has kmsdown; then
        ALL="$(cluster_urls 3)"
        for ((r = 1; r <= ROUNDS; r++)); do
            for op in generate decrypt; do
                step "KMS up, round $r/$ROUNDS: $op"
                # The first run creates the key; later ones must not depend on the KMS.
                create=()
                [ "$r$op" = 1generate ] || create=(--no-create)
                # shellcheck disable=SC2046
                bench kmsdown "kms-up-$op" "$r" $(cluster_t "$ALL") "${COMMON[@]}" -m "$op" "${create[@]}"
                step "KMS down (OpenBao stopped with SIGSTOP), round $r/$ROUNDS: $op"
                kill -STOP "$BAO_PID"
                # shellcheck disable=SC2046
                bench kmsdown "kms-hung-$op" "$r" $(cluster_t "$ALL") "${COMMON[@]}" -m "$op" --no-create
                kill -CONT "$BAO_PID"
                # Writes need the KMS: how long until a create succeeds again.
                t0="$(now_ms)"
                resumed=""
                for ((i = 0; i < 600; i++)); do
                    if "$BIN/kes" key create "kms-probe-$r-$op" -s "$ALL" --ca "$CLUSTER_CA" \
                        -a "$CLUSTER_KEY" >/dev/null 2>&1; then
                        resumed="$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')"
                        break
                    fi
                    sleep 0.1
                done
                echo "creates succeed again ${resumed:-(not within the limit)}s after OpenBao resumed"
                extra kmsdown "round $r, $op: creates succeed again after OpenBao resumed (s)" "${resumed:-no}"
            done
        done
        step "KMS gone (OpenBao killed)"
        kill -KILL "$BAO_PID"
        wait "$BAO_PID" 2>/dev/null || true
        for op in generate decrypt; do
            # shellcheck disable=SC2046
            bench kmsdown "kms-killed-$op" 1 $(cluster_t "$ALL") "${COMMON[@]}" -m "$op" --no-create
        done
        # A node restarted while the KMS is gone gets the cache key from its peers.
        kb_stop_node 2
        kb_start_node 2
        if t="$(kb_wait_node 2 60s)"; then
            extra kmsdown "node restarted while the KMS is gone: ready after (s)" "$t"
        else
            extra kmsdown "node restarted while the KMS is gone" "not ready within 60 s"
        fi
    fi
    if [ -n "$BAO_CLUSTER" ]; then
        stop_cluster
    fi
fi

step "summary"
kb_meta_args
printf '%s\n' "${META[@]}" | grep -v '^--meta$' >"$OUT/meta.txt"
echo "method=$ROUNDS rounds x ${SECONDS_PER_RUN}s after $WARMUP warm-up per target, alternating; $CONCURRENCY requests in flight; load generator and servers on one machine over loopback TLS; medians over the rounds" >>"$OUT/meta.txt"
python3 - "$OUT" "$RESULTS" "$NAME" <<'EOF'
import glob, json, os, statistics, sys
out, results, name = sys.argv[1], sys.argv[2], sys.argv[3]
runs = {}
for p in sorted(glob.glob(f"{out}/*--*--*.json"), key=os.path.getmtime):
    scen, label, rnd = os.path.basename(p)[:-5].split("--")
    runs.setdefault(scen, {}).setdefault(label, []).append(json.load(open(p)))
extras = [l.rstrip("\n").split("\t") for l in open(f"{out}/extras.tsv") if l.strip()]
meta = [l.strip() for l in open(f"{out}/meta.txt") if l.strip()]

def med(v):
    return statistics.median(v) if v else 0.0

summary = {"meta": meta, "scenarios": {}, "figures": [{"scenario": s, "name": n, "value": v} for s, n, v in extras]}
md = []
titles = {
    "reconnect": "Reconnect storm: a new connection and full TLS handshake per request (ops/s = handshakes/s)",
    "create": "Key creation (through Raft for the cluster; OpenBao transit key creation for reference)",
    "kmsdown": "Generate/decrypt with the KMS (OpenBao) up, hung (SIGSTOP) and killed",
    "leaderkill": "Leader killed with SIGKILL during the run (all three endpoints)",
}
for scen in ["reconnect", "create", "kmsdown", "leaderkill"]:
    if scen not in runs:
        continue
    md.append(f"### {titles[scen]}\n")
    md.append("| target | runs | ops/s (median) | ops/s (min – max) | p50 ms | p99 ms | max ms | errors |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for label, rs in runs[scen].items():
        tp = [r["total"]["throughput"] for r in rs]
        row = {
            "label": label,
            "runs": len(rs),
            "throughput_median": med(tp),
            "throughput_min": min(tp),
            "throughput_max": max(tp),
            "p50_ms": med([r["total"]["latency"]["p50_ms"] for r in rs]),
            "p99_ms": med([r["total"]["latency"]["p99_ms"] for r in rs]),
            "max_ms": max(r["total"]["latency"]["max_ms"] for r in rs),
            "ok": sum(r["total"]["ok"] for r in rs),
            "errors": sum(r["total"]["errors"] for r in rs),
            "error_kinds": {k: v for r in rs for k, v in r["errors"].items()},
        }
        if scen == "leaderkill":
            tl = rs[0].get("timeline", [])
            row["timeline"] = tl
            if tl:
                row["worst_second_ok"] = min(t["ok"] for t in tl[1:-1] or tl)
                row["seconds_with_errors"] = sum(1 for t in tl if t["errors"])
        rows.append(row)
        md.append(
            f"| {label} | {row['runs']} | {row['throughput_median']:,.0f} | {row['throughput_min']:,.0f} – {row['throughput_max']:,.0f} "
            f"| {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['max_ms']:.1f} | {row['errors']} |"
        )
    summary["scenarios"][scen] = rows
    md.append("")
    if scen == "kmsdown":
        for op in ["generate", "decrypt"]:
            up = next((r for r in rows if r["label"] == f"kms-up-{op}"), None)
            for state in ["hung", "killed"]:
                down = next((r for r in rows if r["label"] == f"kms-{state}-{op}"), None)
                if up and down and up["throughput_median"]:
                    md.append(f"- {op}: KMS {state} / KMS up = {down['throughput_median'] / up['throughput_median']:.2f}×")
        md.append("")
    if scen == "leaderkill":
        for r in rows:
            if r.get("timeline"):
                secs = " ".join(f"{t['ok']}" + (f"(+{t['errors']} err)" if t["errors"] else "") for t in r["timeline"])
                md.append(f"- {r['label']}: successful requests per second: {secs}")
                if r["error_kinds"]:
                    md.append(f"- {r['label']}: errors by kind: {r['error_kinds']}")
        md.append("")
if extras:
    md.append("| scenario | figure | value |")
    md.append("|---|---|---|")
    for s, n, v in extras:
        md.append(f"| {s} | {n} | {v} |")
    md.append("")
for m in meta:
    k, _, v = m.partition("=")
    md.append(f"- {k}: {v}")
open(f"{results}/{name}.json", "w").write(json.dumps(summary, indent=2) + "\n")
open(f"{results}/{name}.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo
echo "wrote $RESULTS/$NAME.json and $RESULTS/$NAME.md"
