#!/usr/bin/env bash
# Soak: one kes node (default configuration, filesystem keystore) under a steady open-loop load
# for DURATION seconds (default one hour), sampling the server every SAMPLE seconds: resident
# memory, CPU, threads, open file descriptors. It reports throughput, errors, the latency over
# the whole run and per minute (p99 of each minute's worst second), and whether memory and
# descriptors stayed flat (the last quarter's median against the second quarter's).
#
#   benches/soak.sh                                  1 hour at 5,000 requests/s
#   DURATION=180 benches/soak.sh                     a 3-minute check that it works
#   RATE=20000 MIX=generate=3,decrypt=1 PROTO=h2 CONNECTIONS=2 benches/soak.sh
#   TARGET=cluster benches/soak.sh                   a three-node cluster, all endpoints
#
# Bounded: kes-bench stops after DURATION seconds, the sampler with it. Results:
# benches/results/$NAME.{json,md} (NAME defaults to soak). SKIP_BUILD=1 reuses target/release.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION="${DURATION:-3600}"
RATE="${RATE:-5000}"
MIX="${MIX:-generate=1,decrypt=1}"
PROTO="${PROTO:-h1}"
CONCURRENCY="${CONCURRENCY:-64}"
CONNECTIONS="${CONNECTIONS:-}"
KEYS="${KEYS:-16}"
SAMPLE="${SAMPLE:-10}"
TARGET="${TARGET:-single}"
NAME="${NAME:-soak}"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average before: $LOAD_BEFORE"
kb_build

if [ "$TARGET" = cluster ]; then
    step "start a three-node kes cluster"
    kb_generate_cluster 3
    for i in 1 2 3; do kb_start_node "$i"; done
    for i in 1 2 3; do kb_wait_node "$i" 60s >/dev/null; done
    kb_wait_leader >/dev/null
    SERVER_PIDS="${NODE_PID[1]} ${NODE_PID[2]} ${NODE_PID[3]}"
    ARGS=(-s "$(cluster_urls 3)" --ca "$CLUSTER_CA" --api-key "$CLUSTER_KEY")
else
    step "start a kes node (default log settings)"
    SINGLE_LOG_AUDIT=default kb_start_single
    SERVER_PIDS="$SINGLE_PID"
    ARGS=(-s "$KES_URL" --ca "$KES_CA" --api-key "$KES_KEY")
fi

mkdir -p "$RESULTS"
SAMPLES="$WORK/samples.csv"
echo "t_s,pid,rss_kib,cpu_ticks,threads,fds" >"$SAMPLES"
sample() {
    local t="$1" pid
    for pid in $SERVER_PIDS; do
        [ -d "/proc/$pid" ] || continue
        printf '%s,%s,%s,%s,%s,%s\n' "$t" "$pid" "$(rss_kib "$pid")" \
            "$(awk '{print $14 + $15}' "/proc/$pid/stat")" \
            "$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")" \
            "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" >>"$SAMPLES"
    done
}

step "soak: $MIX at $RATE requests/s for ${DURATION}s ($PROTO, $CONCURRENCY in flight at most)"
CONN_ARGS=()
[ -n "$CONNECTIONS" ] && CONN_ARGS=(--connections "$CONNECTIONS")
START="$(date +%s)"
sample 0
"$BIN/kes-bench" "${ARGS[@]}" --proto "$PROTO" -c "$CONCURRENCY" "${CONN_ARGS[@]}" \
    --keys "$KEYS" -m "$MIX" --rate "$RATE" --warmup 2s -d "${DURATION}s" --wait 30s -q \
    --label "soak" --json "$WORK/soak.json" >"$WORK/soak.txt" &
BENCH=$!
PIDS+=("$BENCH")
while kill -0 "$BENCH" 2>/dev/null; do
    sleep "$SAMPLE"
    sample "$(($(date +%s) - START))"
done
wait "$BENCH"
cat "$WORK/soak.txt"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average after: $LOAD_AFTER"

python3 - "$WORK/soak.json" "$SAMPLES" "$RESULTS/$NAME" "$(getconf CLK_TCK)" \
    "target=$TARGET; $MIX at $RATE/s, $PROTO, ${DURATION}s" "$LOAD_BEFORE" "$LOAD_AFTER" \
    "$(git rev-parse --short HEAD)" <<'EOF'
import csv, json, statistics, sys
report, samples, out, tck, what, before, after, commit = sys.argv[1:]
r = json.load(open(report))
rows = list(csv.DictReader(open(samples)))
pids = sorted({x["pid"] for x in rows})
per_pid = {p: [x for x in rows if x["pid"] == p] for p in pids}
total = r["total"]
mem = {}
for p, xs in per_pid.items():
    n = len(xs)
    q = lambda a, b: [int(x["rss_kib"]) for x in xs[int(n * a):max(int(n * b), int(n * a) + 1)]]
    fq = lambda a, b: [int(x["fds"]) for x in xs[int(n * a):max(int(n * b), int(n * a) + 1)]]
    cpu = (int(xs[-1]["cpu_ticks"]) - int(xs[0]["cpu_ticks"])) / int(tck)
    mem[p] = {
        "rss_mib_start": int(xs[0]["rss_kib"]) / 1024,
        "rss_mib_q2_median": statistics.median(q(0.25, 0.5)) / 1024,
        "rss_mib_q4_median": statistics.median(q(0.75, 1.0)) / 1024,
        "rss_mib_max": max(int(x["rss_kib"]) for x in xs) / 1024,
        "fds_q2_median": statistics.median(fq(0.25, 0.5)),
        "fds_q4_median": statistics.median(fq(0.75, 1.0)),
        "threads_max": max(int(x["threads"]) for x in xs),
        "cpu_s": cpu,
    }
ticks = r.get("timeline") or []
minutes = {}
for t in ticks:
    minutes.setdefault(int(t["t_s"] // 60), []).append(t)
per_minute = [
    {"minute": m, "ok": sum(t["ok"] for t in ts), "errors": sum(t["errors"] for t in ts),
     "worst_p99_ms": max(t["p99_ms"] for t in ts)}
    for m, ts in sorted(minutes.items())
]
res = {"what": what, "commit": commit, "load_before": before, "load_after": after,
       "ok": total["ok"], "errors": total["errors"], "ops_per_s": total["throughput"],
       "latency_ms": total["latency"], "servers": mem, "per_minute": per_minute}
json.dump(res, open(out + ".json", "w"), indent=1)
md = [f"Soak: {what} (commit {commit}; load average before {before}, after {after})", "",
      f"- requests: {total['ok']:,} ok, {total['errors']:,} errors, {total['throughput']:,.0f}/s",
      "- latency ms: p50 {p50_ms:.3f}, p99 {p99_ms:.3f}, p99.9 {p999_ms:.3f}, max {max_ms:.1f}".format(**total["latency"]),
      "", "| server pid | RSS MiB start | RSS MiB 2nd quarter (median) | RSS MiB last quarter (median) | RSS MiB max | fds 2nd / last quarter | threads max | CPU s | CPU us/op |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for p, m in mem.items():
    md.append(f"| {p} | {m['rss_mib_start']:.1f} | {m['rss_mib_q2_median']:.1f} | {m['rss_mib_q4_median']:.1f} | {m['rss_mib_max']:.1f} | {m['fds_q2_median']:.0f} / {m['fds_q4_median']:.0f} | {m['threads_max']} | {m['cpu_s']:.1f} | {m['cpu_s'] * 1e6 / max(total['ok'], 1):.1f} |")
md += ["", "| minute | ok | errors | worst 1-second p99 ms |", "|---:|---:|---:|---:|"]
for m in per_minute:
    md.append(f"| {m['minute']} | {m['ok']:,} | {m['errors']} | {m['worst_p99_ms']:.3f} |")
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo "wrote $RESULTS/$NAME.json and $RESULTS/$NAME.md"
