#!/usr/bin/env bash
# Tests of what deploy/ ships, each against the real tool it targets:
#
#   tests/deploy.sh systemd      install.sh into a scratch root, `systemd-analyze verify` of the
#                                unit, then the installed node run as the kes user
#   tests/deploy.sh haproxy      haproxy.cfg in front of three local nodes; a client keeps
#                                working through it while a node is killed and restarted
#   tests/deploy.sh monitoring   promtool check config/rules, promtool test rules, dashboard
#                                expressions against the metrics the nodes really serve
#   tests/deploy.sh helm         the chart: helm lint/template (helm-python-sdk), schemas
#                                (kubernetes-validate), three pods of it run as local processes
#   tests/deploy.sh docker       the image built with podman (runc), three containers on a user
#                                network serve a client on the host, one of them stopped
#   tests/deploy.sh all          all of the above (what tests/run.sh runs)
#
# Needs root (useradd into the scratch root, apt-get for missing tools) and the kes binary
# ($KES_BIN, default target/debug/kes). Every wait is bounded; everything started is stopped
# and every scratch file removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
KES="${KES_BIN:-$REPO/target/debug/kes}"
[ -x "$KES" ] || { echo "no kes binary at $KES (cargo build -p kes-cli, or set KES_BIN)" >&2; exit 1; }
# Absolute: the cargo tests below run from their own package folder.
KES="$(realpath "$KES")"

step() { printf '\n==> deploy: %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

SCRATCH="$(mktemp -d /tmp/kes-deploy.XXXXXX)"
PIDS=()
CLEANUP_DOCKER=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ ${#CLEANUP_DOCKER[@]} -gt 0 ]; then
        local tag="${CLEANUP_DOCKER[0]}" net="${CLEANUP_DOCKER[1]}"
        for n in 1 2 3; do podman --runtime runc rm -f -v -t 5 "$net-kes$n" >/dev/null 2>&1 || true; done
        podman network rm -f "$net" >/dev/null 2>&1 || true
        podman rmi -f "$tag" >/dev/null 2>&1 || true
    fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

apt_install() { # command package...
    command -v "$1" >/dev/null 2>&1 && return 0
    shift
    echo "installing $* (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@") >/dev/null
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to $2 seconds for `curl` to get HTTP 200 from $1 (extra curl flags after).
wait_200() {
    local url="$1" secs="$2"
    shift 2
    local deadline=$((SECONDS + secs))
    while [ $SECONDS -lt $deadline ]; do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url")" = 200 ]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

mode_of() { stat -c '%a %U:%G' "$1"; }
expect_mode() { # path "mode user:group"
    local got
    got="$(mode_of "$1")"
    [ "$got" = "$2" ] || fail "$1 is $got, want $2"
}

# A scratch root with a copy of the host's user database, for install.sh --root.
new_root() {
    mkdir -p "$1/etc"
    chmod 0755 "$1"
    # useradd --root edits the scratch root's user database, never the host's.
    for f in passwd group shadow gshadow login.defs; do
        [ -f "/etc/$f" ] && cp -p "/etc/$f" "$1/etc/$f"
    done
}

# Runs the node installed under root $1 as the unit would: user kes, the environment file, the
# installed configuration (its /etc/kes and /var/lib/kes paths moved into the scratch root).
# Sets NODE_PID.
run_installed() { # root log
    local root="$1" cfg="$1/config.scratch.yaml" uid gid
    uid="$(awk -F: '$1=="kes"{print $3}' "$root/etc/passwd")"
    gid="$(awk -F: '$1=="kes"{print $3}' "$root/etc/group")"
    sed -e "s#/etc/kes#$root/etc/kes#g" -e "s#/var/lib/kes#$root/var/lib/kes#g" \
        "$root/etc/kes/config.yaml" >"$cfg"
    chown 0:"$gid" "$cfg"
    chmod 0640 "$cfg"
    (
        set -a
        # shellcheck disable=SC1091
        . "$root/etc/kes/kes.env"
        set +a
        exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --no-new-privs \
            "$root/usr/local/bin/kes" server --config "$cfg"
    ) >"$2" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
}

# ----------------------------------------------------------------------------------------------
test_systemd() {
    step "systemd: install.sh into a scratch root"
    apt_install systemd-analyze systemd
    local root="$SCRATCH/root"
    chmod 0755 "$SCRATCH"
    new_root "$root"
    local api peer
    api="$(free_port)"
    peer="$(free_port)"
    # The KMS both nodes of this test share: a key directory outside either root.
    mkdir -p "$SCRATCH/kms"
    printf 'keystore:\n  fs:\n    path: %s\n' "$SCRATCH/kms" >"$SCRATCH/keystore.yaml"
    deploy/systemd/install.sh --root "$root" --node-id 1 --members "1=127.0.0.1:$peer" \
        --ca-dir "$root/root/kes-ca" --dns localhost --ip 127.0.0.1 --api-port "$api" \
        --peer-port "$peer" --kes-bin "$KES" --keystore "$SCRATCH/keystore.yaml" \
        --no-start >"$SCRATCH/install.log" 2>&1 ||
        { cat "$SCRATCH/install.log"; fail "install.sh failed"; }
    # Twice: it is idempotent and keeps what exists.
    local before
    before="$(sha256sum "$root/etc/kes/node.cert" "$root/etc/kes/config.yaml")"
    deploy/systemd/install.sh --root "$root" --node-id 1 --members "1=127.0.0.1:$peer" \
        --ca-dir "$root/root/kes-ca" --dns localhost --ip 127.0.0.1 --api-port "$api" \
        --peer-port "$peer" --kes-bin "$KES" --keystore "$SCRATCH/keystore.yaml" \
        --no-start >"$SCRATCH/install2.log" 2>&1 ||
        { cat "$SCRATCH/install2.log"; fail "install.sh failed the second time"; }
    [ "$before" = "$(sha256sum "$root/etc/kes/node.cert" "$root/etc/kes/config.yaml")" ] ||
        fail "a second install.sh changed existing files"
    ok "install.sh ran twice"

    grep -q '^kes:x:[0-9]*:[0-9]*:.*:/var/lib/kes:/usr/sbin/nologin$' "$root/etc/passwd" ||
        fail "no kes system user in the scratch root"
    ! grep -q '^kes:' /etc/passwd || [ -n "${KES_HOST_HAS_KES_USER:-}" ] ||
        fail "install.sh --root touched the host's /etc/passwd"
    local uid gid
    uid="$(awk -F: '$1=="kes"{print $3}' "$root/etc/passwd")"
    gid="$(awk -F: '$1=="kes"{print $3}' "$root/etc/group")"
    # stat names the owner from the host's database; compare numbers.
    [ "$(stat -c '%a %u:%g' "$root/var/lib/kes")" = "700 $uid:$gid" ] || fail "state dir: $(stat -c '%a %u:%g' "$root/var/lib/kes")"
    [ "$(stat -c '%a %u:%g' "$root/etc/kes")" = "750 0:$gid" ] || fail "config dir: $(stat -c '%a %u:%g' "$root/etc/kes")"
    for f in server.key node.key config.yaml kes.env; do
        [ "$(stat -c '%a %u:%g' "$root/etc/kes/$f")" = "640 0:$gid" ] || fail "$f: $(stat -c '%a %u:%g' "$root/etc/kes/$f")"
    done
    for f in ca.key cluster-ca.key admin.key minio.key; do
        expect_mode "$root/root/kes-ca/$f" "600 root:root"
    done
    ok "user, folders and modes"

    # The certificates: right usages and names, chained to the right CA.
    openssl verify -CAfile "$root/etc/kes/ca.cert" "$root/etc/kes/server.cert" >/dev/null || fail "server cert chain"
    openssl verify -CAfile "$root/etc/kes/cluster-ca.cert" "$root/etc/kes/node.cert" >/dev/null || fail "node cert chain"
    openssl x509 -in "$root/etc/kes/node.cert" -noout -ext subjectAltName,extendedKeyUsage |
        tr -d '\n' | grep -q 'DNS:kes-node-1.*TLS Web Server Authentication, TLS Web Client Authentication' ||
        fail "node certificate lacks kes-node-1 or a usage"
    openssl x509 -in "$root/etc/kes/server.cert" -noout -ext extendedKeyUsage | grep -q 'TLS Web Server Authentication' ||
        fail "server certificate lacks serverAuth"
    ok "certificates"

    step "systemd: systemd-analyze verify"
    # verify resolves ExecStart on this host: check a copy that names the installed binary.
    local unit_dir="$SCRATCH/units"
    mkdir -p "$unit_dir"
    sed -e "s#/usr/local/bin/kes#$root/usr/local/bin/kes#g" \
        "$root/etc/systemd/system/kes.service" >"$unit_dir/kes.service"
    cmp -s deploy/systemd/kes.service "$root/etc/systemd/system/kes.service" || fail "installed unit differs"
    local out
    out="$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$unit_dir/kes.service" 2>&1)" ||
        { echo "$out"; fail "systemd-analyze verify"; }
    if echo "$out" | grep -q 'kes.service'; then
        echo "$out"
        fail "systemd-analyze verify reported problems in kes.service"
    fi
    for want in "User=kes" "StateDirectory=kes" "ProtectSystem=strict" "NoNewPrivileges=yes" \
        "CapabilityBoundingSet=$" "LimitNOFILE=" "Restart=on-failure" 'ExecReload=/bin/kill -HUP \$MAINPID'; do
        grep -q "^$want" deploy/systemd/kes.service || fail "kes.service lacks $want"
    done
    ok "systemd-analyze verify: clean"

    step "systemd: the installed node, run as the kes user"
    chown "$uid:$gid" "$SCRATCH/kms"
    run_installed "$root" "$SCRATCH/node.log"
    local node_pid=$NODE_PID
    wait_200 "https://127.0.0.1:$api/v1/ready" 30 --cacert "$root/etc/kes/ca.cert" ||
        { cat "$SCRATCH/node.log"; fail "the installed node never became ready"; }
    local ca_dir="$root/root/kes-ca"
    local client=(--server "127.0.0.1:$api" --ca "$root/etc/kes/ca.cert")
    KES_CLIENT_CERT="$ca_dir/admin.cert" KES_CLIENT_KEY="$ca_dir/admin.key" \
        "$KES" key create deploy-test "${client[@]}" || fail "admin could not create a key"
    KES_CLIENT_CERT="$ca_dir/minio.cert" KES_CLIENT_KEY="$ca_dir/minio.key" \
        "$KES" key dek deploy-test "${client[@]}" >/dev/null || fail "minio could not generate a data key"
    # Reload (ExecReload) keeps it serving.
    kill -HUP "$node_pid"
    sleep 1
    KES_CLIENT_CERT="$ca_dir/minio.cert" KES_CLIENT_KEY="$ca_dir/minio.key" \
        "$KES" key dek deploy-test "${client[@]}" >/dev/null || fail "not serving after SIGHUP"
    [ "$(stat -c '%u' "$root/var/lib/kes/data")" = "$uid" ] || fail "state not written as kes"
    ok "node ran as kes with the installed files; admin and minio identities work; SIGHUP"

    step "systemd: a second host joins (install.sh --join, kes cluster add)"
    local root2="$SCRATCH/root2" api2 peer2
    new_root "$root2"
    api2="$(free_port)"
    peer2="$(free_port)"
    deploy/systemd/install.sh --root "$root2" --node-id 2 --join --advertise "127.0.0.1:$peer2" \
        --ca-dir "$ca_dir" --dns localhost --ip 127.0.0.1 --api-port "$api2" \
        --peer-port "$peer2" --kes-bin "$KES" --keystore "$SCRATCH/keystore.yaml" \
        --no-start >"$SCRATCH/install3.log" 2>&1 || { cat "$SCRATCH/install3.log"; fail "install.sh --join"; }
    ! grep -q 'members:' "$root2/etc/kes/config.yaml" || fail "a joining node got members"
    [ "$(awk -F: '$1=="kes"{print $3}' "$root2/etc/passwd")" = "$uid" ] || fail "kes uid differs between roots"
    run_installed "$root2" "$SCRATCH/node2.log"
    KES_CLIENT_CERT="$ca_dir/admin.cert" KES_CLIENT_KEY="$ca_dir/admin.key" \
        "$KES" cluster add 2 "127.0.0.1:$peer2" "${client[@]}" || { cat "$SCRATCH/node2.log"; fail "kes cluster add 2"; }
    wait_200 "https://127.0.0.1:$api2/v1/ready" 30 --cacert "$root2/etc/kes/ca.cert" ||
        { cat "$SCRATCH/node2.log"; fail "the joined node never became ready"; }
    KES_CLIENT_CERT="$ca_dir/minio.cert" KES_CLIENT_KEY="$ca_dir/minio.key" \
        "$KES" key dek deploy-test --server "127.0.0.1:$api2" --ca "$root2/etc/kes/ca.cert" >/dev/null ||
        fail "the joined node does not serve the key"
    KES_CLIENT_CERT="$ca_dir/admin.cert" KES_CLIENT_KEY="$ca_dir/admin.key" \
        "$KES" cluster status --json "${client[@]}" | grep -q '"id":2' || fail "node 2 not a member"
    kill "$node_pid" "$NODE_PID"
    wait "$node_pid" "$NODE_PID" 2>/dev/null || true
    ok "node 2 installed with --join, added with kes cluster add, serves the key"
}

# The Rust tests in tests/tests/deploy.rs that need a tool from this script.
cargo_deploy_test() { # test-name-filter
    KES_BIN="$KES" cargo test -q --workspace --locked --test deploy -- --ignored --nocapture "$1"
}

# ----------------------------------------------------------------------------------------------
test_haproxy() {
    step "haproxy: deploy/haproxy/haproxy.cfg in front of three nodes, one killed and restarted"
    apt_install haproxy haproxy
    "$KES" ca new --cert "$SCRATCH/lb-ca.cert" --key "$SCRATCH/lb-ca.key" >/dev/null
    KES_LB_BIND=127.0.0.1:7373 KES_CA_FILE="$SCRATCH/lb-ca.cert" KES_NODE1=10.0.0.1:7373 \
        KES_NODE2=10.0.0.2:7373 KES_NODE3=10.0.0.3:7373 \
        haproxy -c -f deploy/haproxy/haproxy.cfg || fail "haproxy -c"
    cargo_deploy_test haproxy
    ok "haproxy"
}

# ----------------------------------------------------------------------------------------------
test_monitoring() {
    step "monitoring: promtool, Prometheus against three nodes"
    apt_install promtool prometheus
    # promtool checks that the TLS files the scrape configuration names exist.
    local m="$SCRATCH/monitoring"
    mkdir -p "$m/kes"
    cp deploy/monitoring/prometheus.yml deploy/monitoring/kes-alerts.yml "$m/"
    "$KES" ca new --cert "$m/kes/ca.cert" --key "$m/kes/ca.key" >/dev/null
    "$KES" ca issue client --ca-cert "$m/kes/ca.cert" --ca-key "$m/kes/ca.key" --name prometheus \
        --cert "$m/kes/admin.cert" --key "$m/kes/admin.key" >/dev/null
    promtool check config "$m/prometheus.yml" || fail "promtool check config"
    promtool check rules deploy/monitoring/kes-alerts.yml || fail "promtool check rules"
    (cd deploy/monitoring && promtool test rules kes-alerts.test.yml) || fail "promtool test rules"
    python3 -m json.tool deploy/monitoring/grafana-dashboard.json >/dev/null || fail "dashboard JSON"
    # Metric names in the rules and the dashboard against what nodes serve; Prometheus with
    # this scrape configuration against three nodes.
    cargo_deploy_test monitoring
    ok "monitoring"
}

# ----------------------------------------------------------------------------------------------
test_helm() {
    step "helm: lint, template, schemas, and three pods of the rendered chart run locally"
    # helm-python-sdk and kubernetes-validate live in the test virtualenv (tests/services.sh).
    local venv="${KES_SERVICES_VENV:-target/services-venv}"
    tests/services.sh install >/dev/null
    local out="$SCRATCH/helm"
    mkdir -p "$out"
    PATH="$REPO/$venv/bin:$PATH" timeout 300 "$REPO/$venv/bin/python" tests/helm_chart.py "$KES" "$out" ||
        fail "helm chart"
    ok "helm"
}

# ----------------------------------------------------------------------------------------------
# Podman as root with runc (crun does not work on every host); small ulimits because rootful
# podman cannot raise them above the host's.
PODMAN=(podman --runtime runc)
RUN_LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

test_docker() {
    step "docker: the image (deploy/docker/Dockerfile), three containers on a user network"
    apt_install podman podman runc
    apt_install runc runc
    local tag="localhost/kes-deploy-test:$$" net="kes-deploy-$$" d="$SCRATCH/docker"
    mkdir -p "$d/ctx/out"
    CLEANUP_DOCKER=("$tag" "$net")
    # The runtime stage of the Dockerfile, with the build stage replaced by this binary (no
    # registry is reachable here to pull the Rust image).
    deploy/docker/rootfs.sh "$KES" "$d/ctx/out/rootfs"
    "${PODMAN[@]}" build -q --format docker --build-context build="$d/ctx" --target runtime \
        -f deploy/docker/Dockerfile -t "$tag" deploy/docker >/dev/null || fail "podman build"
    local user health
    user="$("${PODMAN[@]}" image inspect "$tag" --format '{{.Config.User}}')"
    [ "$user" = "65532:65532" ] || fail "image user is '$user'"
    health="$("${PODMAN[@]}" image inspect "$tag" --format '{{json .Config.Healthcheck}}')"
    echo "$health" | grep -q '"/usr/local/bin/kes","ready","-k"' || fail "no HEALTHCHECK: $health"
    ok "image built FROM scratch: user 65532, HEALTHCHECK kes ready"

    # Certificates as compose's certs.sh makes them, for the containers' addresses too.
    local sub=$((RANDOM % 200 + 20))
    local ips=("" "10.89.$sub.11" "10.89.$sub.12" "10.89.$sub.13")
    cp deploy/docker/certs.sh deploy/docker/node.yaml "$d/"
    "$d/certs.sh" "$KES" "${ips[1]}" "${ips[2]}" "${ips[3]}" >/dev/null
    # shellcheck disable=SC1091
    . "$d/.env"
    mkdir -p "$d/kms"
    chown 65532:65532 "$d/kms"
    "${PODMAN[@]}" network create --subnet "10.89.$sub.0/24" "$net" >/dev/null || fail "network create"
    local ports=("" "$(free_port)" "$(free_port)" "$(free_port)")
    local hosts=()
    for n in 1 2 3; do hosts+=(--add-host "kes$n:${ips[$n]}"); done
    for n in 1 2 3; do
        # What compose.yaml gives each kes service: read-only, no capabilities, no new
        # privileges, the identities from .env, the node's own certificates, a shared keystore.
        # Without systemd podman cannot run the health check on a timer and says so on stderr
        # (kept in podman.log); `podman healthcheck run` below runs it.
        "${PODMAN[@]}" run -d --name "$net-kes$n" --hostname "kes$n" --network "$net" \
            --ip "${ips[$n]}" "${hosts[@]}" "${RUN_LIMITS[@]}" \
            --read-only --cap-drop ALL --security-opt no-new-privileges \
            --env-file "$d/.env" -e KES_NODE_ID="$n" -e KES_ADVERTISE="kes$n:7374" \
            -v "$d/node.yaml:/etc/kes/config.yaml:ro" -v "$d/certs/kes$n:/etc/kes/certs:ro" \
            -v "$d/kms:/var/lib/kes-kms" -p "127.0.0.1:${ports[$n]}:7373" \
            "$tag" >/dev/null 2>>"$d/podman.log" || { cat "$d/podman.log"; fail "podman run kes$n"; }
    done
    for n in 1 2 3; do
        wait_200 "https://127.0.0.1:${ports[$n]}/v1/ready" 60 --cacert "$d/certs/ca.cert" ||
            { "${PODMAN[@]}" logs "$net-kes$n" | tail -20; fail "container kes$n never became ready"; }
    done
    ok "three containers formed a cluster (ready through -p 127.0.0.1:PORT)"
    local admin=(--ca "$d/certs/ca.cert" --client-cert "$d/certs/admin.cert" --client-key "$d/certs/admin.key")
    local minio=(--ca "$d/certs/ca.cert" --client-cert "$d/certs/minio.cert" --client-key "$d/certs/minio.key")
    "$KES" key create docker-key --server "127.0.0.1:${ports[1]}" "${admin[@]}" || fail "create through kes1"
    local ct
    ct="$("$KES" key dek docker-key --json --server "127.0.0.1:${ports[2]}" "${minio[@]}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["ciphertext"])')" || fail "dek through kes2"
    "${PODMAN[@]}" healthcheck run "$net-kes3" >/dev/null || fail "the image's health check on kes3"
    ok "a key served to a client on the host; health check healthy"

    # One container stopped: the others keep serving.
    "${PODMAN[@]}" stop -t 10 "$net-kes1" >/dev/null 2>>"$d/podman.log"
    local all="127.0.0.1:${ports[1]},127.0.0.1:${ports[2]},127.0.0.1:${ports[3]}"
    for _ in 1 2 3 4 5; do
        "$KES" key decrypt docker-key "$ct" --server "$all" "${minio[@]}" >/dev/null ||
            fail "decrypt with kes1 stopped"
        "$KES" key dek docker-key --server "127.0.0.1:${ports[3]}" "${minio[@]}" >/dev/null ||
            fail "dek on kes3 with kes1 stopped"
    done
    "$KES" key create docker-key-2 --server "127.0.0.1:${ports[2]}" "${admin[@]}" ||
        fail "create with kes1 stopped (two of three nodes are a majority)"
    ok "kept serving (and writing) with one container stopped"
}

case "${1:-all}" in
systemd) test_systemd ;;
haproxy) test_haproxy ;;
monitoring) test_monitoring ;;
helm) test_helm ;;
docker) test_docker ;;
all)
    test_systemd
    test_haproxy
    test_monitoring
    test_helm
    # About 20 s once podman is installed; KES_SKIP_PODMAN=1 leaves it out.
    if [ -z "${KES_SKIP_PODMAN:-}" ]; then test_docker; else echo "docker: SKIPPED (KES_SKIP_PODMAN)"; fi
    ;;
*) echo "usage: $0 [systemd|haproxy|monitoring|helm|docker|all]" >&2; exit 2 ;;
esac
step "deploy tests passed"
