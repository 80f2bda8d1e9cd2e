#!/usr/bin/env bash
# The full fault-testing matrix, on a fresh machine, with one command (as root):
#
#   jepsen/matrix.sh
#
# Installs what it needs (iproute2 and iptables with apt-get when missing, OpenBao into
# target/services-venv through tests/services.sh), builds kes and kes-jepsen, then runs every
# nemesis alone:
#
#   1. filesystem KMS, 3 and 5 nodes, SEEDS seeds each (12 nemeses),
#   2. OpenBao as the KMS, 3 and 5 nodes, one seed each (14 nemeses: also kms-pause and kms-cut).
#
# Each run lasts TIME (90s) plus start-up, healing and the final checks, about two minutes:
# with the defaults 76 runs, about two hours and forty minutes. Tables go to
# RESULTS/fs/matrix/summary.md and RESULTS/openbao/matrix/summary.md, each run's folder (history,
# results.json, summary.md, timeline.svg, node logs) next to them. Exits 1 if any run found an
# anomaly or could not be done.
#
#   SEEDS=1 TIME=30s NODES=3 jepsen/matrix.sh     a quicker pass
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS="${SEEDS:-2}"
SEED="${SEED:-200}"
TIME="${TIME:-90s}"
NODES="${NODES:-3,5}"
RESULTS="${RESULTS:-jepsen/results/full}"

if [ "$(id -u)" != "0" ]; then
    echo "jepsen/matrix.sh: needs root (network namespaces, iptables)" >&2
    exit 2
fi
if ! command -v ip >/dev/null 2>&1 || ! command -v iptables >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables >/dev/null
fi
tests/services.sh install
cargo build --locked -p kes-cli -p kes-jepsen

status=0
target/debug/kes-jepsen matrix --nodes "$NODES" --seeds "$SEEDS" --seed "$SEED" --time "$TIME" \
    --results "$RESULTS/fs" || status=1
target/debug/kes-jepsen matrix --nodes "$NODES" --seeds 1 --seed "$((SEED + 100))" --time "$TIME" \
    --kms openbao --results "$RESULTS/openbao" || status=1
echo
echo "tables: $RESULTS/fs/matrix/summary.md, $RESULTS/openbao/matrix/summary.md"
exit "$status"
