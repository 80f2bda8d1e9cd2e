#!/usr/bin/env bash
# The whole test suite, with its set-up, on a fresh machine:
#   tests/run.sh            unit, property, conformance and integration tests, then a fuzz smoke
#   FUZZ_SECONDS=0 tests/run.sh   skips the fuzz smoke
# Everything it installs or writes goes under target/ (tools, the OpenBao/moto virtualenv, fuzz
# builds, fault-injection results) or ~/.cargo (cargo-fuzz): the tree is left as it was found.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-10}"

step() { printf '\n==> %s\n' "$*"; }

# jemalloc (the server's allocator) and the TLS crypto are built from source: make and a C
# compiler.
if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
    step "install make and a C compiler"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make gcc) >/dev/null
fi

step "build (dev profile, all targets)"
cargo build --workspace --all-targets --locked

# OpenBao, moto and drongo for the Vault, AWS and GCP backends (a virtualenv under target/); the
# tests start and stop their own servers from it, and fail rather than skip when it is missing.
step "external keystores for the backend tests (OpenBao, moto, drongo)"
tests/services.sh install
export KES_REQUIRE_SERVICES=1

# Includes the deterministic simulation (crates/kes-cluster/tests/sim.rs): 300 seeds, about
# 20 s on two cores; KES_SIM_SEEDS=<n> runs more.
step "tests"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"

# deploy/ against the tools it targets: the systemd unit and installer (systemd-analyze, a
# scratch root), HAProxy in front of three nodes, the Prometheus rules and Grafana dashboard
# (promtool). Missing tools are installed with apt-get.
step "deploy/ (systemd, HAProxy, monitoring)"
if [ "$(id -u)" != "0" ]; then
    echo "SKIPPED: tests/deploy.sh needs root (useradd into a scratch root, apt-get)"
else
    KES_BIN="${CARGO_TARGET_DIR:-target}/debug/kes" tests/deploy.sh all
fi

if [ "$FUZZ_SECONDS" != "0" ]; then
    step "fuzz smoke (${FUZZ_SECONDS}s per target)"
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked --version 0.13.2
    fi
    # fuzz/ is a workspace of its own with its own committed lock file. cargo fuzz has no
    # --locked, so check here that the lock file needs no change (it would otherwise be rewritten
    # silently); after changing dependencies, refresh it with `cd fuzz && cargo update -w`.
    if ! (cd fuzz && cargo metadata --locked --format-version 1 >/dev/null); then
        echo "fuzz/Cargo.lock is out of date: run 'cd fuzz && cargo update -w' and commit it"
        exit 1
    fi
    # cargo fuzz needs nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
    # Without a sanitizer the build reuses one instrumented profile for every target.
    for target in ciphertext key_version request config peer; do
        log="target/fuzz-$target.log"
        if ! (cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=../target/fuzz \
            cargo fuzz run "$target" -s none -- -max_total_time="$FUZZ_SECONDS") >"$log" 2>&1; then
            tail -40 "$log"
            echo "fuzz target $target failed (log: $log)"
            exit 1
        fi
        echo "$target: $(grep -E '^Done' "$log" | tail -1)"
    done
fi

# Fault injection (jepsen/): the regression scenario for the partition finding, then a short
# seeded run of a 3-node cluster in network namespaces under every nemesis the filesystem KMS
# allows; any anomaly fails the suite. JEPSEN_SECONDS=0 skips both. Their histories, node logs
# and summaries go to target/jepsen (jepsen/results holds only the published runs).
JEPSEN_SECONDS="${JEPSEN_SECONDS:-120}"
if [ "$JEPSEN_SECONDS" != "0" ]; then
    step "fault-injection run (kes-jepsen, ${JEPSEN_SECONDS}s)"
    if [ "$(id -u)" != "0" ]; then
        echo "SKIPPED: kes-jepsen needs root (network namespaces, iptables)"
    else
        if ! command -v iptables >/dev/null 2>&1; then
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables) >/dev/null
        fi
        target/debug/kes-jepsen scenario rejoin-after-partition --results "$PWD/target/jepsen"
        target/debug/kes-jepsen run --nodes 3 --time "${JEPSEN_SECONDS}s" \
            --seed "${JEPSEN_SEED:-7}" --nemesis "${JEPSEN_NEMESIS:-all}" --name ci \
            --results "$PWD/target/jepsen"
    fi
fi

step "all tests passed"
