"""Tests of the Helm chart in deploy/kubernetes/kes, run by `tests/deploy.sh helm` with the
virtualenv of tests/services.sh (helm-python-sdk: Helm's own lint and template engine, no helm
binary; kubernetes-validate: the API schemas).

1. `helm lint --strict` and rendering with cert-manager and with existing Secrets; bad values
   fail with a message naming the value.
2. Every rendered core object validates strictly against the Kubernetes 1.31 schemas; the
   cert-manager Certificates carry the usages and the kes-node-<id> names the nodes check.
3. The three pods for real: each pod's configuration file, arguments and environment, as the
   StatefulSet gives them, run as three local processes, each in its own mount namespace with
   the pod DNS names in /etc/hosts and its own loopback address as pod IP. They must form a
   cluster and serve a key.

Usage: python3 tests/helm_chart.py KES_BINARY SCRATCH_DIR
"""

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import yaml
from helm_python.chart import Chart, lint

CHART = os.path.join(os.path.dirname(__file__), "..", "deploy", "kubernetes", "kes")
KUBE = "1.31.0"
NS = "kes"
RELEASE = "kes"


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print(f"ok: {msg}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def render(values):
    with Chart.load(CHART) as chart:
        out = chart.render(values=values, name=RELEASE, namespace=NS, is_install=True)
    objects = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def main():
    kes, scratch = sys.argv[1], sys.argv[2]
    certs = os.path.join(scratch, "certs")
    os.makedirs(certs)

    def issue(kind, name, *extra, ca="api"):
        run([kes, "ca", "issue", kind, "--ca-cert", f"{certs}/{ca}-ca.cert", "--ca-key",
             f"{certs}/{ca}-ca.key", "--cert", f"{certs}/{name}.cert", "--key",
             f"{certs}/{name}.key", *extra])

    run([kes, "ca", "new", "--cert", f"{certs}/api-ca.cert", "--key", f"{certs}/api-ca.key"])
    run([kes, "ca", "new", "--cert", f"{certs}/cluster-ca.cert", "--key",
         f"{certs}/cluster-ca.key"])
    issue("client", "admin")
    admin_id = run([kes, "identity", "of", f"{certs}/admin.cert"]).strip()

    api_port, peer_port = free_port(), free_port()
    # The KMS every pod shares: a key directory outside the pods' own folders (a real
    # deployment names Vault, OpenBao or AWS here).
    kms = os.path.join(scratch, "kms")
    os.makedirs(kms)
    base = {
        "adminIdentity": admin_id,
        "keystore": {"fs": {"path": kms}},
        "ports": {"api": api_port, "peer": peer_port},
        "cache": {"expiry": {"offline": "1h"}},
    }
    existing = dict(base, certificates={"source": "existingSecrets"})

    # 1. lint and render
    for name, values in [("cert-manager", base), ("existing secrets", existing)]:
        report = lint(CHART, values, strict=True, namespace=NS, kube_version=f"v{KUBE}")
        bad = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        if bad:
            fail(f"helm lint ({name}): {bad}")
    ok("helm lint --strict (cert-manager and existing secrets)")
    for broken, says in [({"adminIdentity": ""}, "adminIdentity"), ({"keystore": {}}, "keystore"),
                         ({"initialMembers": 5}, "initialMembers"),
                         ({"certificates": {"source": "vault"}}, "certificates.source")]:
        try:
            render(dict(base, **broken))
        except Exception as e:  # the SDK raises its render error with Helm's message
            if says not in str(e):
                fail(f"bad values {broken}: message does not name {says}: {e}")
        else:
            fail(f"bad values {broken} rendered")
    ok("bad values are refused with the value named")

    # 2. schemas and semantics
    manifests = os.path.join(scratch, "manifests")
    os.makedirs(manifests)
    for name, values in [("cm", base), ("existing", existing)]:
        objects = render(values)
        core = [o for o in objects if o["apiVersion"] != "cert-manager.io/v1"]
        path = os.path.join(manifests, f"{name}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(core, f)
        r = subprocess.run(["kubernetes-validate", "--strict", "-k", KUBE, path],
                           capture_output=True, text=True)
        if r.returncode != 0 or "ERROR" in r.stdout or "WARN" in r.stdout:
            fail(f"kubernetes-validate ({name}): {r.stdout}{r.stderr}")
        kinds = sorted(o["kind"] for o in core)
        if kinds != ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]:
            fail(f"unexpected objects: {kinds}")
    ok(f"kubernetes-validate --strict -k {KUBE}: every object valid")

    objects = render(base)
    sts = by_kind(objects, "StatefulSet")[0]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    checks = {
        "ordinals start at 1": spec["ordinals"]["start"] == 1,
        "parallel start": spec["podManagementPolicy"] == "Parallel",
        "headless service": spec["serviceName"] == f"{RELEASE}-peers",
        "non-root": pod["securityContext"]["runAsNonRoot"] is True,
        "read-only root": c["securityContext"]["readOnlyRootFilesystem"] is True,
        "no privilege escalation": c["securityContext"]["allowPrivilegeEscalation"] is False,
        "capabilities dropped": c["securityContext"]["capabilities"]["drop"] == ["ALL"],
        "readiness on /v1/ready": c["readinessProbe"]["httpGet"]["path"] == "/v1/ready",
        "liveness": c["livenessProbe"]["httpGet"]["path"] == "/version",
        "resources": "requests" in c["resources"] and "limits" in c["resources"],
        "anti-affinity": "requiredDuringSchedulingIgnoredDuringExecution"
        in pod["affinity"]["podAntiAffinity"],
        "node id from the pod index": c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['apps.kubernetes.io/pod-index']",
        "no service account token": pod["automountServiceAccountToken"] is False,
    }
    for what, good in checks.items():
        if not good:
            fail(f"StatefulSet: {what}")
    pdb = by_kind(objects, "PodDisruptionBudget")[0]
    if pdb["spec"]["maxUnavailable"] != 1:
        fail("PodDisruptionBudget")
    headless = [s for s in by_kind(objects, "Service") if s["spec"].get("clusterIP") == "None"]
    if not headless or not headless[0]["spec"]["publishNotReadyAddresses"]:
        fail("headless Service must publish not-ready pods (peers need each other to get ready)")
    certs_cm = by_kind(objects, "Certificate")
    api = [x for x in certs_cm if x["metadata"]["name"] == f"{RELEASE}-api"][0]
    if api["spec"]["usages"] != ["digital signature", "server auth"]:
        fail(f"API certificate usages: {api['spec']['usages']}")
    if f"{RELEASE}.{NS}.svc" not in api["spec"]["dnsNames"]:
        fail("API certificate lacks the Service name")
    projected = [v for v in pod["volumes"] if v["name"] == "node-tls"][0]["projected"]["sources"]
    for i in (1, 2, 3):
        node = [x for x in certs_cm if x["metadata"]["name"] == f"{RELEASE}-node-{i}"][0]["spec"]
        if node["dnsNames"][0] != f"kes-node-{i}":
            fail(f"node {i} certificate lacks kes-node-{i}: {node['dnsNames']}")
        if set(node["usages"]) != {"digital signature", "server auth", "client auth"}:
            fail(f"node {i} usages: {node['usages']}")
        if node["issuerRef"]["name"] == api["spec"]["issuerRef"]["name"]:
            fail("node certificates must come from their own CA")
        if projected[i - 1]["secret"]["name"] != node["secretName"]:
            fail(f"node {i}'s Secret is not mounted")
    ok("StatefulSet, Services, PodDisruptionBudget and cert-manager Certificates as intended")

    # 3. the three pods as local processes
    objects = render(existing)
    cm = by_kind(objects, "ConfigMap")[0]["data"]
    sts = by_kind(objects, "StatefulSet")[0]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    pods = {i: f"{RELEASE}-{i}.{RELEASE}-peers.{NS}.svc.cluster.local" for i in (1, 2, 3)}
    ips = {i: f"127.0.0.{10 + i}" for i in (1, 2, 3)}
    # The Secrets an operator would create with kes ca.
    issue("server", "api", "--dns", f"{RELEASE}.{NS}.svc", *sum((["--dns", p] for p in pods.values()), []),
          *sum((["--ip", ip] for ip in ips.values()), []))
    for i in (1, 2, 3):
        issue("node", f"node{i}", "--id", str(i), "--dns", pods[i], ca="cluster")
    hosts = os.path.join(scratch, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n")
        for i in (1, 2, 3):
            f.write(f"{ips[i]} {pods[i]}\n")
    procs = []
    try:
        for i in (1, 2, 3):
            root = os.path.join(scratch, f"pod{i}")

            def at(path):
                return root + path

            for d in mounts.values():
                os.makedirs(at(d), exist_ok=True)
            for name, text in cm.items():
                text = text.replace("/etc/kes", at("/etc/kes")).replace(
                    "/var/lib/kes", at("/var/lib/kes")).replace("0.0.0.0", ips[i])
                with open(os.path.join(at(mounts["config"]), name), "w") as f:
                    f.write(text)
            for src, dst in [("api.cert", "tls.crt"), ("api.key", "tls.key")]:
                with open(f"{certs}/{src}") as s, open(os.path.join(at(mounts["api-tls"]), dst), "w") as d:
                    d.write(s.read())
            for j in (1, 2, 3):
                nd = os.path.join(at(mounts["node-tls"]), str(j))
                os.makedirs(nd)
                for src, dst in [(f"node{j}.cert", "tls.crt"), (f"node{j}.key", "tls.key"),
                                 ("cluster-ca.cert", "ca.crt")]:
                    with open(f"{certs}/{src}") as s, open(os.path.join(nd, dst), "w") as d:
                        d.write(s.read())
            # The container's environment and arguments as the kubelet gives them.
            env = {"PATH": os.environ["PATH"]}
            for e in c["env"]:
                if "valueFrom" in e:
                    ref = e["valueFrom"]["fieldRef"]["fieldPath"]
                    env[e["name"]] = {"metadata.labels['apps.kubernetes.io/pod-index']": str(i)}[ref]
                else:
                    env[e["name"]] = e["value"]
            args = [a.replace("$(KES_NODE_ID)", env["KES_NODE_ID"]) for a in c["args"]]
            args = [a.replace("/etc/kes", at("/etc/kes")) for a in args]
            log = open(os.path.join(scratch, f"pod{i}.log"), "w")
            procs.append(subprocess.Popen(
                ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                 hosts, kes, *args], env=env, stdout=log, stderr=subprocess.STDOUT))
        ctx = ssl.create_default_context(cafile=f"{certs}/api-ca.cert")
        deadline = time.time() + 60
        for i in (1, 2, 3):
            while True:
                try:
                    with urllib.request.urlopen(f"https://{ips[i]}:{api_port}/v1/ready",
                                                context=ctx, timeout=2) as r:
                        if r.status == 200:
                            break
                except Exception:
                    pass
                if time.time() > deadline or procs[i - 1].poll() is not None:
                    with open(os.path.join(scratch, f"pod{i}.log")) as f:
                        fail(f"pod {i} never became ready:\n{f.read()[-3000:]}")
                time.sleep(0.3)
        ok("three pods from the rendered chart formed a cluster (all ready)")
        client = ["--ca", f"{certs}/api-ca.cert", "--client-cert", f"{certs}/admin.cert",
                  "--client-key", f"{certs}/admin.key"]

        def kes_on(i, *a):
            return run([kes, *a, "--server", f"{ips[i]}:{api_port}", *client])

        kes_on(1, "key", "create", "helm-key")
        dek = json.loads(kes_on(2, "key", "dek", "helm-key", "--json"))
        plain = json.loads(kes_on(3, "key", "decrypt", "helm-key", dek["ciphertext"], "--json"))
        if plain["plaintext"] != dek["plaintext"]:
            fail("decrypt on pod 3 gave another plaintext")
        status = json.loads(kes_on(1, "cluster", "status", "--json"))
        if sorted(m["id"] for m in status["members"]) != [1, 2, 3]:
            fail(f"members: {status['members']}")
        ok("a key created on pod 1, a data key from pod 2, decrypted on pod 3")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
