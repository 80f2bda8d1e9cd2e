#!/bin/sh
# Certificates for compose.yaml, made with `kes ca`: two CAs, and per node (certs/kes<N>/) an API
# certificate (for kes<N>, the load balancer's name `kes`, localhost and 127.0.0.1) and a node
# certificate (kes-node-<N>); admin and MinIO client certificates in certs/. Also writes .env
# with their identities for compose.
#   deploy/docker/certs.sh [KES_BINARY] [EXTRA_IP...]     (run in deploy/docker)
set -eu
KES="${1:-kes}"
[ $# -gt 0 ] && shift
cd "$(dirname "$0")"
mkdir -p certs
[ -f certs/ca.cert ] || "$KES" ca new --cert certs/ca.cert --key certs/ca.key --name "kes API CA" >/dev/null
[ -f certs/cluster-ca.cert ] ||
    "$KES" ca new --cert certs/cluster-ca.cert --key certs/cluster-ca.key --name "kes cluster CA" >/dev/null
API="--ca-cert certs/ca.cert --ca-key certs/ca.key"
for who in admin minio; do
    # shellcheck disable=SC2086
    [ -f "certs/$who.cert" ] ||
        "$KES" ca issue client $API --name "$who" --cert "certs/$who.cert" --key "certs/$who.key" >/dev/null
done
extra=""
for ip in "$@"; do extra="$extra --ip $ip"; done
for n in 1 2 3; do
    d="certs/kes$n"
    mkdir -p "$d"
    # shellcheck disable=SC2086
    "$KES" ca issue server $API -f --dns "kes$n" --dns kes --dns localhost --ip 127.0.0.1 $extra \
        --cert "$d/server.cert" --key "$d/server.key" >/dev/null
    # shellcheck disable=SC2086
    "$KES" ca issue node --ca-cert certs/cluster-ca.cert --ca-key certs/cluster-ca.key -f --id "$n" \
        --dns "kes$n" $extra --cert "$d/node.cert" --key "$d/node.key" >/dev/null
    cp certs/cluster-ca.cert "$d/cluster-ca.cert"
    # The container runs as 65532: as root, give it the node's files (keys stay 0600); without
    # root (rootless engines map users their own way) make the keys readable.
    chown -R 65532:65532 "$d" 2>/dev/null || chmod 0644 "$d"/*.key
done
{
    echo "KES_ADMIN_IDENTITY=$("$KES" identity of certs/admin.cert)"
    echo "MINIO_KES_IDENTITY=$("$KES" identity of certs/minio.cert)"
} >.env
echo "certificates in $(pwd)/certs; identities in $(pwd)/.env"
