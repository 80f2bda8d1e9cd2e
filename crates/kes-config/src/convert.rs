//! Raw file -> validated [`Config`]: `${ENV}` resolution, typed values, defaults and KES's
//! cross-field rules. Field paths in errors are the dotted paths `lines` indexes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kes_types::name::valid_name;

mod cluster;
#[cfg(test)]
use cluster::is_host_port;

use crate::duration::parse_duration;
use crate::lines::{item, join, LineIndex};
use crate::raw::{self, Entries, RawConfig, Scalar};
use crate::{
    ApiOverride, AwsConfig, AzureAuth, AzureConfig, BitwardenConfig, CacheConfig, ClientAuth,
    Config, ConfigError, FortanixConfig, GcpConfig, GcpCredentials, KeyControlConfig,
    KeySecureConfig, KeystoreConfig, KvVersion, Limits, LogConfig, LogLevel, Parsed, PolicyConfig,
    TlsConfig, VaultAppRole, VaultConfig, VaultKubernetes, VaultTls, VaultTransit, DEFAULT_ADDRESS,
    DEFAULT_BITWARDEN_API_URL, DEFAULT_BITWARDEN_IDENTITY_URL, DEFAULT_GCP_ENDPOINT,
    DEFAULT_GCP_SCOPE, DEFAULT_GCP_TOKEN_URI, DEFAULT_VAULT_STATUS_PING,
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

#[cfg(test)]
mod tests;
