#!/usr/bin/env bash
# Installs one kes node on this host under systemd: the `kes` system user, /etc/kes (config,
# environment, certificates; root:kes, not writable by the service), /var/lib/kes (state; kes
# only), the binary, and the hardened kes.service. Certificates come from `kes ca`:
#
#   install.sh --node-id 1 --members 1=10.0.0.1:7374,2=10.0.0.2:7374,3=10.0.0.3:7374 \
#              --ca-dir ./kes-ca --dns kes1.example.net --ip 10.0.0.1 --kes-bin ./kes
#
# --ca-dir holds the deployment's two CAs: ca.cert/ca.key (issues the API server certificates
# and client certificates) and cluster-ca.cert/cluster-ca.key (issues the node certificates).
# On the first host the folder may be empty: the CAs, an admin client certificate and a MinIO
# client certificate are created there. Copy the folder to the other hosts over a secure
# channel (it holds the CA keys), run the script there with their own --node-id, --dns and
# --ip, then keep it offline.
#
# Other options:
#   --advertise HOST:PORT   how peers reach this node [default: its --members entry]
#   --join                  a node added to a running cluster: no `members` (instead of
#                           --members; needs --advertise), then `kes cluster add <id> <advertise>`
#   --api-port PORT         KES API port [7373];  --peer-port PORT  node-to-node port [7374]
#   --keystore FILE         YAML with the `keystore:` section [default: a filesystem keystore
#                           in /var/lib/kes/keys, which suits a single host only]
#   --root DIR              install under DIR instead of / (packaging, tests); no systemctl
#   --no-start              do not enable and start the service
#   --force                 overwrite existing configuration and certificates
# Idempotent: without --force, existing configuration, environment and certificates are kept.
set -euo pipefail

die() { echo "install.sh: $*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

ROOT=/
NODE_ID=""
MEMBERS=""
CA_DIR=""
ADVERTISE=""
API_PORT=7373
PEER_PORT=7374
KEYSTORE=""
KES_BIN="$(command -v kes || true)"
START=1
FORCE=0
JOIN=0
DNS=()
IPS=()

while [ $# -gt 0 ]; do
    case "$1" in
    --node-id) NODE_ID="${2:?--node-id needs a value}"; shift 2 ;;
    --members) MEMBERS="${2:?--members needs a value}"; shift 2 ;;
    --ca-dir) CA_DIR="${2:?--ca-dir needs a value}"; shift 2 ;;
    --dns) DNS+=("${2:?--dns needs a value}"); shift 2 ;;
    --ip) IPS+=("${2:?--ip needs a value}"); shift 2 ;;
    --advertise) ADVERTISE="${2:?--advertise needs a value}"; shift 2 ;;
    --api-port) API_PORT="${2:?--api-port needs a value}"; shift 2 ;;
    --peer-port) PEER_PORT="${2:?--peer-port needs a value}"; shift 2 ;;
    --keystore) KEYSTORE="${2:?--keystore needs a value}"; shift 2 ;;
    --kes-bin) KES_BIN="${2:?--kes-bin needs a value}"; shift 2 ;;
    --root) ROOT="${2:?--root needs a value}"; shift 2 ;;
    --no-start) START=0; shift ;;
    --join) JOIN=1; shift ;;
    --force) FORCE=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run as root (it creates a user and writes /etc and /var/lib)"
[[ "$NODE_ID" =~ ^[1-9][0-9]*$ ]] || die "--node-id must be a number from 1 (got '${NODE_ID}')"
if [ "$JOIN" = 1 ]; then
    [ -z "$MEMBERS" ] || die "--join and --members exclude each other (a joining node has no members)"
    [ -n "$ADVERTISE" ] || die "--join needs --advertise HOST:PORT (how the others reach this node)"
else
    [ -n "$MEMBERS" ] || die "--members is required, e.g. 1=10.0.0.1:7374,2=10.0.0.2:7374,3=10.0.0.3:7374 (or --join)"
fi
[ -n "$CA_DIR" ] || die "--ca-dir is required (a folder for the CAs; created if missing)"
[ -n "$KES_BIN" ] && [ -x "$KES_BIN" ] || die "no kes binary: put it in PATH or pass --kes-bin"
[ ${#DNS[@]} -gt 0 ] || [ ${#IPS[@]} -gt 0 ] ||
    die "give the names clients use to reach this host: --dns and/or --ip"
[ -z "$KEYSTORE" ] || [ -f "$KEYSTORE" ] || die "--keystore '$KEYSTORE' does not exist"
for p in "$API_PORT" "$PEER_PORT"; do
    [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "invalid port '$p'"
done

# members: "1=host:port,2=host:port" -> YAML lines, and this node's own entry.
MEMBER_YAML=""
SELF=""
entries=()
[ -z "$MEMBERS" ] || IFS=',' read -r -a entries <<<"$MEMBERS"
for e in "${entries[@]}"; do
    [[ "$e" =~ ^([1-9][0-9]*)=([^=[:space:]]+:[0-9]+)$ ]] ||
        die "invalid --members entry '$e': want ID=HOST:PORT"
    MEMBER_YAML+="    ${BASH_REMATCH[1]}: ${BASH_REMATCH[2]}"$'\n'
    [ "${BASH_REMATCH[1]}" = "$NODE_ID" ] && SELF="${BASH_REMATCH[2]}"
done
[ "$JOIN" = 1 ] || [ -n "$SELF" ] || die "--members has no entry for --node-id $NODE_ID"
ADVERTISE="${ADVERTISE:-$SELF}"

R="${ROOT%/}"
ETC="$R/etc/kes"
STATE="$R/var/lib/kes"
KES="$KES_BIN"
# Everything the service reads is given by its final path (without --root).
CFG_ETC=/etc/kes
CFG_STATE=/var/lib/kes

say "user and group 'kes'"
if [ "$R" = "" ]; then
    getent group kes >/dev/null || groupadd --system kes
    getent passwd kes >/dev/null ||
        useradd --system --gid kes --home-dir /var/lib/kes --no-create-home \
            --shell /usr/sbin/nologin --comment "kes key encryption service" kes
    uid_of() { id -u kes; }
    gid_of() { getent group kes | cut -d: -f3; }
else
    [ -f "$R/etc/passwd" ] && [ -f "$R/etc/group" ] ||
        die "--root $ROOT needs etc/passwd and etc/group (useradd --root edits them)"
    grep -q '^kes:' "$R/etc/group" || groupadd --root "$ROOT" --system kes
    grep -q '^kes:' "$R/etc/passwd" ||
        useradd --root "$ROOT" --system --gid kes --home-dir /var/lib/kes --no-create-home \
            --shell /usr/sbin/nologin --comment "kes key encryption service" kes
    uid_of() { awk -F: '$1=="kes"{print $3}' "$R/etc/passwd"; }
    gid_of() { awk -F: '$1=="kes"{print $3}' "$R/etc/group"; }
fi
KES_UID="$(uid_of)"
KES_GID="$(gid_of)"
[ -n "$KES_UID" ] && [ -n "$KES_GID" ] || die "could not find the kes user's ids"

say "folders"
install -d -m 0755 -o 0 -g 0 "$R/usr/local/bin" "$R/etc/systemd/system" "$R/usr/local/share/doc/kes"
install -d -m 0750 -o 0 -g "$KES_GID" "$ETC"
install -d -m 0700 -o "$KES_UID" -g "$KES_GID" "$STATE"
install -d -m 0700 -o 0 -g 0 "$CA_DIR"

say "binary"
install -m 0755 -o 0 -g 0 "$KES_BIN" "$R/usr/local/bin/kes"

say "certificates (kes ca)"
ca_new() { # cert key name
    if [ ! -f "$CA_DIR/$1" ]; then
        "$KES" ca new --cert "$CA_DIR/$1" --key "$CA_DIR/$2" --name "$3" >/dev/null
        echo "created $3 in $CA_DIR/$1"
    fi
}
ca_new ca.cert ca.key "kes API CA"
ca_new cluster-ca.cert cluster-ca.key "kes cluster CA"
API_CA=(--ca-cert "$CA_DIR/ca.cert" --ca-key "$CA_DIR/ca.key")
CLUSTER_CA=(--ca-cert "$CA_DIR/cluster-ca.cert" --ca-key "$CA_DIR/cluster-ca.key")
for who in admin minio; do
    if [ ! -f "$CA_DIR/$who.cert" ]; then
        "$KES" ca issue client "${API_CA[@]}" --name "$who" \
            --cert "$CA_DIR/$who.cert" --key "$CA_DIR/$who.key" >/dev/null
        echo "created the $who client certificate in $CA_DIR/$who.cert"
    fi
done
SANS=()
for d in "${DNS[@]}"; do SANS+=(--dns "$d"); done
for i in "${IPS[@]}"; do SANS+=(--ip "$i"); done
if [ "$FORCE" = 1 ] || [ ! -f "$ETC/server.cert" ]; then
    "$KES" ca issue server "${API_CA[@]}" "${SANS[@]}" -f \
        --cert "$ETC/server.cert" --key "$ETC/server.key" >/dev/null
fi
if [ "$FORCE" = 1 ] || [ ! -f "$ETC/node.cert" ]; then
    "$KES" ca issue node "${CLUSTER_CA[@]}" --id "$NODE_ID" "${SANS[@]}" -f \
        --cert "$ETC/node.cert" --key "$ETC/node.key" >/dev/null
fi
install -m 0644 -o 0 -g 0 "$CA_DIR/ca.cert" "$ETC/ca.cert"
install -m 0644 -o 0 -g 0 "$CA_DIR/cluster-ca.cert" "$ETC/cluster-ca.cert"
# The service reads its keys through its group; it cannot change them.
chown 0:"$KES_GID" "$ETC/server.key" "$ETC/node.key"
chmod 0640 "$ETC/server.key" "$ETC/node.key"
chmod 0644 "$ETC/server.cert" "$ETC/node.cert"

say "configuration"
if [ "$FORCE" = 1 ] || [ ! -f "$ETC/kes.env" ]; then
    ADMIN_ID="$("$KES" identity of "$CA_DIR/admin.cert")"
    MINIO_ID="$("$KES" identity of "$CA_DIR/minio.cert")"
    sed -e "s/^KES_ADMIN_IDENTITY=.*/KES_ADMIN_IDENTITY=$ADMIN_ID/" \
        -e "s/^MINIO_KES_IDENTITY=.*/MINIO_KES_IDENTITY=$MINIO_ID/" \
        "$(dirname "$0")/kes.env" >"$ETC/kes.env.new"
    install -m 0640 -o 0 -g "$KES_GID" "$ETC/kes.env.new" "$ETC/kes.env"
    rm -f "$ETC/kes.env.new"
fi
if [ -n "$KEYSTORE" ]; then
    KEYSTORE_YAML="$(cat "$KEYSTORE")"
else
    KEYSTORE_YAML="# A filesystem keystore suits one host only: a cluster on several hosts needs a
# shared KMS (vault:, aws: ...; see config/ in the source tree).
keystore:
  fs:
    path: $CFG_STATE/keys"
    if [ "$(echo "$MEMBER_YAML" | grep -c ':')" -gt 1 ]; then
        echo "warning: no --keystore given; edit the keystore section of /etc/kes/config.yaml:" \
            "every node of a multi-host cluster must use the same KMS" >&2
    fi
fi
if [ "$FORCE" = 1 ] || [ ! -f "$ETC/config.yaml" ]; then
    cat >"$ETC/config.yaml.new" <<EOF
# kes node $NODE_ID, written by deploy/systemd/install.sh. \${NAME} comes from $CFG_ETC/kes.env.
# After a change: systemctl restart kes.
version: v1
address: 0.0.0.0:$API_PORT

admin:
  identity: \${KES_ADMIN_IDENTITY}

tls:
  key: $CFG_ETC/server.key
  cert: $CFG_ETC/server.cert

policy:
  minio:
    allow:
      - /v1/key/create/*
      - /v1/key/generate/*
      - /v1/key/decrypt/*
      - /v1/key/describe/*
      - /v1/key/list/*
      - /v1/key/hmac/*
      - /v1/status
      - /v1/metrics
      - /v1/api
      - /v1/log/audit
      - /v1/log/error
    identities:
      - \${MINIO_KES_IDENTITY}

cache:
  expiry:
    offline: 1h

api:
  # Load balancers and orchestrators probe readiness without a client certificate.
  /v1/ready:
    skip_auth: true

$KEYSTORE_YAML

cluster:
  node_id: $NODE_ID
  address: 0.0.0.0:$PEER_PORT
  advertise: $ADVERTISE
  data_dir: $CFG_STATE/data
${MEMBER_YAML:+  members:
}$MEMBER_YAML  tls:
    key: $CFG_ETC/node.key
    cert: $CFG_ETC/node.cert
    ca: $CFG_ETC/cluster-ca.cert
EOF
    install -m 0640 -o 0 -g "$KES_GID" "$ETC/config.yaml.new" "$ETC/config.yaml"
    rm -f "$ETC/config.yaml.new"
fi

say "systemd unit"
install -m 0644 -o 0 -g 0 "$(dirname "$0")/kes.service" "$R/etc/systemd/system/kes.service"
DOC="$(dirname "$0")/../../docs/operations.md"
[ -f "$DOC" ] && install -m 0644 -o 0 -g 0 "$DOC" "$R/usr/local/share/doc/kes/operations.md"

[ "$JOIN" = 0 ] || echo "then add it from any member: kes cluster add $NODE_ID $ADVERTISE"
if [ "$R" = "" ] && [ "$START" = 1 ] && [ -d /run/systemd/system ]; then
    say "starting kes.service"
    systemctl daemon-reload
    systemctl enable --now kes.service
    systemctl --no-pager --lines=5 status kes.service || true
else
    echo "installed; start with: systemctl daemon-reload && systemctl enable --now kes"
fi
echo "admin client certificate: $CA_DIR/admin.cert (key $CA_DIR/admin.key)"
echo "MinIO client certificate: $CA_DIR/minio.cert (key $CA_DIR/minio.key)"
