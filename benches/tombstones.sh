#!/usr/bin/env bash
# State size under key churn: applies 1,000,000 create/delete pairs (PutKey then DeleteKey on a
# fresh name each time) to a replicated state caching 10,000 keys, once with the leader's
# tombstone pruning (a prune every 10,000 pairs, below the index of the previous round, as the
# leader prunes below an index sampled a margin earlier) and once without, each in its own
# process, and reports the snapshot size and resident memory before and after.
#
#   benches/tombstones.sh
#   PAIRS=100000 benches/tombstones.sh        a smaller run
#
# This runs the state machine alone (`crates/kes-state/examples/tombstones.rs`): the snapshot
# is exactly what a node stores and ships, and the state is what each node holds in memory;
# a cluster run through the API would take hours at the create/delete rate of this machine.
# Results: benches/results/tombstones.json and benches/results/tombstones.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
RESULTS="${RESULTS:-$ROOT/benches/results}"
PAIRS="${PAIRS:-1000000}"
PRUNE_EVERY="${PRUNE_EVERY:-10000}"

mkdir -p "$RESULTS"
cargo build --release --locked -p kes-state --example tombstones
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/tombstones"
runs="$(mktemp)"
trap 'rm -f "$runs"' EXIT
for prune in 1 0; do
    echo "==> $PAIRS create/delete pairs, pruning $([ "$prune" = 1 ] && echo on || echo off)"
    PAIRS="$PAIRS" PRUNE="$prune" PRUNE_EVERY="$PRUNE_EVERY" "$BIN" | tee -a "$runs"
done

python3 - "$runs" "$RESULTS" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys
runs_file, results, commit = sys.argv[1:4]
runs = [json.loads(l) for l in open(runs_file) if l.strip()]
json.dump({"commit": commit, "runs": runs}, open(f"{results}/tombstones.json", "w"), indent=2)
mib = lambda k: f"{k / 1024:.1f}"
kib = lambda b: f"{b / 1024:.0f}"
lines = [
    f"State after {runs[0]['pairs']:,} create/delete pairs on {runs[0]['live']:,} cached keys "
    f"(kes-state alone, commit {commit}):",
    "",
    "| pruning | snapshot before (KiB) | snapshot after (KiB) | resident before (MiB) | resident after (MiB) | tombstones left | apply (s) |",
    "|---|---|---|---|---|---|---|",
]
for r in runs:
    lines.append(
        f"| {'on, every ' + format(r['prune_every'], ',') + ' pairs' if r['prune'] else 'off'} "
        f"| {kib(r['start_snapshot_bytes'])} | {kib(r['end_snapshot_bytes'])} "
        f"| {mib(r['start_rss_kib'])} | {mib(r['end_rss_kib'])} "
        f"| {r['tombstones_left']:,} | {r['apply_seconds']} |"
    )
open(f"{results}/tombstones.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
