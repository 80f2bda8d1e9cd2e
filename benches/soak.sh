#!/usr/bin/env bash
# Soak, the scenario of a load-tested production cluster: a three-node kes cluster (filesystem
# keystore) under an open-loop load of the operations MinIO and operators send, at about half
# of the measured capacity, for DURATION seconds (default one hour), through every node's
# endpoint (kes-bench applies kms-go's endpoint order, retries and failover). Halfway through,
# every node is restarted in turn: SIGTERM, wait for it to exit, start it again on the same
# data directory, wait until it answers /v1/ready, let it settle, next node (the leader last).
# Every endpoint is on loopback, so kms-go's rules send every request to the first one (node 1)
# while it answers; nodes 2 and 3 take the load while it is down and for the 30 s that the
# client then leaves it aside.
#
# Every SAMPLE seconds each node (by number, across its restarts) is sampled: resident memory,
# open file descriptors, threads, CPU time. The verdicts (printed as PASS/FAIL lines, written
# to the results; the script exits non-zero if one fails):
#   - errors: no request failed (warm-up and the restarts included);
#   - restarts: every node stopped within STOP_TIMEOUT of SIGTERM and was ready again;
#   - per node, resident memory: the median of the last quarter of the run is at most
#     RSS_MARGIN_PCT % (10) or RSS_MARGIN_MIB (8) MiB above the median of the second quarter
#     (growth is drift; a node that uses less after its restart is not);
#   - per node, file descriptors: likewise, at most FD_MARGIN_PCT % (10) or FD_MARGIN_ABS (5)
#     above (a node of a few dozen descriptors gains one or two from a restart: peer
#     connections);
#   - p99 per minute (the median of the minute's per-second p99s): the median over the last
#     quarter's minutes at most P99_MARGIN_PCT % (50) or P99_MARGIN_MS (1) ms above the second
#     quarter's, the minutes of the restart window (first SIGTERM to the last node's settle
#     time) left out of both and reported on their own.
# The per-minute series are drawn as SVG charts next to the results.
#
#   benches/soak.sh                          1 hour, rate = half of the capacity measured first
#   DURATION=240 benches/soak.sh             a 4-minute check that it all works
#   RATE=20000 benches/soak.sh               a fixed rate (about half of the measured capacity)
#   MIX=generate=3,decrypt=1 PROTO=h2 CONNECTIONS=2 benches/soak.sh
#   TARGET=single benches/soak.sh            one node (no restart)
#
# Settings (environment):
#   DURATION          measured seconds (default 3600); at least 120 with the restart
#   RATE              open-loop requests per second over all endpoints; it should be about half
#                     of what the cluster sustains on this machine with this mix. "auto" (the
#                     default) measures that first: CAPACITY_SECONDS (default 8, after a 2 s
#                     warm-up) of closed loop at CAPACITY_CONCURRENCY (16) in flight, and uses
#                     half of the throughput
#   MIX               operation mix (default generate=90,decrypt=90,encrypt=6,hmac=6,describe=7,
#                     create-delete=1: 45 % each generate and decrypt, 3 % each encrypt, hmac,
#                     3.5 % describe, 0.5 % create-delete)
#   PROTO, CONCURRENCY (most requests in flight, 64), CONNECTIONS (per endpoint), KEYS (16)
#   TARGET            cluster (default) or single
#   RESTART           1 (default) for the rolling restart, 0 for none
#   SETTLE            seconds between one node being ready and stopping the next (default 20;
#                     at most DURATION/16 - DOWN, so that a short check ends its restarts
#                     before the last quarter)
#   STOP_TIMEOUT      seconds a node may take to exit after SIGTERM before SIGKILL (30)
#   DOWN              seconds a stopped node stays down before it is started again (default 0:
#                     at once; e.g. DOWN=5 makes the clients fail over rather than reconnect)
#   SAMPLE            seconds between samples (10; 5 for runs shorter than 8 minutes)
#   NAME              results: benches/results/$NAME.{json,md} and $NAME-{memory,fds,latency,
#                     throughput}.svg (default soak)
#   SKIP_BUILD=1      use the binaries in target/release
#
# Bounded: kes-bench stops after DURATION seconds (plus its 15 s request timeout), the sampler
# with it; the restart loop is three nodes with bounded waits; every process this script
# started is stopped when it exits, however it exits.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION="${DURATION:-3600}"
RATE="${RATE:-auto}"
MIX="${MIX:-generate=90,decrypt=90,encrypt=6,hmac=6,describe=7,create-delete=1}"
PROTO="${PROTO:-h1}"
CONCURRENCY="${CONCURRENCY:-64}"
CONNECTIONS="${CONNECTIONS:-}"
KEYS="${KEYS:-16}"
TARGET="${TARGET:-cluster}"
NAME="${NAME:-soak}"
RESTART="${RESTART:-1}"
SETTLE="${SETTLE:-20}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
DOWN="${DOWN:-0}"
CAPACITY_SECONDS="${CAPACITY_SECONDS:-8}"
CAPACITY_CONCURRENCY="${CAPACITY_CONCURRENCY:-16}"
RSS_MARGIN_PCT="${RSS_MARGIN_PCT:-10}"
RSS_MARGIN_MIB="${RSS_MARGIN_MIB:-8}"
FD_MARGIN_PCT="${FD_MARGIN_PCT:-10}"
FD_MARGIN_ABS="${FD_MARGIN_ABS:-5}"
P99_MARGIN_PCT="${P99_MARGIN_PCT:-50}"
P99_MARGIN_MS="${P99_MARGIN_MS:-1}"
WARMUP=2
if [ "$DURATION" -ge 480 ]; then SAMPLE="${SAMPLE:-10}"; else SAMPLE="${SAMPLE:-5}"; fi

case "$TARGET" in
cluster) NODES="1 2 3" ;;
single) NODES="1" RESTART=0 ;;
*)
    echo "TARGET must be cluster or single" >&2
    exit 2
    ;;
esac
if [ "$RESTART" = 1 ] && [ "$DURATION" -lt 120 ]; then
    echo "DURATION must be at least 120 seconds with the rolling restart (RESTART=0 for none)" >&2
    exit 2
fi
# A short check keeps its restarts (three times down, start, ready and settle) out of the last
# quarter.
SETTLE_MAX=$((DURATION / 16 - DOWN > 5 ? DURATION / 16 - DOWN : 5))
if [ "$SETTLE" -gt "$SETTLE_MAX" ]; then
    echo "settle time ${SETTLE}s shortened to ${SETTLE_MAX}s (DURATION/16 - DOWN) for a ${DURATION}s run"
    SETTLE="$SETTLE_MAX"
fi

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average before: $LOAD_BEFORE"
kb_build
# Private copies: a rebuild during the hour must not change what the restarted nodes run.
mkdir -p "$WORK/bin"
cp "$BIN/kes" "$BIN/kes-bench" "$WORK/bin/"
BIN="$WORK/bin"

if [ "$TARGET" = cluster ]; then
    step "start a three-node kes cluster"
    kb_generate_cluster 3
    kb_start_nodes 3 || exit 1
    echo "leader: node $(kb_wait_leader 3)"
    for i in 1 2 3; do echo "${NODE_PID[$i]}" >"$WORK/node$i.pid"; done
    ARGS=(-s "$(cluster_urls 3)" --ca "$CLUSTER_CA" --api-key "$CLUSTER_KEY")
else
    step "start a kes node (default log settings)"
    SINGLE_LOG_AUDIT=default kb_start_single
    echo "$SINGLE_PID" >"$WORK/node1.pid"
    ARGS=(-s "$KES_URL" --ca "$KES_CA" --api-key "$KES_KEY")
fi
CONN_ARGS=()
[ -n "$CONNECTIONS" ] && CONN_ARGS=(--connections "$CONNECTIONS")
LOAD=(--proto "$PROTO" "${CONN_ARGS[@]}" --keys "$KEYS" -m "$MIX" --wait 30s)

CAPACITY=""
if [ "$RATE" = auto ]; then
    step "capacity: ${CAPACITY_SECONDS}s closed loop, $CAPACITY_CONCURRENCY in flight, $MIX"
    "$BIN/kes-bench" "${ARGS[@]}" "${LOAD[@]}" -c "$CAPACITY_CONCURRENCY" --warmup 2s \
        -d "${CAPACITY_SECONDS}s" -q --label capacity --json "$WORK/capacity.json" \
        >"$WORK/capacity.txt"
    sed 's/^/  /' "$WORK/capacity.txt"
    read -r CAPACITY RATE < <(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["total"]; print(round(t["throughput"]), max(1, round(t["throughput"] / 2)))' "$WORK/capacity.json")
    echo "capacity ${CAPACITY}/s: the soak runs at half of it, ${RATE}/s"
fi

mkdir -p "$RESULTS"
SAMPLES="$WORK/samples.csv"
EVENTS="$WORK/events.csv"
PROGRESS="$WORK/progress.log"
echo "t_ms,node,pid,rss_kib,cpu_ticks,threads,fds" >"$SAMPLES"
echo "t_ms,node,event,pid,detail" >"$EVENTS"

# Milliseconds since kes-bench's own start (its timeline counts from there).
T0_MS=0
rel_ms() { echo $(($(now_ms) - T0_MS)); }

# sample_node NODE PID: one row of SAMPLES, unless the process is gone (or a zombie).
sample_node() {
    local i="$1" pid="$2" t rss ticks threads fds
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
    t="$(rel_ms)"
    rss="$(rss_kib "$pid")"
    ticks="$(kb_cpu_ticks "$pid" 2>/dev/null || true)"
    threads="$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
    fds="$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
    [ -n "$rss" ] && [ "$rss" != 0 ] && [ -n "$ticks" ] && [ -n "$threads" ] || return 0
    printf '%s,%s,%s,%s,%s,%s,%s\n' "$t" "$i" "$pid" "$rss" "$ticks" "$threads" "$fds" >>"$SAMPLES"
}

# Runs in the background: every SAMPLE seconds, every node whose pid file names a process.
sampler() {
    local n i max=$(((WARMUP + DURATION + 120) / SAMPLE + 10))
    for ((n = 0; n < max; n++)); do
        [ -e "$WORK/sampler.stop" ] && break
        for i in $NODES; do
            sample_node "$i" "$(cat "$WORK/node$i.pid" 2>/dev/null || true)"
        done
        sleep "$SAMPLE"
    done
}

# event NODE EVENT PID DETAIL: a line of EVENTS, and on the terminal.
event() {
    local t
    t="$(rel_ms)"
    printf '%s,%s,%s,%s,%s\n' "$t" "$1" "$2" "$3" "$4" >>"$EVENTS"
    printf '  %7.1f s  node %s  %-9s %s\n' "$(awk -v t="$t" -v w="$WARMUP" 'BEGIN {print t / 1000 - w}')" \
        "$1" "$2" "$4"
}

bench_alive() { kill -0 "$BENCH" 2>/dev/null; }

# The leader as some running node sees it ("" if none answers).
current_leader() { kb_any_leader 3 || echo ""; }

# Stops node $1 with SIGTERM, starts it again on the same data directory and waits until it
# is ready. Returns non-zero if it did not come back.
restart_node() {
    local i="$1" pid="${NODE_PID[$1]}" ready
    sample_node "$i" "$pid"
    : >"$WORK/node$i.pid"
    event "$i" stop "$pid" "leader=$2"
    kb_term_node "$i" "$STOP_TIMEOUT"
    event "$i" exited "$pid" "graceful=$STOP_GRACEFUL;status=$STOP_STATUS;ticks=$STOP_TICKS;ms=$STOP_MS"
    [ "$DOWN" = 0 ] || sleep "$DOWN"
    kb_start_node "$i"
    echo "${NODE_PID[$i]}" >"$WORK/node$i.pid"
    event "$i" start "${NODE_PID[$i]}" ""
    if ! ready="$(kb_wait_node "$i" 60s)"; then
        event "$i" not-ready "${NODE_PID[$i]}" ""
        tail -5 "$CLUSTER_DIR/node$i/node.log" >&2
        return 1
    fi
    event "$i" ready "${NODE_PID[$i]}" "after=$ready"
}

step "soak: $MIX at $RATE requests/s for ${DURATION}s through $(echo "$NODES" | wc -w) endpoint(s) ($PROTO, $CONCURRENCY in flight at most)"
"$BIN/kes-bench" "${ARGS[@]}" "${LOAD[@]}" -c "$CONCURRENCY" --rate "$RATE" \
    --warmup "${WARMUP}s" -d "${DURATION}s" --label soak --json "$WORK/soak.json" \
    >"$WORK/soak.txt" 2>"$PROGRESS" &
BENCH=$!
PIDS+=("$BENCH")
# kes-bench prints a progress line every second of its run ("  1s warm-up ..."): the first one
# fixes the clock shared by the samples, the restart times and its timeline.
for ((k = 0; k < 1800; k++)); do
    first="$(grep -m1 -E '^ *[0-9]+s (warm-up|measure) ' "$PROGRESS" 2>/dev/null || true)"
    if [ -n "$first" ]; then
        T0_MS=$(($(now_ms) - 1000 * $(sed -E 's/^ *([0-9]+)s.*/\1/' <<<"$first")))
        break
    fi
    bench_alive || break
    sleep 0.05
done
if [ "$T0_MS" = 0 ]; then
    echo "kes-bench did not start its run:" >&2
    tail -20 "$PROGRESS" >&2
    exit 1
fi
sampler &
SAMPLER=$!
PIDS+=("$SAMPLER")

RESTART_OK=1
if [ "$RESTART" = 1 ]; then
    # Halfway through the measured time.
    at_ms=$((1000 * (WARMUP + DURATION / 2)))
    for ((k = 0; k < 2 * (WARMUP + DURATION) + 10; k++)); do
        if [ "$(rel_ms)" -ge "$at_ms" ] || ! bench_alive; then
            break
        fi
        sleep 0.5
    done
    step "rolling restart (SIGTERM, ${DOWN}s down, start on the same data directory, ready, ${SETTLE}s settle)"
    left="$NODES"
    while [ -n "$left" ]; do
        if ! bench_alive; then
            echo "the load ended before nodes $left were restarted" >&2
            event 0 load-ended "" "left=${left// /+}"
            RESTART_OK=0
            break
        fi
        leader="$(current_leader)"
        # The lowest-numbered node left that is not the leader; the leader when only it is left.
        next=""
        for j in $left; do
            if [ "$j" != "$leader" ]; then
                next="$j"
                break
            fi
        done
        [ -n "$next" ] || next="${left%% *}"
        left="$(for j in $left; do [ "$j" = "$next" ] || printf '%s ' "$j"; done)"
        left="${left% }"
        if ! restart_node "$next" "$leader"; then
            RESTART_OK=0
            break
        fi
        for ((k = 0; k < SETTLE * 2; k++)); do
            bench_alive || break
            sleep 0.5
        done
        event "$next" settled "${NODE_PID[$next]}" "leader=$(current_leader)"
    done
fi

BENCH_RC=0
wait "$BENCH" || BENCH_RC=$?
touch "$WORK/sampler.stop"
wait "$SAMPLER" 2>/dev/null || true
kb_forget_pid "$BENCH"
kb_forget_pid "$SAMPLER"
cat "$WORK/soak.txt"
if [ "$BENCH_RC" != 0 ]; then
    echo "kes-bench exited with status $BENCH_RC:" >&2
    tail -20 "$PROGRESS" >&2
    exit 1
fi
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average after: $LOAD_AFTER"
kb_meta_args

step "verdicts"
python3 - "$ROOT/benches" "$WORK/soak.json" "$PROGRESS" "$SAMPLES" "$EVENTS" "$RESULTS/$NAME" \
    "${META[@]}" \
    --meta "load average before=$LOAD_BEFORE" \
    --param "target=$TARGET" --param "mix=$MIX" --param "rate=$RATE" \
    --param "capacity=$CAPACITY" --param "capacity_seconds=$CAPACITY_SECONDS" \
    --param "capacity_concurrency=$CAPACITY_CONCURRENCY" --param "proto=$PROTO" \
    --param "concurrency=$CONCURRENCY" --param "connections=$CONNECTIONS" --param "keys=$KEYS" \
    --param "duration=$DURATION" --param "warmup=$WARMUP" --param "sample=$SAMPLE" \
    --param "restart=$RESTART" --param "restart_ok=$RESTART_OK" --param "settle=$SETTLE" \
    --param "stop_timeout=$STOP_TIMEOUT" --param "down=$DOWN" --param "nodes=$NODES" --param "clk_tck=$CLK_TCK" \
    --param "rss_margin_pct=$RSS_MARGIN_PCT" --param "rss_margin_mib=$RSS_MARGIN_MIB" \
    --param "fd_margin_pct=$FD_MARGIN_PCT" --param "fd_margin_abs=$FD_MARGIN_ABS" \
    --param "p99_margin_pct=$P99_MARGIN_PCT" \
    --param "p99_margin_ms=$P99_MARGIN_MS" <<'EOF'
import csv, json, math, re, statistics, sys

bench_dir, report_path, progress_path, samples_path, events_path, out = sys.argv[1:7]
sys.path.insert(0, bench_dir)
from compare_builds import PALETTE, esc  # the SVG conventions of the other charts

meta, par = {}, {}
rest = sys.argv[7:]
for flag, kv in zip(rest[::2], rest[1::2]):
    k, v = kv.split("=", 1)
    (meta if flag == "--meta" else par)[k.strip()] = v.strip()
D = float(par["duration"])
W = float(par["warmup"])
nodes = par["nodes"].split()
tck = float(par["clk_tck"])
NODE_COLOR = {n: PALETTE[(k + 1) % len(PALETTE)] for k, n in enumerate(nodes)}

r = json.load(open(report_path))
total = r["total"]

# Per second: the report's timeline (counts, p99), with p50 from the progress lines.
line_re = re.compile(r"^\s*(\d+)s (?:warm-up|measure)\s.*?p50 ([\d.]+) ms\s+p99 ([\d.]+) ms")
prog = [m for m in (line_re.match(l) for l in open(progress_path, errors="replace")) if m]
ticks = []
for k, t in enumerate(r.get("timeline") or []):
    p50 = float(prog[k].group(2)) if k < len(prog) else None
    ticks.append(dict(t, t=t["t_s"] - W, p50_ms=p50))

# Minutes of the measured time; the last second or two of draining joins the last minute.
n_min = max(1, math.ceil(D / 60))
minutes = [{"minute": m, "ok": 0, "errors": 0, "p50s": [], "p99s": [], "max_ms": 0.0} for m in range(n_min)]
warmup_errors = 0
for t in ticks:
    if t["t"] <= 0:
        warmup_errors += t["errors"]
        continue
    m = minutes[min(int((t["t"] - 1e-9) // 60), n_min - 1)]
    m["ok"] += t["ok"]
    m["errors"] += t["errors"]
    if t["ok"] > 0:
        m["p99s"].append(t["p99_ms"])
        if t["p50_ms"] is not None:
            m["p50s"].append(t["p50_ms"])
        m["max_ms"] = max(m["max_ms"], t["max_ms"])
for m in minutes:
    m["p50_ms"] = statistics.median(m["p50s"]) if m["p50s"] else None
    m["p99_ms"] = statistics.median(m["p99s"]) if m["p99s"] else None
    m["worst_p99_ms"] = max(m["p99s"]) if m["p99s"] else None
    m["seconds"] = len(m["p99s"])
    del m["p50s"], m["p99s"]

# Restart events, in measured seconds.
events = []
for e in csv.DictReader(open(events_path)):
    d = dict(kv.split("=", 1) for kv in e["detail"].split(";") if "=" in kv)
    events.append({"t": int(e["t_ms"]) / 1000 - W, "node": e["node"], "event": e["event"], "pid": e["pid"], **d})
restarts = []
for e in events:
    if e["event"] == "stop":
        restarts.append({"node": e["node"], "leader_before": e.get("leader") or None, "stop_s": e["t"], "old_pid": e["pid"]})
    cur = next((x for x in reversed(restarts) if x["node"] == e["node"]), None)
    if cur is None:
        continue
    if e["event"] == "exited":
        cur.update(exited_s=e["t"], exit_ms=int(e["ms"] or 0), graceful=e["graceful"] == "1",
                   exit_status=int(e["status"] or 0), exit_ticks=int(e["ticks"]) if e.get("ticks") else None)
    elif e["event"] == "start":
        cur.update(start_s=e["t"], new_pid=e["pid"])
    elif e["event"] == "ready":
        cur.update(ready_s=e["t"], ready_after_s=float(e["after"]))
    elif e["event"] == "not-ready":
        cur.update(ready_s=None)
    elif e["event"] == "settled":
        cur.update(settled_s=e["t"], leader_after=e.get("leader") or None)
for x in restarts:
    x["down_s"] = x["ready_s"] - x["stop_s"] if x.get("ready_s") is not None else None
window = None
if restarts:
    ends = [x.get("settled_s") or x.get("ready_s") or x.get("exited_s") or x["stop_s"] for x in restarts]
    window = (min(x["stop_s"] for x in restarts), max(ends))
restart_minutes = [m["minute"] for m in minutes if window and m["minute"] * 60 < window[1] and (m["minute"] + 1) * 60 > window[0]]

# Samples per node; CPU time added over the node's processes.
rows = list(csv.DictReader(open(samples_path)))
exit_ticks = {x["old_pid"]: x.get("exit_ticks") for x in restarts}
node_stats, series = {}, {}
for n in nodes:
    xs = [dict(t=int(x["t_ms"]) / 1000 - W, pid=x["pid"], rss=int(x["rss_kib"]) / 1024,
               ticks=int(x["cpu_ticks"]), threads=int(x["threads"]), fds=int(x["fds"])) for x in rows if x["node"] == n]
    pids = list(dict.fromkeys(x["pid"] for x in xs))
    cpu_ticks, base = 0, 0
    for k, p in enumerate(pids):
        ts = [x["ticks"] for x in xs if x["pid"] == p]
        last = max(ts + [exit_ticks.get(p) or 0])
        # The first process was running before the soak; a restarted one counts from its start.
        cpu_ticks += last - (ts[0] if k == 0 else 0)
    # Cumulative CPU seconds at each sample, for the per-minute table.
    done = 0
    for k, p in enumerate(pids):
        first = [x for x in xs if x["pid"] == p][0]["ticks"] if k == 0 else 0
        for x in xs:
            if x["pid"] == p:
                x["cpu_s"] = (done + x["ticks"] - first) / tck
        done += max([x["ticks"] for x in xs if x["pid"] == p] + [exit_ticks.get(p) or 0]) - first
    series[n] = xs
    q2 = [x for x in xs if D / 4 <= x["t"] < D / 2]
    q4 = [x for x in xs if 3 * D / 4 <= x["t"] <= D]
    med = lambda v, f: statistics.median(x[f] for x in v) if v else None
    node_stats[n] = {
        "pids": [int(p) for p in pids],
        "samples": len(xs),
        "rss_mib_start": xs[0]["rss"] if xs else None,
        "rss_mib_q2_median": med(q2, "rss"),
        "rss_mib_q4_median": med(q4, "rss"),
        "rss_mib_max": max((x["rss"] for x in xs), default=None),
        "fds_q2_median": med(q2, "fds"),
        "fds_q4_median": med(q4, "fds"),
        "fds_max": max((x["fds"] for x in xs), default=None),
        "threads_max": max((x["threads"] for x in xs), default=None),
        "cpu_s": cpu_ticks / tck,
    }
for m in minutes:
    for n in nodes:
        v = [x for x in series[n] if m["minute"] * 60 <= x["t"] < (m["minute"] + 1) * 60]
        m[f"rss_mib_n{n}"] = statistics.median(x["rss"] for x in v) if v else None
        m[f"fds_n{n}"] = statistics.median(x["fds"] for x in v) if v else None

# Verdicts.
verdicts = []
def verdict(check, ok, value, limit, note=""):
    verdicts.append({"check": check, "pass": ok, "value": value, "limit": limit, "note": note})
errors_all = max(int(total["errors"]), sum(t["errors"] for t in ticks))
verdict("errors", errors_all == 0, f"{errors_all} failed requests (measured {total['errors']}, warm-up {warmup_errors})", "0")
if par["restart"] == "1":
    graceful = all(x.get("graceful") for x in restarts)
    ok = par["restart_ok"] == "1" and len(restarts) == len(nodes) and graceful and all(x.get("ready_s") is not None for x in restarts)
    desc = ", ".join(f"node {x['node']}: exited {x.get('exit_ms', 0) / 1000:.2f} s after SIGTERM{'' if x.get('graceful') else ' (SIGKILL)'}, ready {x['ready_after_s']:.2f} s after start" if x.get("ready_s") is not None else f"node {x['node']}: not ready" for x in restarts)
    verdict("rolling restart", ok, desc or "no restart", f"{len(nodes)} nodes, each gone within {par['stop_timeout']} s of SIGTERM and ready again")
rp, rm = float(par["rss_margin_pct"]), float(par["rss_margin_mib"])
fp, fa = float(par["fd_margin_pct"]), float(par["fd_margin_abs"])
def drift(label, a, b, pct, absolute, shown, allowed_shown):
    """Growth from the second quarter's median a to the last quarter's b, allowed pct % or absolute."""
    if a is None or b is None:
        verdict(label, None, "no samples in a quarter", "")
        return
    allowed = max(a * pct / 100, absolute)
    verdict(label, b - a <= allowed, shown(a, b), allowed_shown(allowed))


for n in nodes:
    s = node_stats[n]
    drift(f"node {n} resident memory", s["rss_mib_q2_median"], s["rss_mib_q4_median"], rp, rm,
          lambda a, b: f"{a:.1f} -> {b:.1f} MiB ({b - a:+.1f})",
          lambda al: f"+{al:.1f} MiB ({rp:g} % or {rm:g} MiB)")
    drift(f"node {n} file descriptors", s["fds_q2_median"], s["fds_q4_median"], fp, fa,
          lambda a, b: f"{a:g} -> {b:g} ({b - a:+g})",
          lambda al: f"+{al:.1f} ({fp:g} % or {fa:g})")
pp, pm = float(par["p99_margin_pct"]), float(par["p99_margin_ms"])
in_q = lambda m, lo, hi: lo <= m["minute"] * 60 + 30 < hi and m["minute"] not in restart_minutes and m["p99_ms"] is not None
q2m = [m for m in minutes if in_q(m, D / 4, D / 2)]
q4m = [m for m in minutes if in_q(m, 3 * D / 4, D + 1)]
if q2m and q4m:
    a = statistics.median(m["p99_ms"] for m in q2m)
    b = statistics.median(m["p99_ms"] for m in q4m)
    allowed = max(a * pp / 100, pm)
    verdict("p99 per minute", b - a <= allowed, f"{a:.3f} -> {b:.3f} ms ({b - a:+.3f}; minutes {q2m[0]['minute']}-{q2m[-1]['minute']} vs {q4m[0]['minute']}-{q4m[-1]['minute']})", f"+{allowed:.3f} ms ({pp:g} % or {pm:g} ms)")
else:
    verdict("p99 per minute", None, "no minute of a quarter outside the restart window", "")
passed = all(v["pass"] is not False for v in verdicts)

# Charts: per-minute x axis, restart marks.
def chart(path, title, ylabel, lines, bars=(), log=False, yfmt="{:,.0f}", restart_marks=True, shade_window=True):
    """lines: (name, color, [(minute, y)], dash); bars: (name, color, [(minute, y)])."""
    width, height, left, right, top, bottom = 820, 360, 78, 20, 70, 50
    pw, ph = width - left - right, height - top - bottom
    xmax = D / 60
    vals = [y for _, _, pts, *_ in list(lines) + list(bars) for _, y in pts if y is not None]
    if log:
        pos = [v for v in vals if v > 0] or [1.0]
        lo, hi = math.floor(math.log10(min(pos))), math.ceil(math.log10(max(pos)))
        hi = max(hi, lo + 1)
        fy = lambda v: top + ph - ph * (math.log10(max(v, 10 ** lo)) - lo) / (hi - lo)
        yticks = [10 ** e for e in range(lo, hi + 1)]
    else:
        vmax = max(vals + [1e-9]) * 1.05
        mag = 10 ** math.floor(math.log10(vmax / 5))
        unit = next(u * mag for u in (1, 2, 2.5, 5, 10) if vmax / (u * mag) <= 5)
        yticks = [k * unit for k in range(math.ceil(vmax / unit) + 1)]
        vmax = yticks[-1]
        fy = lambda v: top + ph - ph * v / vmax
    fx = lambda m: left + pw * min(max(m, 0), xmax) / xmax
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{left}" y="18" font-size="14">{esc(title)}</text>']
    for q0, q1, label in ((D / 4, D / 2, "2nd quarter"), (3 * D / 4, D, "last quarter")):
        o.append(f'<rect x="{fx(q0 / 60):.1f}" y="{top}" width="{fx(q1 / 60) - fx(q0 / 60):.1f}" height="{ph}" fill="#f3f3f3"/>')
        o.append(f'<text x="{fx(q0 / 60) + 3:.1f}" y="{top + ph - 4}" font-size="10" fill="#888">{label}</text>')
    if shade_window and window:
        x0, x1 = fx(window[0] / 60), fx(window[1] / 60)
        o.append(f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1):.1f}" height="{ph}" fill="#fff3c4"><title>rolling restart</title></rect>')
    for v in yticks:
        y = fy(v)
        o.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        label = (f"{v:g}" if log else yfmt.format(v))
        o.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{esc(label)}</text>')
    step_min = max(1, math.ceil(xmax / 12))
    for k in range(0, int(xmax) + 1, step_min):
        x = fx(k)
        o.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" stroke="#999"/>')
        o.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{k}</text>')
    o.append(f'<text x="{left + pw / 2}" y="{height - 12}" text-anchor="middle">minutes of the measured run</text>')
    o.append(f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
    o.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    legend = [(n, c) for n, c, *_ in list(lines) + list(bars)]
    for k, (n, c) in enumerate(legend):
        o.append(f'<rect x="{left + k * 150}" y="26" width="10" height="10" fill="{c}"/><text x="{left + k * 150 + 14}" y="35">{esc(n)}</text>')
    for name, color, pts in bars:
        if not any(y for _, y in pts):
            o.append(f'<text x="{left + pw - 4}" y="{top + 14}" text-anchor="end" fill="{color}">{esc(name)}: none in any minute</text>')
        bw = max(pw / max(xmax, 1) * 0.6, 2)
        for m, y in pts:
            if y:
                # At least 3 px high and labelled: a few failures next to a million answers.
                h = max(top + ph - fy(y), 3)
                o.append(f'<rect x="{fx(m) - bw / 2:.1f}" y="{top + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="{color}"><title>{esc(name)}: {y:,}</title></rect>')
                o.append(f'<text x="{fx(m):.1f}" y="{top + ph - h - 3:.1f}" text-anchor="middle" fill="{color}">{y:,} {esc(name)}</text>')
    for name, color, pts, dash in lines:
        seg, segs = [], []
        for m, y in pts:
            if y is None or (log and y <= 0):
                if seg:
                    segs.append(seg)
                seg = []
                continue
            seg.append(f"{fx(m):.1f},{fy(y):.1f}")
        if seg:
            segs.append(seg)
        for s in segs:
            if len(s) == 1:
                cx, cy = s[0].split(",")
                o.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            else:
                dashed = f' stroke-dasharray="{dash}"' if dash else ""
                o.append(f'<polyline points="{" ".join(s)}" fill="none" stroke="{color}" stroke-width="1.5"{dashed}/>')
    if restart_marks:
        for k, x in enumerate(restarts):
            c = NODE_COLOR.get(x["node"], "#000")
            x0 = fx(x["stop_s"] / 60)
            x1 = fx((x.get("ready_s") or x["stop_s"]) / 60)
            o.append(f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1.5):.1f}" height="{ph}" fill="{c}" opacity="0.35"><title>node {esc(x["node"])}: SIGTERM at {x["stop_s"]:.1f} s, ready at {(x.get("ready_s") or 0):.1f} s</title></rect>')
            o.append(f'<line x1="{x0:.1f}" y1="{top - 12 - 11 * (k % 3) + 3}" x2="{x0:.1f}" y2="{top}" stroke="{c}"/>')
            o.append(f'<text x="{x0 + 2:.1f}" y="{top - 12 - 11 * (k % 3)}" font-size="10" fill="{c}">restart node {esc(x["node"])}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")

charts = {}
def node_lines(field):
    return [(f"node {n}", NODE_COLOR[n], [(x["t"] / 60, x[field]) for x in series[n]], "") for n in nodes]
charts["memory"] = out + "-memory.svg"
chart(charts["memory"], "Resident memory per node (MiB); bands: node down from SIGTERM to ready", "MiB", node_lines("rss"), yfmt="{:.0f}", shade_window=False)
charts["fds"] = out + "-fds.svg"
chart(charts["fds"], "Open file descriptors per node; bands: node down from SIGTERM to ready", "file descriptors", node_lines("fds"), shade_window=False)
mid = lambda m: min(m["minute"] + 0.5, D / 60)
charts["latency"] = out + "-latency.svg"
chart(charts["latency"], "Latency per minute (ms, log scale; from the scheduled send time); shaded: rolling restart", "ms",
      [("p50", "#1f77b4", [(mid(m), m["p50_ms"]) for m in minutes], ""),
       ("p99", "#d62728", [(mid(m), m["p99_ms"]) for m in minutes], ""),
       ("worst second's p99", "#ff7f0e", [(mid(m), m["worst_p99_ms"]) for m in minutes], "4,3")], log=True)
charts["throughput"] = out + "-throughput.svg"
chart(charts["throughput"], "Requests per minute: answered (ok) and failed; shaded: rolling restart", "requests per minute",
      [("ok", "#2ca02c", [(mid(m), m["ok"]) for m in minutes], "")],
      bars=[("errors", "#d62728", [(mid(m), m["errors"]) for m in minutes])])

# Results.
def f(v, fmt="{:.1f}"):
    return fmt.format(v) if v is not None else "-"
what = (f"target={par['target']}; {par['mix']} at {int(float(par['rate'])):,}/s"
        + (f" (half of the {int(par['capacity']):,}/s measured closed loop)" if par["capacity"] else "")
        + f", {par['proto']}, at most {par['concurrency']} in flight, {int(D)} s"
        + (", rolling restart at half time" + (f" ({par['down']} s down each)" if par["down"] not in ("", "0") else "") if par["restart"] == "1" else ""))
res = {"what": what, "pass": passed, "verdicts": verdicts, "params": par, "meta": meta,
       "capacity_ops_per_s": float(par["capacity"]) if par["capacity"] else None,
       "scheduled": r.get("scheduled"), "ok": total["ok"], "errors": errors_all,
       "errors_by_kind": r.get("errors") or {}, "error_samples": r.get("error_samples") or {},
       "replayed": r.get("replayed"),
       "ops_per_s": total["throughput"], "latency_ms": total["latency"],
       "per_op": [{"op": o["op"], "ok": o["ok"], "errors": o["errors"], "ops_per_s": o["throughput"], "latency_ms": o["latency"]} for o in r["ops"]],
       "restarts": restarts, "restart_window_s": window, "restart_minutes": restart_minutes,
       "nodes": node_stats, "per_minute": minutes,
       "samples": {n: [{k: x[k] for k in ("t", "pid", "rss", "fds", "threads", "cpu_s")} for x in series[n]] for n in nodes},
       "charts": {k: v.rsplit("/", 1)[-1] for k, v in charts.items()}}
json.dump(res, open(out + ".json", "w"), indent=1)

L = total["latency"]
md = [f"# Soak: {what}", "",
      f"**{'PASS' if passed else 'FAIL'}**", ""]
md += ["| check | value | allowed | verdict |", "|---|---|---|---|"]
for v in verdicts:
    md.append(f"| {v['check']} | {v['value']} | {v['limit']} | {'PASS' if v['pass'] else ('n/a' if v['pass'] is None else 'FAIL')} |")
md += ["", "Charts: " + ", ".join(f"[{k}]({v.rsplit('/', 1)[-1]})" for k, v in charts.items()) + ".", "",
       f"![resident memory]({charts['memory'].rsplit('/', 1)[-1]})", "",
       f"![latency]({charts['latency'].rsplit('/', 1)[-1]})", "",
       f"- requests: {total['ok']:,} ok, {errors_all:,} failed, {total['throughput']:,.0f}/s; scheduled {r.get('scheduled') or 0:,}",
       f"- latency ms (measured from the scheduled send time): p50 {L['p50_ms']:.3f}, p99 {L['p99_ms']:.3f}, p99.9 {L['p999_ms']:.3f}, max {L['max_ms']:.1f}"]
if r.get("replayed"):
    md.append(f"- creates and deletes retried after an attempt whose answer was lost, that found that attempt's effect (the key already there, or already gone; counted as ok): {r['replayed']:,}")
for k, c in (r.get("errors") or {}).items():
    sample = " ".join((r.get("error_samples") or {}).get(k, "").split())
    md.append(f"- failures `{k}`: {c:,} (e.g. `{sample}`)")
md += ["", "| operation | ok | errors | ops/s | p50 ms | p99 ms | p99.9 ms | max ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
for o in r["ops"]:
    l = o["latency"]
    md.append(f"| {o['op']} | {o['ok']:,} | {o['errors']} | {o['throughput']:,.0f} | {l['p50_ms']:.3f} | {l['p99_ms']:.3f} | {l['p999_ms']:.3f} | {l['max_ms']:.1f} |")
if restarts:
    md += ["", "Rolling restart (seconds of the measured run; the node was down from SIGTERM to ready):", "",
           "| node | leader before | SIGTERM at | gone after | graceful | started at | ready after start | ready at | down | settled at | leader after |",
           "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for x in restarts:
        md.append(f"| {x['node']} | {x.get('leader_before') or '-'} | {x['stop_s']:.1f} | {f(x.get('exit_ms', 0) / 1000, '{:.2f}')} | {'yes' if x.get('graceful') else 'no (SIGKILL)'} | {f(x.get('start_s'))} | {f(x.get('ready_after_s'), '{:.2f}')} | {f(x.get('ready_s'))} | {f(x.get('down_s'), '{:.2f}')} | {f(x.get('settled_s'))} | {x.get('leader_after') or '-'} |")
    md += ["", f"Restart window {window[0]:.1f}-{window[1]:.1f} s: minutes {', '.join(map(str, restart_minutes))}, left out of the p99 comparison and reported here:", "",
           "| minute | ok | errors | p50 ms | p99 ms | worst second's p99 ms | max ms |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for m in minutes:
        if m["minute"] in restart_minutes:
            md.append(f"| {m['minute']} | {m['ok']:,} | {m['errors']} | {f(m['p50_ms'], '{:.3f}')} | {f(m['p99_ms'], '{:.3f}')} | {f(m['worst_p99_ms'], '{:.3f}')} | {m['max_ms']:.1f} |")
md += ["", f"Per node (second quarter: {D / 4:.0f}-{D / 2:.0f} s, last quarter: {3 * D / 4:.0f}-{D:.0f} s; samples every {par['sample']} s; CPU added over the node's processes):", "",
       "| node | pids | RSS MiB start | RSS MiB 2nd quarter (median) | RSS MiB last quarter (median) | RSS MiB max | fds 2nd / last quarter (median) | fds max | threads max | CPU s | CPU us/op (all nodes' requests) |",
       "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for n in nodes:
    s = node_stats[n]
    md.append(f"| {n} | {' '.join(map(str, s['pids']))} | {f(s['rss_mib_start'])} | {f(s['rss_mib_q2_median'])} | {f(s['rss_mib_q4_median'])} | {f(s['rss_mib_max'])} | {f(s['fds_q2_median'], '{:g}')} / {f(s['fds_q4_median'], '{:g}')} | {f(s['fds_max'], '{:g}')} | {f(s['threads_max'], '{:g}')} | {s['cpu_s']:.1f} | {s['cpu_s'] * 1e6 / max(total['ok'], 1):.1f} |")
md += ["", "Per minute (p50 and p99: medians of the minute's per-second values; RSS and fds: medians of the minute's samples):", "",
       "| minute | ok | errors | p50 ms | p99 ms | worst second's p99 ms | " + " | ".join(f"RSS MiB n{n}" for n in nodes) + " | " + " | ".join(f"fds n{n}" for n in nodes) + " | |",
       "|---:|---:|---:|---:|---:|---:|" + "---:|" * (2 * len(nodes)) + "---|"]
for m in minutes:
    md.append(f"| {m['minute']} | {m['ok']:,} | {m['errors']} | {f(m['p50_ms'], '{:.3f}')} | {f(m['p99_ms'], '{:.3f}')} | {f(m['worst_p99_ms'], '{:.3f}')} | "
              + " | ".join(f(m[f"rss_mib_n{n}"]) for n in nodes) + " | " + " | ".join(f(m[f"fds_n{n}"], "{:g}") for n in nodes)
              + f" | {'restart' if m['minute'] in restart_minutes else ''} |")
md.append("")
for k, v in meta.items():
    md.append(f"- {k}: {v}")
md.append(f"- method: one run; kes-bench open loop (latency from each request's scheduled time), {par['concurrency']} requests in flight at most, {par['keys']} keys, {int(W)} s warm-up; "
          + ("rate = half of a closed-loop run of " + par["capacity_seconds"] + " s at " + par["capacity_concurrency"] + " in flight with the same mix just before; " if par["capacity"] else "")
          + "resident memory (VmRSS), threads and CPU (utime+stime) from /proc/<pid>, descriptors counted in /proc/<pid>/fd; load generator and nodes on the same machine over loopback TLS")
open(out + ".md", "w").write("\n".join(md) + "\n")

for v in verdicts:
    tag = "PASS" if v["pass"] else ("n/a " if v["pass"] is None else "FAIL")
    print(f"{tag}  {v['check']}: {v['value']}" + (f" (allowed {v['limit']})" if v["limit"] and v["check"] != "rolling restart" else ""))
print(("PASS" if passed else "FAIL") + f"  soak {out.rsplit('/', 1)[-1]}")
print(f"wrote {out}.json, {out}.md and " + ", ".join(v.rsplit('/', 1)[-1] for v in charts.values()))
sys.exit(0 if passed else 1)
EOF
