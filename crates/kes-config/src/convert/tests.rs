//! Tests of the raw file -> [`Config`] conversion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use std::collections::HashMap;

const BASE: &str = "\
admin:
  identity: 3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22
tls:
  key: ./server.key
  cert: ./server.cert
keystore:
  fs:
    path: ./keys
";

fn no_env(_: &str) -> Option<String> {
    None
}

fn ok_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Parsed {
    match crate::parse(text, env) {
        Ok(p) => p,
        Err(e) => panic!("unexpected error: {e}\n---\n{text}"),
    }
}

fn ok(text: &str) -> Parsed {
    ok_with(text, &no_env)
}

fn err(text: &str) -> ConfigError {
    match crate::parse(text, &no_env) {
        Ok(p) => panic!("expected an error, got {:?}\n---\n{text}", p.config),
        Err(e) => e,
    }
}

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn minimal_file_and_defaults() {
    let p = ok(BASE);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let c = p.config;
    assert_eq!(
        c.address,
        "0.0.0.0:7373"
            .parse::<SocketAddr>()
            .ok()
            .unwrap_or(c.address)
    );
    assert_eq!(c.address.to_string(), "0.0.0.0:7373");
    assert_eq!(c.tls.key, PathBuf::from("./server.key"));
    assert_eq!(c.tls.cert, PathBuf::from("./server.cert"));
    assert_eq!(c.tls.auth, ClientAuth::Off);
    assert_eq!(c.tls.password, None);
    assert!(c.policies.is_empty() && c.api.is_empty() && c.keys.is_empty());
    assert_eq!(c.cache, CacheConfig::default());
    assert_eq!(
        c.log,
        LogConfig {
            error: LogLevel::Info,
            audit: LogLevel::Info
        }
    );
    assert_eq!(
        c.keystore,
        KeystoreConfig::Fs {
            path: "./keys".into()
        }
    );
    assert_eq!(c.cluster, None);
}

#[test]
fn full_file() {
    let text = "\
version: v1
address: :7000
admin:
  identity: disabled
tls:
  key: k.pem
  cert: c.pem
  password: pw
  auth: ON
  ca: /etc/kes/ca
  proxy:
    identities: [p1, p2]
    header:
      cert: X-Tls-Client-Cert
policy:
  minio:
    allow:
    - /v1/key/create/*
    - /v1/status
    deny: [/v1/key/create/secret*]
    identities:
    - id-a
    - id-b
  empty: {}
cache:
  expiry:
    any: 5m0s
    unused: 30s
    offline: 1h2m
api:
  /v1/status:
    skip_auth: true
    timeout: 2s
  /v1/key/create/:
    timeout: 0
log:
  error: WARN
  audit: off
keys:
  - name: k1
  - name: k2
keystore:
  memory: {}
";
    let p = ok(text);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let c = p.config;
    assert_eq!(c.address.to_string(), "0.0.0.0:7000");
    assert_eq!(c.admin_identity, "disabled");
    assert_eq!(c.tls.auth, ClientAuth::On);
    assert_eq!(c.tls.password.as_deref(), Some("pw"));
    assert_eq!(c.tls.ca, Some(PathBuf::from("/etc/kes/ca")));
    assert_eq!(c.tls.proxy_identities, ["p1", "p2"]);
    assert_eq!(
        c.tls.proxy_cert_header.as_deref(),
        Some("X-Tls-Client-Cert")
    );
    let minio = &c.policies["minio"];
    assert_eq!(minio.allow, ["/v1/key/create/*", "/v1/status"]);
    assert_eq!(minio.deny, ["/v1/key/create/secret*"]);
    assert_eq!(minio.identities, ["id-a", "id-b"]);
    assert_eq!(c.policies["empty"], PolicyConfig::default());
    assert_eq!(c.policy_of("id-b").map(|(n, _)| n), Some("minio"));
    assert_eq!(c.policy_of("nobody"), None);
    assert_eq!(c.cache.any, Duration::from_secs(300));
    assert_eq!(c.cache.unused, Duration::from_secs(30));
    assert_eq!(c.cache.offline, Duration::from_secs(3720));
    assert_eq!(
        c.api["/v1/status"],
        ApiOverride {
            skip_auth: true,
            timeout: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(c.api["/v1/key/create/"], ApiOverride::default());
    assert_eq!(c.log.error, LogLevel::Warn);
    assert_eq!(c.log.audit, LogLevel::Off);
    assert_eq!(c.keys, ["k1", "k2"]);
    assert_eq!(c.keystore, KeystoreConfig::Memory);
}

#[test]
fn env_substitution() {
    let vars: HashMap<&str, &str> = [
        ("ADMIN", "admin-id"),
        ("KEY", "/k.pem"),
        ("ADDR", "127.0.0.1:9000"),
        ("ANY", "10m"),
        ("SKIP", "true"),
        ("APP", "app-id"),
        ("EMPTY", ""),
    ]
    .into_iter()
    .collect();
    let env = |n: &str| vars.get(n).map(|v| (*v).to_owned());
    let text = "\
address: ${ADDR}
admin:
  identity: \"  ${ ADMIN }  \"
tls:
  key: ${KEY}
  cert: prefix-${KEY}
  password: ${EMPTY}
policy:
  app:
    allow: [\"${KEY}\"]
    identities:
    - ${APP}
cache:
  expiry:
    any: ${ANY}
api:
  /v1/ready:
    skip_auth: ${SKIP}
keystore:
  fs:
    path: ${KEY}
";
    let c = ok_with(text, &env).config;
    assert_eq!(c.address.to_string(), "127.0.0.1:9000");
    assert_eq!(c.admin_identity, "admin-id");
    assert_eq!(c.tls.key, PathBuf::from("/k.pem"));
    // Only a whole scalar is a reference; there is no partial interpolation.
    assert_eq!(c.tls.cert, PathBuf::from("prefix-${KEY}"));
    // A variable set to "" leaves the field unset.
    assert_eq!(c.tls.password, None);
    // Policy patterns are not env-enabled.
    assert_eq!(c.policies["app"].allow, ["${KEY}"]);
    assert_eq!(c.policies["app"].identities, ["app-id"]);
    assert_eq!(c.cache.any, Duration::from_secs(600));
    assert!(c.api["/v1/ready"].skip_auth);
}

#[test]
fn missing_env_var_names_variable_and_line() {
    let text = "admin:\n  identity: x\ntls:\n  key: k\n  cert:   ${ NOPE }  \n";
    let e = err(text);
    assert!(
        matches!(&e, ConfigError::EnvNotFound { name, line: 5 } if name == "NOPE"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "kesconf: referenced env. variable 'NOPE' in line '5' not found"
    );
    // A list item reports its own line.
    let e = err(&with(
        "policy:\n  p:\n    identities:\n      - a\n      - ${GONE}\n",
    ));
    assert!(
        matches!(&e, ConfigError::EnvNotFound { name, line: 13 } if name == "GONE"),
        "{e:?}"
    );
}

#[test]
fn unknown_keys_are_warnings() {
    let p = ok(&with(
        "tls_typo: 1\ncache:\n  expiry:\n    anyy: 5m\nkeys:\n  - name: x\n    nme: x\n",
    ));
    let w = p.warnings;
    assert!(
        w.contains(&"unknown field 'tls_typo' at line 9".to_owned()),
        "{w:?}"
    );
    assert!(
        w.contains(&"unknown field 'cache.expiry.anyy' at line 12".to_owned()),
        "{w:?}"
    );
    assert!(
        w.contains(&"unknown field 'keys[0].nme' at line 15".to_owned()),
        "{w:?}"
    );
    // A misspelt required field is still missing.
    let e = err(&with("keys:\n  - nme: x\n"));
    assert_eq!(e.field(), Some("keys[0].name"));

    let p = ok(&BASE.replace("  cert:", "  foo: bar\n  cert:"));
    assert_eq!(p.warnings, ["unknown field 'tls.foo' at line 5"]);

    let p = ok(
        &with("keystore:\n  fs:\n    path: p\n  kes:\n    endpoint: [x]\n").replacen(
            "keystore:\n  fs:\n    path: ./keys\n",
            "",
            1,
        ),
    );
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("keystore.kes"), "{:?}", p.warnings);
}

#[test]
fn version_must_be_v1() {
    ok(&format!("version: v1\n{BASE}"));
    let e = err(&format!("{BASE}version: v2\n"));
    assert_eq!(
        e.to_string(),
        "kesconf: invalid value for 'version': 'v2' (want v1) at line 9"
    );
}

#[test]
fn required_fields() {
    let e = err("tls:\n  key: k\n  cert: c\nkeystore:\n  memory:\n");
    assert_eq!(e.field(), Some("admin.identity"));
    let e = err(&BASE.replace(
        "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22",
        "\"\"",
    ));
    assert_eq!(
        e.to_string(),
        "kesconf: missing value for 'admin.identity' at line 2"
    );
    let e = err(&BASE.replace("  key: ./server.key\n", ""));
    assert_eq!(e.field(), Some("tls.key"));
    let e = err(&BASE.replace("  cert: ./server.cert\n", ""));
    assert_eq!(e.field(), Some("tls.cert"));
    let e = err("");
    assert_eq!(e.field(), Some("admin.identity"));
    let e = err("# nothing here\n");
    assert_eq!(e.field(), Some("admin.identity"));
}

#[test]
fn tls_auth_values() {
    for (v, want) in [
        ("\"\"", ClientAuth::Off),
        ("off", ClientAuth::Off),
        ("on\n  ca: ./ca.pem", ClientAuth::On),
    ] {
        let c = ok(&BASE.replace("  cert:", &format!("  auth: {v}\n  cert:"))).config;
        assert_eq!(c.tls.auth, want, "{v}");
        assert!(!c.tls.system_roots);
    }
    // `auth: on` verifies against tls.ca; the system's roots only when asked for.
    let e = err(&BASE.replace("  cert:", "  auth: on\n  cert:"));
    assert_eq!(e.field(), Some("tls.auth"));
    assert!(e.to_string().contains("tls.system_roots"), "{e}");
    let c = ok(&BASE.replace("  cert:", "  auth: on\n  system_roots: on\n  cert:")).config;
    assert!(c.tls.system_roots);
    let e = err(&BASE.replace("  cert:", "  auth: maybe\n  cert:"));
    assert_eq!(
        e.to_string(),
        "kesconf: invalid value for 'tls.auth': 'maybe' (want on or off) at line 5"
    );
}

#[test]
fn limits_default_and_validate() {
    let c = ok(BASE).config;
    assert_eq!(c.limits, Limits::default());
    let c = ok(&with(
            "limits:\n  connections: 100\n  connections_per_ip: 10\n  header_timeout: 2s\n  idle_timeout: 1m\n  body_timeout: 3s\n  http2_streams: 16\n  handshake_timeout: 4s\n",
        ))
        .config;
    assert_eq!(
        c.limits,
        Limits {
            connections: 100,
            connections_per_ip: 10,
            handshake_timeout: Duration::from_secs(4),
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(3),
            http2_streams: 16,
        }
    );
    for bad in [
        "connections: 0",
        "connections_per_ip: many",
        "http2_streams: -1",
        "idle_timeout: soon",
    ] {
        let e = err(&with(&format!("limits:\n  {bad}\n")));
        let field = format!("limits.{}", bad.split(':').next().unwrap_or_default());
        assert_eq!(e.field(), Some(field.as_str()), "{bad}");
    }
}

#[test]
fn policy_names_must_be_valid() {
    let e = err(&with("policy:\n  my.app:\n    allow: [/v1/status]\n"));
    assert_eq!(e.field(), Some("policy"));
    assert_eq!(e.line(), Some(10));
    let e = err(&with("policy:\n  a:\n    allow: []\n  a:\n    deny: []\n"));
    assert!(e.to_string().contains("more than once"), "{e}");
    assert_eq!(e.line(), Some(12));
}

#[test]
fn identity_in_two_policies() {
    let e = err(&with(
        "policy:\n  a:\n    identities: [x, y]\n  b:\n    identities:\n    - z\n    - y\n",
    ));
    assert_eq!(
        e.to_string(),
        "kesconf: invalid value for 'policy.b.identities': 'y' \
             (identity is already assigned to policy 'a') at line 15"
    );
    // Listed twice in the same policy is harmless: kept once, with a warning.
    let p = ok(&with("policy:\n  a:\n    identities: [x, x]\n"));
    assert_eq!(p.config.policies["a"].identities, ["x"]);
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn admin_in_policy_or_proxy() {
    let admin = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
    let e = err(&with(&format!(
        "policy:\n  p:\n    identities: [{admin}]\n"
    )));
    assert_eq!(e.field(), Some("policy.p.identities"));
    assert!(e.to_string().contains("admin identity"), "{e}");
    assert_eq!(e.line(), Some(11));
    let e = err(&BASE.replace(
        "  cert:",
        &format!("  proxy:\n    identities: [{admin}]\n  cert:"),
    ));
    assert_eq!(e.field(), Some("tls.proxy.identities"));
    let e = err(
        &(BASE.replace("  cert:", "  proxy:\n    identities: [px]\n  cert:")
            + "policy:\n  p:\n    identities: [px]\n"),
    );
    assert!(e.to_string().contains("TLS proxy"), "{e}");
}

#[test]
fn durations() {
    let c = ok(&with(
        "cache:\n  expiry:\n    any: 1.5s\n    unused: 500ms\n    offline: 0\n",
    ))
    .config;
    assert_eq!(c.cache.any, Duration::from_millis(1500));
    assert_eq!(c.cache.unused, Duration::from_millis(500));
    assert_eq!(c.cache.offline, Duration::ZERO);
    let e = err(&with("cache:\n  expiry:\n    any: -5m\n"));
    assert_eq!(e.field(), Some("cache.expiry.any"));
    assert_eq!(e.line(), Some(11));
    assert!(e.to_string().contains("negative"), "{e}");
    let e = err(&with("cache:\n  expiry:\n    unused: 5\n"));
    assert_eq!(e.field(), Some("cache.expiry.unused"));
    let e = err(&with("api:\n  /v1/status:\n    timeout: soon\n"));
    assert_eq!(e.field(), Some("api./v1/status.timeout"));
    assert_eq!(e.line(), Some(11));
}

#[test]
fn api_overrides() {
    let e = err(&with("api:\n  /v1/status:\n    skip_auth: perhaps\n"));
    assert_eq!(e.field(), Some("api./v1/status.skip_auth"));
    let p = ok(&with("api:\n  v1/status:\n    skip_auth: yes\n"));
    assert!(p.config.api["v1/status"].skip_auth);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    let e = err(&with("api:\n  /v1/status: {}\n  /v1/status: {}\n"));
    assert_eq!(e.field(), Some("api"));
}

#[test]
fn log_levels_from_file() {
    let c = ok(&with("log:\n  error: DEBUG+2\n  audit: on\n")).config;
    assert_eq!(c.log.error, LogLevel::Info);
    assert_eq!(c.log.audit, LogLevel::Info);
    let e = err(&with("log:\n  error: loud\n"));
    assert_eq!(e.field(), Some("log.error"));
    assert_eq!(e.line(), Some(10));
}

#[test]
fn keys_section() {
    let e = err(&with("keys:\n  - name: a\n  - name: my.key\n"));
    assert_eq!(e.field(), Some("keys[1].name"));
    assert_eq!(e.line(), Some(11));
    let e = err(&with("keys:\n  - name: a\n  - name: b\n  - name: a\n"));
    assert_eq!(
        e.to_string(),
        "kesconf: invalid value for 'keys[2].name': 'a' (key is defined more than once) at line 12"
    );
}

#[test]
fn keystore_count() {
    let no_ks = BASE.replace("keystore:\n  fs:\n    path: ./keys\n", "");
    assert!(matches!(err(&no_ks), ConfigError::NoKeystore));
    assert_eq!(err(&no_ks).to_string(), "kesconf: no keystore specified");
    let e = err(&format!("{no_ks}keystore: {{}}\n"));
    assert!(matches!(e, ConfigError::NoKeystore), "{e:?}");
    let e = err(&format!("{no_ks}keystore:\n  nosuch: {{}}\n"));
    assert!(matches!(e, ConfigError::NoKeystore), "{e:?}");

    let e = err(&format!("{BASE}  memory: {{}}\n"));
    assert!(
        e.to_string().contains("more than one keystore specified"),
        "{e}"
    );
    assert!(matches!(&e, ConfigError::MultipleKeystores { names } if names == &["fs", "memory"]));

    let e = err(&format!("{no_ks}keystore:\n  fs:\n"));
    assert_eq!(e.field(), Some("keystore.fs.path"));
    let c = ok(&format!("{no_ks}keystore:\n  memory:\n")).config;
    assert_eq!(c.keystore, KeystoreConfig::Memory);
    let e = err(&format!(
        "{no_ks}keystore:\n  entrust:\n    keycontrol:\n      endpoint: x\n"
    ));
    assert_eq!(e.field(), Some("keystore.entrust.keycontrol.vault_id"));
}

#[test]
fn vault_keystore() {
    let no_ks = BASE.replace("keystore:\n  fs:\n    path: ./keys\n", "");
    let c = ok(&format!(
            "{no_ks}keystore:\n  vault:\n    endpoint: https://127.0.0.1:8200\n    approle:\n      id: rid\n      secret: sid\n"
        ))
        .config;
    let KeystoreConfig::Vault(v) = c.keystore else {
        panic!("not vault")
    };
    assert_eq!(v.endpoint, "https://127.0.0.1:8200");
    assert_eq!(v.engine, "kv");
    assert_eq!(v.version, KvVersion::V1);
    assert_eq!(v.namespace, "");
    assert_eq!(v.status_ping, Duration::from_secs(15));
    assert_eq!(v.transit, None);
    let a = v.approle.unwrap();
    assert_eq!(
        (a.engine.as_str(), a.id.as_str(), a.secret.as_str()),
        ("approle", "rid", "sid")
    );

    let full = format!(
        "{no_ks}keystore:
  vault:
    endpoint: https://vault:8200
    engine: secrets
    version: v2
    namespace: ns1
    prefix: kes
    transit: {{ key: wrap }}
    kubernetes:
      role: kes
      jwt: /var/run/secrets/token
    tls: {{ key: c.key, cert: c.crt, ca: ca.crt }}
    status:
      ping: 3s
"
    );
    let KeystoreConfig::Vault(v) = ok(&full).config.keystore else {
        panic!("not vault")
    };
    assert_eq!(v.version, KvVersion::V2);
    assert_eq!(
        v.transit,
        Some(VaultTransit {
            engine: "transit".into(),
            key: "wrap".into()
        })
    );
    let k = v.kubernetes.unwrap();
    assert_eq!(k.engine, "kubernetes");
    assert!(k.jwt_is_path());
    assert_eq!(v.tls.ca, Some(PathBuf::from("ca.crt")));
    assert_eq!(v.status_ping, Duration::from_secs(3));

    let bad = |from: &str, to: &str| err(&full.replace(from, to));
    assert_eq!(
        bad("    version: v2\n", "    version: v3\n").field(),
        Some("keystore.vault.version")
    );
    assert_eq!(
        bad("{ key: wrap }", "{ engine: t }").field(),
        Some("keystore.vault.transit.key")
    );
    assert_eq!(
        bad("key: c.key, ", "").field(),
        Some("keystore.vault.tls.key")
    );
    assert_eq!(
        bad("      jwt: /var/run/secrets/token\n", "").field(),
        Some("keystore.vault.kubernetes.jwt")
    );
    assert_eq!(
        bad(
            "    kubernetes:\n      role: kes\n      jwt: /var/run/secrets/token\n",
            ""
        )
        .field(),
        Some("keystore.vault.approle")
    );
    assert!(bad(
        "    kubernetes:",
        "    approle: {id: a, secret: b}\n    kubernetes:"
    )
    .to_string()
    .contains("both"));
}

#[test]
fn aws_keystore() {
    let no_ks = BASE.replace("keystore:\n  fs:\n    path: ./keys\n", "");
    let text = format!(
        "{no_ks}keystore:
  aws:
    secretsmanager:
      endpoint: secretsmanager.us-east-1.amazonaws.com
      region: us-east-1
      kmskey: alias/kes
      credentials:
        accesskey: AKIA
        secretkey: ${{AWS_SECRET}}
        token: \"\"
"
    );
    let env = |n: &str| (n == "AWS_SECRET").then(|| "s3cr3t".to_owned());
    let KeystoreConfig::AwsSecretsManager(a) = ok_with(&text, &env).config.keystore else {
        panic!("not aws")
    };
    assert_eq!(a.region, "us-east-1");
    assert_eq!(a.kms_key.as_deref(), Some("alias/kes"));
    assert_eq!(a.access_key.as_deref(), Some("AKIA"));
    assert_eq!(a.secret_key.as_deref(), Some("s3cr3t"));
    assert_eq!(a.session_token, None);
    let e = match crate::parse(&text.replace("      region: us-east-1\n", ""), &env) {
        Err(e) => e,
        Ok(_) => panic!("region is required"),
    };
    assert_eq!(e.field(), Some("keystore.aws.secretsmanager.region"));
    let e = err(&format!("{no_ks}keystore:\n  aws: {{}}\n"));
    assert_eq!(e.field(), Some("keystore.aws.secretsmanager"));
}

#[test]
fn gcp_keystore() {
    let no_ks = BASE.replace("keystore:\n  fs:\n    path: ./keys\n", "");
    let text = format!(
        "{no_ks}keystore:
  gcp:
    secretmanager:
      project_id: my-project
      endpoint: \"\"
      scopes:
        - https://www.googleapis.com/auth/cloud-platform
        - ${{EXTRA_SCOPE}}
      credentials:
        client_email: kes@my-project.iam.gserviceaccount.com
        client_id: \"1234\"
        private_key_id: abcd
        private_key: ${{GCP_KEY}}
"
    );
    let env = |n: &str| match n {
        "GCP_KEY" => Some("-----BEGIN PRIVATE KEY-----".to_owned()),
        "EXTRA_SCOPE" => Some("https://example.test/scope".to_owned()),
        _ => None,
    };
    let KeystoreConfig::GcpSecretManager(g) = ok_with(&text, &env).config.keystore else {
        panic!("not gcp")
    };
    assert_eq!(g.project_id, "my-project");
    assert_eq!(g.endpoint, crate::DEFAULT_GCP_ENDPOINT);
    assert_eq!(g.scopes.len(), 2);
    let c = g.credentials.as_ref().unwrap();
    assert_eq!(c.client_id, "1234");
    assert_eq!(c.token_uri, crate::DEFAULT_GCP_TOKEN_URI);
    assert!(!format!("{g:?}").contains("BEGIN PRIVATE KEY"));
    let e = match crate::parse(&text.replace("      project_id: my-project\n", ""), &env) {
        Err(e) => e,
        Ok(_) => panic!("project_id is required"),
    };
    assert_eq!(e.field(), Some("keystore.gcp.secretmanager.project_id"));
    let e = match crate::parse(&text.replace("        private_key: ${GCP_KEY}\n", ""), &env) {
        Err(e) => e,
        Ok(_) => panic!("a key is required with an email"),
    };
    assert_eq!(
        e.field(),
        Some("keystore.gcp.secretmanager.credentials.private_key")
    );
    // No credentials: default credentials, and the default scope.
    let c = ok(&format!(
            "{no_ks}keystore:\n  gcp:\n    secretmanager:\n      project_id: p\n      credentials:\n        client_email: \"\"\n"
        ))
        .config;
    let KeystoreConfig::GcpSecretManager(g) = c.keystore else {
        panic!("not gcp")
    };
    assert_eq!(g.credentials, None);
    assert_eq!(g.scopes, [crate::DEFAULT_GCP_SCOPE]);
}

#[test]
fn azure_keystore() {
    let no_ks = BASE.replace("keystore:\n  fs:\n    path: ./keys\n", "");
    let text = format!(
        "{no_ks}keystore:
  azure:
    keyvault:
      endpoint: https://kes.vault.azure.net
      credentials:
        tenant_id: t
        client_id: c
        client_secret: ${{AZURE_SECRET}}
"
    );
    let env = |n: &str| (n == "AZURE_SECRET").then(|| "s3cr3t".to_owned());
    let KeystoreConfig::AzureKeyVault(a) = ok_with(&text, &env).config.keystore else {
        panic!("not azure")
    };
    assert_eq!(a.endpoint, "https://kes.vault.azure.net");
    assert!(
        matches!(&a.auth, AzureAuth::ClientSecret { client_secret, .. } if client_secret == "s3cr3t")
    );
    assert!(!format!("{a:?}").contains("s3cr3t"));
    let e = match crate::parse(&text.replace("        tenant_id: t\n", ""), &env) {
        Err(e) => e,
        Ok(_) => panic!("tenant_id is required"),
    };
    assert_eq!(
        e.field(),
        Some("keystore.azure.keyvault.credentials.tenant_id")
    );
    let both = format!("{text}      managed_identity:\n        client_id: m\n");
    let e = match crate::parse(&both, &env) {
        Err(e) => e,
        Ok(_) => panic!("both logins"),
    };
    assert_eq!(e.field(), Some("keystore.azure.keyvault.managed_identity"));
    let c = ok(&format!(
            "{no_ks}keystore:\n  azure:\n    keyvault:\n      endpoint: https://v\n      managed_identity:\n        client_id: m\n"
        ))
        .config;
    let KeystoreConfig::AzureKeyVault(a) = c.keystore else {
        panic!("not azure")
    };
    assert_eq!(
        a.auth,
        AzureAuth::ManagedIdentity {
            client_id: Some("m".into())
        }
    );
    let c = ok(&format!(
        "{no_ks}keystore:\n  azure:\n    keyvault:\n      endpoint: https://v\n"
    ))
    .config;
    let KeystoreConfig::AzureKeyVault(a) = c.keystore else {
        panic!("not azure")
    };
    assert_eq!(a.auth, AzureAuth::Default);
}

#[test]
fn fortanix_keystore() {
    let no_ks = BASE.replace("keystore:\n  fs:\n    path: ./keys\n", "");
    let text = format!(
        "{no_ks}keystore:
  fortanix:
    sdkms:
      endpoint: https://sdkms.fortanix.com
      group_id: g1
      credentials:
        key: ${{FORTANIX_KEY}}
      tls:
        ca: /etc/kes/dsm-ca.pem
"
    );
    let env = |n: &str| (n == "FORTANIX_KEY").then(|| "a2V5OnNlY3JldA==".to_owned());
    let KeystoreConfig::FortanixSdkms(f) = ok_with(&text, &env).config.keystore else {
        panic!("not fortanix")
    };
    assert_eq!(f.group_id.as_deref(), Some("g1"));
    assert_eq!(f.api_key, "a2V5OnNlY3JldA==");
    assert_eq!(f.ca, Some(PathBuf::from("/etc/kes/dsm-ca.pem")));
    assert!(!format!("{f:?}").contains("a2V5"));
    let e = match crate::parse(&text.replace("        key: ${FORTANIX_KEY}\n", ""), &env) {
        Err(e) => e,
        Ok(_) => panic!("the key is required"),
    };
    assert_eq!(e.field(), Some("keystore.fortanix.sdkms.credentials.key"));
}

#[test]
fn keysecure_keystore() {
    let no_ks = BASE.replace("keystore:\n  fs:\n    path: ./keys\n", "");
    let text = format!(
        "{no_ks}keystore:
  gemalto:
    keysecure:
      endpoint: https://ciphertrust.example
      credentials:
        token: ${{KS_TOKEN}}
        domain: kes
        retry: 15s
      tls:
        ca: /etc/kes/ks-ca.pem
"
    );
    let env = |n: &str| (n == "KS_TOKEN").then(|| "refresh-secret".to_owned());
    let p = ok_with(&text, &env);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let KeystoreConfig::KeySecure(k) = p.config.keystore else {
        panic!("not keysecure")
    };
    assert_eq!(k.token, "refresh-secret");
    assert_eq!(k.domain.as_deref(), Some("kes"));
    assert!(!format!("{k:?}").contains("refresh-secret"));
    let e = match crate::parse(&text.replace("        token: ${KS_TOKEN}\n", ""), &env) {
        Err(e) => e,
        Ok(_) => panic!("the token is required"),
    };
    assert_eq!(
        e.field(),
        Some("keystore.gemalto.keysecure.credentials.token")
    );
}

#[test]
fn keycontrol_keystore() {
    let no_ks = BASE.replace("keystore:\n  fs:\n    path: ./keys\n", "");
    let text = format!(
        "{no_ks}keystore:
  entrust:
    keycontrol:
      endpoint: https://keycontrol.example
      vault_id: v1
      box_id: b1
      credentials:
        username: kes
        password: ${{KC_PASSWORD}}
      tls:
        ca: /etc/kes/kc-ca.pem
"
    );
    let env = |n: &str| (n == "KC_PASSWORD").then(|| "pa55word".to_owned());
    let KeystoreConfig::KeyControl(k) = ok_with(&text, &env).config.keystore else {
        panic!("not keycontrol")
    };
    assert_eq!((k.vault_id.as_str(), k.box_id.as_str()), ("v1", "b1"));
    assert_eq!(k.password, "pa55word");
    assert!(!format!("{k:?}").contains("pa55word"));
    let e = match crate::parse(&text.replace("      box_id: b1\n", ""), &env) {
        Err(e) => e,
        Ok(_) => panic!("box_id is required"),
    };
    assert_eq!(e.field(), Some("keystore.entrust.keycontrol.box_id"));
}

#[test]
fn bitwarden_keystore() {
    let no_ks = BASE.replace("keystore:\n  fs:\n    path: ./keys\n", "");
    let text = format!(
        "{no_ks}keystore:
  bitwarden:
    secretsmanager:
      project_id: p1
      access_token: ${{BWS_ACCESS_TOKEN}}
"
    );
    let env = |n: &str| (n == "BWS_ACCESS_TOKEN").then(|| "0.id.secret:a2V5".to_owned());
    let KeystoreConfig::Bitwarden(b) = ok_with(&text, &env).config.keystore else {
        panic!("not bitwarden")
    };
    assert_eq!(b.api_url, crate::DEFAULT_BITWARDEN_API_URL);
    assert_eq!(b.identity_url, crate::DEFAULT_BITWARDEN_IDENTITY_URL);
    assert_eq!(b.organization_id, None);
    assert!(!format!("{b:?}").contains("secret:a2V5"));
    let e = match crate::parse(&text.replace("      project_id: p1\n", ""), &env) {
        Err(e) => e,
        Ok(_) => panic!("project_id is required"),
    };
    assert_eq!(
        e.field(),
        Some("keystore.bitwarden.secretsmanager.project_id")
    );
}

const CLUSTER: &str = "\
cluster:
  node_id: 2
  address: 0.0.0.0:7374
  data_dir: /var/lib/kes
  members:
    1: 10.0.0.1:7374
    2: node2.example:7374
    3: \"[fd00::3]:7374\"
  tls:
    key: node.key
    cert: node.cert
    ca: ca.cert
";

#[test]
fn cluster_section() {
    let p = ok(&with(CLUSTER));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let c = p.config.cluster.unwrap();
    assert_eq!(c.node_id, 2);
    assert_eq!(c.address.to_string(), "0.0.0.0:7374");
    // Without `advertise`, this node's entry in `members`.
    assert_eq!(c.advertise, "node2.example:7374");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/kes"));
    assert_eq!(c.members.len(), 3);
    assert_eq!(c.members[&3], "[fd00::3]:7374");
    assert_eq!(c.tls.ca, PathBuf::from("ca.cert"));

    // No members: advertise falls back to the listen address.
    let solo = CLUSTER.replace(
        "  members:\n    1: 10.0.0.1:7374\n    2: node2.example:7374\n    3: \"[fd00::3]:7374\"\n",
        "",
    );
    let c = ok(&with(&solo)).config.cluster.unwrap();
    assert_eq!(c.advertise, "0.0.0.0:7374");
    assert!(c.members.is_empty());

    let p = ok(&with(
        &CLUSTER.replace("  data_dir", "  advertise: 10.9.9.9:7374\n  data_dir"),
    ));
    assert_eq!(
        p.config.cluster.map(|c| c.advertise).as_deref(),
        Some("10.9.9.9:7374")
    );
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
}

#[test]
fn cluster_rules() {
    let bad = |from: &str, to: &str| err(&with(&CLUSTER.replace(from, to)));
    let e = bad("node_id: 2", "node_id: 0");
    assert_eq!(e.field(), Some("cluster.node_id"));
    assert_eq!(e.line(), Some(10));
    assert_eq!(
        bad("node_id: 2", "node_id: 4").field(),
        Some("cluster.node_id")
    );
    assert_eq!(
        bad("node_id: 2", "node_id: two").field(),
        Some("cluster.node_id")
    );
    assert_eq!(bad("  node_id: 2\n", "").field(), Some("cluster.node_id"));
    assert_eq!(
        bad("0.0.0.0:7374", "nowhere").field(),
        Some("cluster.address")
    );
    assert_eq!(
        bad("10.0.0.1:7374", "10.0.0.1").field(),
        Some("cluster.members.1")
    );
    assert_eq!(
        bad("10.0.0.1:7374", "10.0.0.1:0").field(),
        Some("cluster.members.1")
    );
    assert_eq!(
        bad("    1: 10.0.0.1", "    0: 10.0.0.1").field(),
        Some("cluster.members.0")
    );
    assert_eq!(
        bad("node2.example:7374", "10.0.0.1:7374").field(),
        Some("cluster.members.2")
    );
    assert_eq!(
        bad("  data_dir: /var/lib/kes\n", "").field(),
        Some("cluster.data_dir")
    );
    assert_eq!(bad("    ca: ca.cert\n", "").field(), Some("cluster.tls.ca"));
    assert_eq!(
        bad("  data_dir", "  advertise: not an address\n  data_dir").field(),
        Some("cluster.advertise")
    );
}

#[test]
fn addresses() {
    for (text, want) in [
        ("0.0.0.0:7373", "0.0.0.0:7373"),
        (":7373", "0.0.0.0:7373"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("localhost:7000", "127.0.0.1:7000"),
        ("[::1]:7373", "[::1]:7373"),
    ] {
        assert_eq!(
            listen_addr(text).map(|a| a.to_string()).as_deref(),
            Some(want),
            "{text}"
        );
    }
    for bad in ["7373", "example.com:7373", "0.0.0.0:99999", ""] {
        assert_eq!(listen_addr(bad), None, "{bad}");
    }
    for ok in ["a:1", "10.0.0.1:7374", "kes-0.kes.svc:7374", "[::1]:7374"] {
        assert!(is_host_port(ok), "{ok}");
    }
    for bad in ["", ":7374", "a", "a:0", "a b:1", "[::1:1", "::1:7374"] {
        assert!(!is_host_port(bad), "{bad}");
    }
    let e = err(&format!("address: 0.0.0.0\n{BASE}"));
    assert_eq!(e.field(), Some("address"));
    assert_eq!(e.line(), Some(1));
}

#[test]
fn yaml_errors_carry_position() {
    let e = err("admin:\n  identity: [a, b]\n");
    assert!(
        matches!(e, ConfigError::Yaml { line: Some(2), .. }),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("kesconf: admin.identity"), "{e}");
    let e = err("admin: {identity: x\n");
    assert!(matches!(e, ConfigError::Yaml { .. }), "{e:?}");
    let e = err(&format!("{BASE}tls:\n  key: again\n"));
    assert!(matches!(e, ConfigError::Yaml { .. }), "{e:?}");
}

#[test]
fn scalars_keep_their_text() {
    // YAML 1.1 booleans and numbers arrive as written, so `on`, `off` and hex are strings.
    let c = ok(&BASE.replace(
        "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22",
        "0x10",
    ))
    .config;
    assert_eq!(c.admin_identity, "0x10");
    let c = ok(&with("keys:\n  - name: 1e3\n  - name: true\n")).config;
    assert_eq!(c.keys, ["1e3", "true"]);
}
