//! Raw file -> validated [`Config`]: `${ENV}` resolution, typed values, defaults and KES's
//! cross-field rules. Field paths in errors are the dotted paths `lines` indexes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kes_types::name::valid_name;

use crate::duration::parse_duration;
use crate::lines::{item, join, LineIndex};
use crate::raw::{self, Entries, RawConfig, Scalar};
use crate::{
    ApiOverride, AwsConfig, AzureAuth, AzureConfig, BitwardenConfig, CacheConfig, ClientAuth,
    ClusterConfig, ClusterTls, Config, ConfigError, FortanixConfig, GcpConfig, GcpCredentials,
    KeyControlConfig, KeySecureConfig, KeystoreConfig, KvVersion, Limits, LogConfig, LogLevel,
    Parsed, PolicyConfig, TlsConfig, VaultAppRole, VaultConfig, VaultKubernetes, VaultTls,
    VaultTransit, DEFAULT_ADDRESS, DEFAULT_BITWARDEN_API_URL, DEFAULT_BITWARDEN_IDENTITY_URL,
    DEFAULT_GCP_ENDPOINT, DEFAULT_GCP_SCOPE, DEFAULT_GCP_TOKEN_URI, DEFAULT_VAULT_STATUS_PING,
};

pub(crate) fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    let lines = LineIndex::build(text);
    let mut ignored = Vec::new();
    let raw: RawConfig =
        serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), |p| {
            ignored.push(path_string(&p))
        })
        .or_else(|e| {
            // An empty (or comments-only) file is an empty config, which then fails on its first
            // required field rather than with a decoder message about end of input.
            if text_is_empty(text) {
                Ok(RawConfig::default())
            } else {
                Err(ConfigError::Yaml {
                    line: e.location().map(|l| l.line()),
                    message: e.to_string(),
                })
            }
        })?;
    let mut cx = Cx {
        env,
        lines: &lines,
        warnings: Vec::new(),
    };
    for path in ignored {
        let msg = format!("unknown field '{path}'{}", cx.at(&path));
        cx.warnings.push(msg);
    }
    let config = cx.config(raw)?;
    Ok(Parsed {
        config,
        warnings: cx.warnings,
    })
}

fn text_is_empty(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
}

/// serde_ignored's path in the notation `lines` uses (`keys[0].nme`, not `keys.0.nme`).
fn path_string(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => item(&path_string(parent), *index),
        Path::Map { parent, key } => join(&path_string(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_string(parent),
    }
}

struct Cx<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    lines: &'a LineIndex,
    warnings: Vec<String>,
}

impl Cx<'_> {
    fn line(&self, path: &str) -> Option<usize> {
        self.lines.get(path)
    }

    fn at(&self, path: &str) -> String {
        self.line(path)
            .map(|n| format!(" at line {n}"))
            .unwrap_or_default()
    }

    fn missing(&self, path: &str) -> ConfigError {
        ConfigError::Missing {
            field: path.to_owned(),
            line: self.line(path),
        }
    }

    /// `field` is what the message names; `path` is where the line comes from (the same, or
    /// one item of a list field).
    fn invalid_at(
        &self,
        field: &str,
        path: &str,
        value: &str,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            field: field.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
            line: self.line(path),
        }
    }

    fn invalid(&self, path: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        self.invalid_at(path, path, value, reason)
    }

    /// KES's `env[T]`: a scalar that is, once trimmed, exactly `${NAME}` is replaced by the
    /// variable `NAME` (whitespace inside the braces trimmed); anything else is literal.
    fn resolve(&self, value: &Scalar, path: &str) -> Result<String, ConfigError> {
        let v = value.0.trim();
        match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            Some(name) => {
                let name = name.trim();
                (self.env)(name).ok_or_else(|| ConfigError::EnvNotFound {
                    name: name.to_owned(),
                    line: self.line(path).unwrap_or(0),
                })
            }
            None => Ok(value.0.clone()),
        }
    }

    /// An env-enabled optional string; absent and empty are both `None`, as in KES.
    fn text(&self, value: Option<&Scalar>, path: &str) -> Result<Option<String>, ConfigError> {
        match value {
            None => Ok(None),
            Some(v) => Ok(Some(self.resolve(v, path)?).filter(|s| !s.is_empty())),
        }
    }

    fn required(&self, value: Option<&Scalar>, path: &str) -> Result<String, ConfigError> {
        self.text(value, path)?.ok_or_else(|| self.missing(path))
    }

    fn text_or(
        &self,
        value: Option<&Scalar>,
        path: &str,
        default: &str,
    ) -> Result<String, ConfigError> {
        Ok(self
            .text(value, path)?
            .unwrap_or_else(|| default.to_owned()))
    }

    /// An env-enabled Go duration; unset is zero.
    fn duration(&self, value: Option<&Scalar>, path: &str) -> Result<Duration, ConfigError> {
        match self.text(value, path)? {
            None => Ok(Duration::ZERO),
            Some(s) => parse_duration(s.trim())
                .map_err(|e| self.invalid(path, &s, format!("{e}; want e.g. 30s, 5m or 1h30m"))),
        }
    }

    /// An env-enabled bool. Accepts the YAML 1.1 spellings (`on`, `yes`) that Go's YAML
    /// decoder still accepts for boolean fields.
    fn boolean(&self, value: Option<&Scalar>, path: &str) -> Result<bool, ConfigError> {
        let Some(s) = self.text(value, path)? else {
            return Ok(false);
        };
        match s.trim() {
            "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "y" | "Y" | "on" | "On" | "ON" => {
                Ok(true)
            }
            "false" | "False" | "FALSE" | "no" | "No" | "NO" | "n" | "N" | "off" | "Off"
            | "OFF" => Ok(false),
            _ => Err(self.invalid(path, &s, "want true or false")),
        }
    }

    fn config(&mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        // KES checks the version before anything else: a file for another schema version
        // should say so rather than fail on some field.
        if let Some(v) = &raw.version {
            if !v.0.is_empty() && v.0 != "v1" {
                return Err(self.invalid("version", &v.0, "want v1"));
            }
        }

        let address_text = self
            .text(raw.address.as_ref(), "address")?
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        let address = listen_addr(&address_text)
            .ok_or_else(|| self.invalid("address", &address_text, "want ip:port or :port"))?;

        let admin = raw.admin.unwrap_or_default();
        let admin_identity = self.required(admin.identity.as_ref(), "admin.identity")?;

        let tls = self.tls(raw.tls.unwrap_or_default(), &admin_identity)?;
        let policies = self.policies(raw.policy.unwrap_or_default(), &admin_identity, &tls)?;
        let cache = self.cache(raw.cache.unwrap_or_default())?;
        let api = self.api(raw.api.unwrap_or_default())?;

        let rlog = raw.log.unwrap_or_default();
        let log = LogConfig {
            error: self.level(rlog.error.as_ref(), "log.error")?,
            audit: self.level(rlog.audit.as_ref(), "log.audit")?,
        };

        let keys = self.keys(raw.keys.unwrap_or_default())?;
        let keystore = match raw.keystore {
            Some(ks) => self.keystore(ks)?,
            None => return Err(ConfigError::NoKeystore),
        };
        let cluster = match raw.cluster {
            Some(c) => Some(self.cluster(c)?),
            None => None,
        };
        let limits = self.limits(raw.limits.unwrap_or_default())?;

        Ok(Config {
            address,
            admin_identity,
            tls,
            policies,
            cache,
            api,
            log,
            keys,
            keystore,
            cluster,
            limits,
        })
    }

    fn limits(&self, raw: raw::RawLimits) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let dur =
            |v: Option<&Scalar>, path: &str, default: Duration| -> Result<Duration, ConfigError> {
                let got = self.duration(v, path)?;
                Ok(if got.is_zero() { default } else { got })
            };
        let count = |v: Option<&Scalar>, path: &str, default: u64| -> Result<u64, ConfigError> {
            match self.text(v, path)? {
                None => Ok(default),
                Some(s) => match s.trim().parse::<u64>() {
                    Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                    _ => Err(self.invalid(path, &s, "want a whole number from 1 to 1000000")),
                },
            }
        };
        Ok(Limits {
            connections: count(
                raw.connections.as_ref(),
                "limits.connections",
                d.connections as u64,
            )? as usize,
            connections_per_ip: count(
                raw.connections_per_ip.as_ref(),
                "limits.connections_per_ip",
                d.connections_per_ip as u64,
            )? as usize,
            handshake_timeout: dur(
                raw.handshake_timeout.as_ref(),
                "limits.handshake_timeout",
                d.handshake_timeout,
            )?,
            header_timeout: dur(
                raw.header_timeout.as_ref(),
                "limits.header_timeout",
                d.header_timeout,
            )?,
            idle_timeout: dur(
                raw.idle_timeout.as_ref(),
                "limits.idle_timeout",
                d.idle_timeout,
            )?,
            body_timeout: dur(
                raw.body_timeout.as_ref(),
                "limits.body_timeout",
                d.body_timeout,
            )?,
            http2_streams: count(
                raw.http2_streams.as_ref(),
                "limits.http2_streams",
                u64::from(d.http2_streams),
            )? as u32,
        })
    }

    fn tls(&mut self, raw: raw::RawTls, admin: &str) -> Result<TlsConfig, ConfigError> {
        let key = self.required(raw.key.as_ref(), "tls.key")?;
        let cert = self.required(raw.cert.as_ref(), "tls.cert")?;
        let password = self.text(raw.password.as_ref(), "tls.password")?;
        let auth = match self.text(raw.auth.as_ref(), "tls.auth")? {
            None => ClientAuth::Off,
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "off" => ClientAuth::Off,
                "on" => ClientAuth::On,
                _ => return Err(self.invalid("tls.auth", &s, "want on or off")),
            },
        };
        let ca = self.text(raw.ca.as_ref(), "tls.ca")?.map(PathBuf::from);
        let system_roots = self.boolean(raw.system_roots.as_ref(), "tls.system_roots")?;
        if auth == ClientAuth::On && ca.is_none() && !system_roots {
            return Err(self.invalid(
                "tls.auth",
                "on",
                "client certificates cannot be verified without tls.ca (set it to your client CA, or tls.system_roots: on to trust the public CAs)",
            ));
        }

        let proxy = raw.proxy.unwrap_or_default();
        const PROXIES: &str = "tls.proxy.identities";
        let mut proxy_identities: Vec<String> = Vec::new();
        for (i, v) in proxy.identities.iter().flatten().enumerate() {
            let p = item(PROXIES, i);
            let Some(id) = self.text(Some(v), &p)? else {
                continue;
            };
            if id == admin {
                return Err(self.invalid_at(PROXIES, &p, &id, "identity is the admin identity"));
            }
            if !proxy_identities.contains(&id) {
                proxy_identities.push(id);
            }
        }
        let header = proxy.header.unwrap_or_default();
        let proxy_cert_header = self.text(header.cert.as_ref(), "tls.proxy.header.cert")?;

        Ok(TlsConfig {
            key: key.into(),
            cert: cert.into(),
            password,
            auth,
            ca,
            system_roots,
            proxy_identities,
            proxy_cert_header,
        })
    }

    fn policies(
        &mut self,
        raw: Entries<raw::RawPolicy>,
        admin: &str,
        tls: &TlsConfig,
    ) -> Result<BTreeMap<String, PolicyConfig>, ConfigError> {
        let mut out: BTreeMap<String, PolicyConfig> = BTreeMap::new();
        // identity -> policy, to enforce KES's one-policy-per-identity rule.
        let mut owner: HashMap<String, String> = HashMap::new();
        for (name, rp) in raw.0 {
            let base = join("policy", &name);
            if !valid_name(&name) {
                return Err(self.invalid_at(
                    "policy",
                    &base,
                    &name,
                    "policy name is empty, too long or contains invalid characters",
                ));
            }
            if out.contains_key(&name) {
                return Err(self.invalid_at(
                    "policy",
                    &base,
                    &name,
                    "policy is defined more than once",
                ));
            }
            // Patterns are matched literally (see kes-policy), so no env substitution here.
            let patterns =
                |v: Option<Vec<Scalar>>| v.into_iter().flatten().map(|s| s.0).collect::<Vec<_>>();
            let field = join(&base, "identities");
            let mut identities: Vec<String> = Vec::new();
            for (i, v) in rp.identities.iter().flatten().enumerate() {
                let p = item(&field, i);
                let Some(id) = self.text(Some(v), &p)? else {
                    continue;
                };
                if id == admin {
                    return Err(self.invalid_at(&field, &p, &id, "identity is the admin identity"));
                }
                if tls.proxy_identities.contains(&id) {
                    return Err(self.invalid_at(&field, &p, &id, "identity is a TLS proxy"));
                }
                if let Some(other) = owner.get(&id) {
                    if *other != name {
                        return Err(self.invalid_at(
                            &field,
                            &p,
                            &id,
                            format!("identity is already assigned to policy '{other}'"),
                        ));
                    }
                    let msg = format!(
                        "identity '{id}' is listed twice in '{field}'{}",
                        self.at(&p)
                    );
                    self.warnings.push(msg);
                    continue;
                }
                owner.insert(id.clone(), name.clone());
                identities.push(id);
            }
            out.insert(
                name,
                PolicyConfig {
                    allow: patterns(rp.allow),
                    deny: patterns(rp.deny),
                    identities,
                },
            );
        }
        Ok(out)
    }

    fn cache(&self, raw: raw::RawCache) -> Result<CacheConfig, ConfigError> {
        let e = raw.expiry.unwrap_or_default();
        Ok(CacheConfig {
            any: self.duration(e.any.as_ref(), "cache.expiry.any")?,
            unused: self.duration(e.unused.as_ref(), "cache.expiry.unused")?,
            offline: self.duration(e.offline.as_ref(), "cache.expiry.offline")?,
        })
    }

    fn api(
        &mut self,
        raw: Entries<raw::RawApi>,
    ) -> Result<BTreeMap<String, ApiOverride>, ConfigError> {
        let mut out = BTreeMap::new();
        for (route, ra) in raw.0 {
            let base = join("api", &route);
            if out.contains_key(&route) {
                return Err(self.invalid_at(
                    "api",
                    &base,
                    &route,
                    "route is configured more than once",
                ));
            }
            if !route.starts_with('/') {
                // KES matches these keys against route paths, so this one can never apply.
                let msg = format!(
                    "api route '{route}' does not start with '/' and matches no route{}",
                    self.at(&base)
                );
                self.warnings.push(msg);
            }
            let skip_auth = self.boolean(ra.skip_auth.as_ref(), &join(&base, "skip_auth"))?;
            let timeout = self.duration(ra.timeout.as_ref(), &join(&base, "timeout"))?;
            out.insert(
                route,
                ApiOverride {
                    skip_auth,
                    timeout: Some(timeout).filter(|t| !t.is_zero()),
                },
            );
        }
        Ok(out)
    }

    fn level(&self, value: Option<&Scalar>, path: &str) -> Result<LogLevel, ConfigError> {
        let s = self.text(value, path)?.unwrap_or_default();
        LogLevel::parse(&s).map_err(|reason| self.invalid(path, &s, reason))
    }

    fn keys(&self, raw: Vec<Option<raw::RawKey>>) -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = Vec::new();
        for (i, rk) in raw.into_iter().enumerate() {
            let path = join(&item("keys", i), "name");
            let rk = rk.unwrap_or_default();
            let name = self.required(rk.name.as_ref(), &path)?;
            if !valid_name(&name) {
                return Err(self.invalid(
                    &path,
                    &name,
                    "key name is empty, too long or contains invalid characters",
                ));
            }
            if out.contains(&name) {
                return Err(self.invalid(&path, &name, "key is defined more than once"));
            }
            out.push(name);
        }
        Ok(out)
    }

    fn keystore(&mut self, raw: raw::RawKeystore) -> Result<KeystoreConfig, ConfigError> {
        if raw.kes.is_some() {
            let msg = format!(
                "keystore 'keystore.kes' is ignored, as in KES{}",
                self.at("keystore.kes")
            );
            self.warnings.push(msg);
        }
        let named = [
            ("fs", raw.fs.is_some()),
            ("memory", raw.memory.is_some()),
            ("vault", raw.vault.is_some()),
            ("aws", raw.aws.is_some()),
            ("fortanix", raw.fortanix.is_some()),
            ("gemalto", raw.gemalto.is_some()),
            ("gcp", raw.gcp.is_some()),
            ("azure", raw.azure.is_some()),
            ("entrust", raw.entrust.is_some()),
            ("bitwarden", raw.bitwarden.is_some()),
        ];
        let names: Vec<String> = named
            .iter()
            .filter(|(_, present)| *present)
            .map(|(n, _)| (*n).to_owned())
            .collect();
        if names.len() > 1 {
            return Err(ConfigError::MultipleKeystores { names });
        }
        if let Some(fs) = raw.fs {
            let path = self.required(fs.path.as_ref(), "keystore.fs.path")?;
            return Ok(KeystoreConfig::Fs { path: path.into() });
        }
        if raw.memory.is_some() {
            return Ok(KeystoreConfig::Memory);
        }
        if let Some(v) = raw.vault {
            return Ok(KeystoreConfig::Vault(self.vault(v)?));
        }
        if let Some(a) = raw.aws {
            return Ok(KeystoreConfig::AwsSecretsManager(self.aws(a)?));
        }
        if let Some(g) = raw.gcp {
            return Ok(KeystoreConfig::GcpSecretManager(self.gcp(g)?));
        }
        if let Some(a) = raw.azure {
            return Ok(KeystoreConfig::AzureKeyVault(self.azure(a)?));
        }
        if let Some(f) = raw.fortanix {
            return Ok(KeystoreConfig::FortanixSdkms(self.fortanix(f)?));
        }
        if let Some(g) = raw.gemalto {
            return Ok(KeystoreConfig::KeySecure(self.keysecure(g)?));
        }
        if let Some(e) = raw.entrust {
            return Ok(KeystoreConfig::KeyControl(self.keycontrol(e)?));
        }
        if let Some(b) = raw.bitwarden {
            return Ok(KeystoreConfig::Bitwarden(self.bitwarden(b)?));
        }
        Err(ConfigError::NoKeystore)
    }

    fn vault(&self, raw: raw::RawVault) -> Result<VaultConfig, ConfigError> {
        const V: &str = "keystore.vault";
        let p = |f: &str| join(V, f);
        let endpoint = self.required(raw.endpoint.as_ref(), &p("endpoint"))?;
        let engine = self.text_or(raw.engine.as_ref(), &p("engine"), "kv")?;
        let version = match self.text(raw.version.as_ref(), &p("version"))? {
            None => KvVersion::V1,
            Some(s) => match s.as_str() {
                "v1" => KvVersion::V1,
                "v2" => KvVersion::V2,
                _ => return Err(self.invalid(&p("version"), &s, "want v1 or v2")),
            },
        };
        let namespace = self.text_or(raw.namespace.as_ref(), &p("namespace"), "")?;
        let prefix = self.text_or(raw.prefix.as_ref(), &p("prefix"), "")?;

        let transit = match raw.transit {
            None => None,
            Some(t) => Some(VaultTransit {
                engine: self.text_or(t.engine.as_ref(), &p("transit.engine"), "transit")?,
                key: self.required(t.key.as_ref(), &p("transit.key"))?,
            }),
        };
        let approle = match raw.approle {
            None => None,
            Some(a) => Some(VaultAppRole {
                namespace: self.text_or(a.namespace.as_ref(), &p("approle.namespace"), "")?,
                engine: self.text_or(a.engine.as_ref(), &p("approle.engine"), "approle")?,
                id: self.required(a.id.as_ref(), &p("approle.id"))?,
                secret: self.required(a.secret.as_ref(), &p("approle.secret"))?,
            }),
        };
        let kubernetes = match raw.kubernetes {
            None => None,
            Some(k) => Some(VaultKubernetes {
                namespace: self.text_or(k.namespace.as_ref(), &p("kubernetes.namespace"), "")?,
                engine: self.text_or(k.engine.as_ref(), &p("kubernetes.engine"), "kubernetes")?,
                role: self.text_or(k.role.as_ref(), &p("kubernetes.role"), "")?,
                jwt: self.required(k.jwt.as_ref(), &p("kubernetes.jwt"))?,
            }),
        };
        // KES requires exactly one way to log in; a token-less Vault client is never useful.
        match (&approle, &kubernetes) {
            (None, None) => return Err(self.missing(&p("approle"))),
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    &p("kubernetes"),
                    "kubernetes",
                    "approle and kubernetes are both specified; want exactly one",
                ))
            }
            _ => {}
        }

        let rt = raw.tls.unwrap_or_default();
        let tls = VaultTls {
            key: self
                .text(rt.key.as_ref(), &p("tls.key"))?
                .map(PathBuf::from),
            cert: self
                .text(rt.cert.as_ref(), &p("tls.cert"))?
                .map(PathBuf::from),
            ca: self.text(rt.ca.as_ref(), &p("tls.ca"))?.map(PathBuf::from),
        };
        match (&tls.key, &tls.cert) {
            (Some(_), None) => return Err(self.missing(&p("tls.cert"))),
            (None, Some(_)) => return Err(self.missing(&p("tls.key"))),
            _ => {}
        }
        let status = raw.status.unwrap_or_default();
        let ping = self.duration(status.ping.as_ref(), &p("status.ping"))?;

        Ok(VaultConfig {
            endpoint,
            engine,
            version,
            namespace,
            prefix,
            transit,
            approle,
            kubernetes,
            tls,
            status_ping: if ping.is_zero() {
                DEFAULT_VAULT_STATUS_PING
            } else {
                ping
            },
        })
    }

    fn aws(&self, raw: raw::RawAws) -> Result<AwsConfig, ConfigError> {
        const A: &str = "keystore.aws.secretsmanager";
        let p = |f: &str| join(A, f);
        let Some(sm) = raw.secretsmanager else {
            return Err(self.missing(A));
        };
        let creds = sm.credentials.unwrap_or_default();
        Ok(AwsConfig {
            endpoint: self.required(sm.endpoint.as_ref(), &p("endpoint"))?,
            region: self.required(sm.region.as_ref(), &p("region"))?,
            kms_key: self.text(sm.kmskey.as_ref(), &p("kmskey"))?,
            access_key: self.text(creds.accesskey.as_ref(), &p("credentials.accesskey"))?,
            secret_key: self.text(creds.secretkey.as_ref(), &p("credentials.secretkey"))?,
            session_token: self.text(creds.token.as_ref(), &p("credentials.token"))?,
        })
    }

    fn gcp(&self, raw: raw::RawGcp) -> Result<GcpConfig, ConfigError> {
        const G: &str = "keystore.gcp.secretmanager";
        let p = |f: &str| join(G, f);
        let Some(sm) = raw.secretmanager else {
            return Err(self.missing(G));
        };
        let mut scopes = Vec::new();
        for (i, s) in sm.scopes.unwrap_or_default().iter().enumerate() {
            if let Some(s) = self.text(Some(s), &item(&p("scopes"), i))? {
                scopes.push(s.trim().to_owned());
            }
        }
        if scopes.is_empty() {
            scopes.push(DEFAULT_GCP_SCOPE.to_owned());
        }
        let credentials = match sm.credentials {
            None => None,
            Some(c) => {
                let email = self.text(c.client_email.as_ref(), &p("credentials.client_email"))?;
                let key = self.text(c.private_key.as_ref(), &p("credentials.private_key"))?;
                let id = self.text(c.client_id.as_ref(), &p("credentials.client_id"))?;
                let key_id =
                    self.text(c.private_key_id.as_ref(), &p("credentials.private_key_id"))?;
                match (email, key) {
                    // KES: an empty credentials block means the default credentials.
                    (None, None) if id.is_none() && key_id.is_none() => None,
                    (Some(client_email), Some(private_key)) => Some(GcpCredentials {
                        client_email,
                        client_id: id.unwrap_or_default(),
                        private_key_id: key_id.unwrap_or_default(),
                        private_key,
                        token_uri: self.text_or(
                            c.token_uri.as_ref(),
                            &p("credentials.token_uri"),
                            DEFAULT_GCP_TOKEN_URI,
                        )?,
                    }),
                    (None, _) => return Err(self.missing(&p("credentials.client_email"))),
                    (_, None) => return Err(self.missing(&p("credentials.private_key"))),
                }
            }
        };
        Ok(GcpConfig {
            project_id: self.required(sm.project_id.as_ref(), &p("project_id"))?,
            endpoint: self.text_or(sm.endpoint.as_ref(), &p("endpoint"), DEFAULT_GCP_ENDPOINT)?,
            scopes,
            credentials,
        })
    }

    fn azure(&self, raw: raw::RawAzure) -> Result<AzureConfig, ConfigError> {
        const A: &str = "keystore.azure.keyvault";
        let p = |f: &str| join(A, f);
        let Some(kv) = raw.keyvault else {
            return Err(self.missing(A));
        };
        let endpoint = self.required(kv.endpoint.as_ref(), &p("endpoint"))?;
        let auth = match (kv.credentials, kv.managed_identity) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    &p("managed_identity"),
                    "managed_identity",
                    "credentials and managed_identity are both specified; want at most one",
                ))
            }
            (Some(c), None) => AzureAuth::ClientSecret {
                tenant_id: self.required(c.tenant_id.as_ref(), &p("credentials.tenant_id"))?,
                client_id: self.required(c.client_id.as_ref(), &p("credentials.client_id"))?,
                client_secret: self
                    .required(c.client_secret.as_ref(), &p("credentials.client_secret"))?,
            },
            (None, Some(m)) => AzureAuth::ManagedIdentity {
                client_id: self.text(m.client_id.as_ref(), &p("managed_identity.client_id"))?,
            },
            (None, None) => AzureAuth::Default,
        };
        Ok(AzureConfig { endpoint, auth })
    }

    fn fortanix(&self, raw: raw::RawFortanix) -> Result<FortanixConfig, ConfigError> {
        const F: &str = "keystore.fortanix.sdkms";
        let p = |f: &str| join(F, f);
        let Some(sdkms) = raw.sdkms else {
            return Err(self.missing(F));
        };
        let creds = sdkms.credentials.unwrap_or_default();
        Ok(FortanixConfig {
            endpoint: self.required(sdkms.endpoint.as_ref(), &p("endpoint"))?,
            group_id: self.text(sdkms.group_id.as_ref(), &p("group_id"))?,
            api_key: self.required(creds.key.as_ref(), &p("credentials.key"))?,
            ca: self
                .text(sdkms.tls.unwrap_or_default().ca.as_ref(), &p("tls.ca"))?
                .map(PathBuf::from),
        })
    }

    fn keysecure(&self, raw: raw::RawGemalto) -> Result<KeySecureConfig, ConfigError> {
        const K: &str = "keystore.gemalto.keysecure";
        let p = |f: &str| join(K, f);
        let Some(ks) = raw.keysecure else {
            return Err(self.missing(K));
        };
        let creds = ks.credentials.unwrap_or_default();
        Ok(KeySecureConfig {
            endpoint: self.required(ks.endpoint.as_ref(), &p("endpoint"))?,
            token: self.required(creds.token.as_ref(), &p("credentials.token"))?,
            domain: self.text(creds.domain.as_ref(), &p("credentials.domain"))?,
            ca: self
                .text(ks.tls.unwrap_or_default().ca.as_ref(), &p("tls.ca"))?
                .map(PathBuf::from),
        })
    }

    fn keycontrol(&self, raw: raw::RawEntrust) -> Result<KeyControlConfig, ConfigError> {
        const K: &str = "keystore.entrust.keycontrol";
        let p = |f: &str| join(K, f);
        let Some(kc) = raw.keycontrol else {
            return Err(self.missing(K));
        };
        let creds = kc.credentials.unwrap_or_default();
        Ok(KeyControlConfig {
            endpoint: self.required(kc.endpoint.as_ref(), &p("endpoint"))?,
            vault_id: self.required(kc.vault_id.as_ref(), &p("vault_id"))?,
            box_id: self.required(kc.box_id.as_ref(), &p("box_id"))?,
            username: self.required(creds.username.as_ref(), &p("credentials.username"))?,
            password: self.required(creds.password.as_ref(), &p("credentials.password"))?,
            ca: self
                .text(kc.tls.unwrap_or_default().ca.as_ref(), &p("tls.ca"))?
                .map(PathBuf::from),
        })
    }

    fn bitwarden(&self, raw: raw::RawBitwarden) -> Result<BitwardenConfig, ConfigError> {
        const B: &str = "keystore.bitwarden.secretsmanager";
        let p = |f: &str| join(B, f);
        let Some(sm) = raw.secretsmanager else {
            return Err(self.missing(B));
        };
        Ok(BitwardenConfig {
            api_url: self.text_or(
                sm.api_url.as_ref(),
                &p("api_url"),
                DEFAULT_BITWARDEN_API_URL,
            )?,
            identity_url: self.text_or(
                sm.identity_url.as_ref(),
                &p("identity_url"),
                DEFAULT_BITWARDEN_IDENTITY_URL,
            )?,
            organization_id: self.text(sm.organization_id.as_ref(), &p("organization_id"))?,
            project_id: self.required(sm.project_id.as_ref(), &p("project_id"))?,
            access_token: self.required(sm.access_token.as_ref(), &p("access_token"))?,
        })
    }

    fn cluster(&mut self, raw: raw::RawCluster) -> Result<ClusterConfig, ConfigError> {
        let node_id = self.node_id(raw.node_id.as_ref(), "cluster.node_id")?;

        let addr_text = self.required(raw.address.as_ref(), "cluster.address")?;
        let address = listen_addr(&addr_text)
            .ok_or_else(|| self.invalid("cluster.address", &addr_text, "want ip:port or :port"))?;

        let mut members = BTreeMap::new();
        for (id_text, addr) in raw.members.unwrap_or_default().0 {
            let path = join("cluster.members", &id_text);
            let id = self.node_id(Some(&Scalar(id_text.clone())), &path)?;
            let addr = self.required(Some(&addr), &path)?;
            if !is_host_port(&addr) {
                return Err(self.invalid(&path, &addr, "want host:port"));
            }
            if members.contains_key(&id) {
                return Err(self.invalid(&path, &id_text, "node id is listed more than once"));
            }
            if let Some((other, _)) = members.iter().find(|(_, a)| **a == addr) {
                return Err(self.invalid(
                    &path,
                    &addr,
                    format!("address is already used by node {other}"),
                ));
            }
            members.insert(id, addr);
        }
        if !members.is_empty() && !members.contains_key(&node_id) {
            return Err(self.invalid(
                "cluster.node_id",
                &node_id.to_string(),
                "node is not in cluster.members",
            ));
        }

        let advertise = match self.text(raw.advertise.as_ref(), "cluster.advertise")? {
            Some(a) => {
                if !is_host_port(&a) {
                    return Err(self.invalid("cluster.advertise", &a, "want host:port"));
                }
                if let Some(m) = members.get(&node_id).filter(|m| **m != a) {
                    let msg = format!(
                        "cluster.advertise '{a}' differs from this node's cluster.members entry '{m}'{}",
                        self.at("cluster.advertise")
                    );
                    self.warnings.push(msg);
                }
                a
            }
            // Peers reach this node at the address the other nodes were given for it; the
            // listen address (often 0.0.0.0) is only the last resort.
            None => members.get(&node_id).cloned().unwrap_or(addr_text),
        };

        let data_dir = self.required(raw.data_dir.as_ref(), "cluster.data_dir")?;
        let rt = raw.tls.unwrap_or_default();
        let tls = ClusterTls {
            key: self.required(rt.key.as_ref(), "cluster.tls.key")?.into(),
            cert: self.required(rt.cert.as_ref(), "cluster.tls.cert")?.into(),
            ca: self.required(rt.ca.as_ref(), "cluster.tls.ca")?.into(),
        };
        Ok(ClusterConfig {
            node_id,
            address,
            advertise,
            data_dir: data_dir.into(),
            members,
            tls,
        })
    }

    fn node_id(&self, value: Option<&Scalar>, path: &str) -> Result<u64, ConfigError> {
        let s = self.required(value, path)?;
        match s.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(self.invalid(path, &s, "want a node id >= 1")),
        }
    }
}

/// A listen address as Go's `net.Listen` takes it, limited to what needs no DNS: `ip:port`,
/// `[v6]:port`, `:port` (all interfaces) and `localhost:port`.
fn listen_addr(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `host:port` or `[v6]:port` with a non-zero port: an address a peer can dial.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        }
    };
    port_ok && host_ok
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
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
        assert!(
            matches!(&e, ConfigError::MultipleKeystores { names } if names == &["fs", "memory"])
        );

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
        let solo = CLUSTER
            .replace("  members:\n    1: 10.0.0.1:7374\n    2: node2.example:7374\n    3: \"[fd00::3]:7374\"\n", "");
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
}
