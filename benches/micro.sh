#!/usr/bin/env bash
# Runs the criterion micro-benchmarks of the hot path (seal/open in every ciphertext layout,
# identity hashing, policy matching, key decoding, state-machine apply) with short measurement
# times and writes their medians to benches/results/micro.md and micro.json.
#
#   benches/micro.sh
#   MEASURE=5 WARMUP=2 benches/micro.sh          longer measurements
#   BENCHES="seal_open policy" benches/micro.sh  a subset
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
RESULTS="${RESULTS:-$ROOT/benches/results}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
MEASURE="${MEASURE:-2}"
WARMUP="${WARMUP:-1}"
BENCHES="${BENCHES:-seal_open identity policy key_decode state_apply}"

mkdir -p "$RESULTS"
stamp="$(mktemp)"
trap 'rm -f "$stamp"' EXIT
args=()
for b in $BENCHES; do args+=(--bench "$b"); done
cargo bench --locked -p kes-benches "${args[@]}" -- \
    --warm-up-time "$WARMUP" --measurement-time "$MEASURE" --noplot

python3 - "$TARGET_DIR/criterion" "$stamp" "$RESULTS" "$MEASURE" "$WARMUP" <<'EOF'
import glob, json, os, platform, subprocess, sys
crit, stamp, results, measure, warmup = sys.argv[1:6]
since = os.path.getmtime(stamp)
rows = []
for est in glob.glob(f"{crit}/**/new/estimates.json", recursive=True):
    if os.path.getmtime(est) < since:
        continue
    bench = json.load(open(os.path.join(os.path.dirname(est), "benchmark.json")))
    e = json.load(open(est))
    median = e["median"]["point_estimate"]
    lo = e["median"]["confidence_interval"]["lower_bound"]
    hi = e["median"]["confidence_interval"]["upper_bound"]
    tp = bench.get("throughput") or {}
    per = None
    if "Elements" in tp:
        per = ("elements", tp["Elements"])
    elif "Bytes" in tp:
        per = ("bytes", tp["Bytes"])
    rows.append({"id": bench["full_id"], "median_ns": median, "ci_low_ns": lo, "ci_high_ns": hi,
                 "throughput": per})
rows.sort(key=lambda r: r["id"])

def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"

md = ["| benchmark | median | 95% interval of the median | per second |", "|---|---:|---:|---:|"]
for r in rows:
    per = ""
    if r["throughput"]:
        kind, n = r["throughput"]
        rate = n / (r["median_ns"] / 1e9)
        per = f"{rate / 2**20:,.0f} MiB/s" if kind == "bytes" else f"{rate:,.0f} {kind}/s"
    else:
        per = f"{1e9 / r['median_ns']:,.0f}/s"
    md.append(f"| {r['id']} | {fmt(r['median_ns'])} | {fmt(r['ci_low_ns'])} – {fmt(r['ci_high_ns'])} | {per} |")
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
meta = {"command": f"cargo bench -p kes-benches -- --warm-up-time {warmup} --measurement-time {measure} --noplot",
        "machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "rustc": rustc, "load average at the end": open("/proc/loadavg").read().split()[:3]}
md.append("")
for k, v in meta.items():
    md.append(f"- {k}: {' '.join(v) if isinstance(v, list) else v}")
open(f"{results}/micro.json", "w").write(json.dumps({"meta": meta, "benchmarks": rows}, indent=2) + "\n")
open(f"{results}/micro.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
