//! The server's configuration: a MinIO KES YAML file, read as KES reads it, plus the
//! `cluster:` section this server adds. Parsing happens in two steps. The text is first
//! decoded into raw serde structs that keep every scalar as written; then validation resolves
//! `${ENV}` references, parses durations, addresses and log levels, applies KES's defaults and
//! checks KES's cross-field rules (admin vs. policy identities, one policy per identity, one
//! keystore), producing the typed [`Config`] the other crates consume. Unknown keys are not
//! fatal, as in KES, but come back as warnings so a typo does not go unnoticed. Every error
//! names the field by its dotted path and, where the file shows it, the line.
//!
//! The crate does no I/O apart from [`load`] reading the file; [`parse`] takes the
//! environment as a function so tests and reloads control it.

mod convert;
mod duration;
mod error;
mod lines;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{parse_duration, DurationError};
pub use error::ConfigError;

/// Listen address when the file sets none, as in KES.
pub const DEFAULT_ADDRESS: &str = "0.0.0.0:7373";
/// Effective `cache.expiry.any` when the file leaves it 0 or unset.
pub const DEFAULT_CACHE_ANY: Duration = Duration::from_secs(5 * 60);
/// Effective `cache.expiry.unused` when the file leaves it 0 or unset.
pub const DEFAULT_CACHE_UNUSED: Duration = Duration::from_secs(30);
/// Vault health-check interval when `keystore.vault.status.ping` is 0 or unset.
pub const DEFAULT_VAULT_STATUS_PING: Duration = Duration::from_secs(15);

/// A successfully parsed file and what was ignored in it.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub config: Config,
    /// One line per ignored or inert setting, e.g. `unknown field 'tls.foo' at line 5`.
    pub warnings: Vec<String>,
}

/// A validated server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// KES API listener; `:7373` in the file means all interfaces.
    pub address: SocketAddr,
    /// Has every permission and bypasses policies. Any non-empty string; one that matches no
    /// certificate (e.g. `disabled`) turns the admin off.
    pub admin_identity: String,
    pub tls: TlsConfig,
    /// Policy name -> policy. Each identity appears in at most one policy.
    pub policies: BTreeMap<String, PolicyConfig>,
    pub cache: CacheConfig,
    /// Per-route overrides, keyed by the exact route path (`/v1/status`, `/v1/key/create/`).
    pub api: BTreeMap<String, ApiOverride>,
    pub log: LogConfig,
    /// Keys to create at startup when missing, in file order.
    pub keys: Vec<String>,
    pub keystore: KeystoreConfig,
    /// `None`: a single node keeping its state in memory.
    pub cluster: Option<ClusterConfig>,
    /// Connection and request bounds (`limits:`, not in KES).
    pub limits: Limits,
}

/// `limits:`: what one client can hold of the server (connections, time, streams). Not in
/// KES's file format; every field is optional and defaults to the value in
/// [`Limits::default`], which follows KES's server timeouts where KES has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, in all (`limits.connections`).
    pub connections: usize,
    /// Connections open at once from one address (`limits.connections_per_ip`).
    pub connections_per_ip: usize,
    /// TLS handshake (`limits.handshake_timeout`).
    pub handshake_timeout: Duration,
    /// From the handshake to a request's complete headers, and for the headers of each later
    /// request (`limits.header_timeout`; KES's ReadHeaderTimeout).
    pub header_timeout: Duration,
    /// Idle time between requests on one connection (`limits.idle_timeout`; KES's
    /// IdleTimeout).
    pub idle_timeout: Duration,
    /// Reading a request's whole body (`limits.body_timeout`).
    pub body_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection (`limits.http2_streams`; Go's default).
    pub http2_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 8192,
            connections_per_ip: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            body_timeout: Duration::from_secs(10),
            http2_streams: 250,
        }
    }
}

impl Config {
    /// The policy an identity is assigned to, if any.
    pub fn policy_of(&self, identity: &str) -> Option<(&str, &PolicyConfig)> {
        self.policies
            .iter()
            .find(|(_, p)| p.identities.iter().any(|i| i == identity))
            .map(|(name, p)| (name.as_str(), p))
    }
}

/// The KES API's TLS settings.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Server private key (PEM).
    pub key: PathBuf,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Decrypts a legacy encrypted PEM private key.
    pub password: Option<String>,
    pub auth: ClientAuth,
    /// Extra CA certificates (a file or a directory) for verifying client certificates.
    pub ca: Option<PathBuf>,
    /// With `auth: on`, also trust the system's root CAs (`tls.system_roots`, not in KES; off).
    pub system_roots: bool,
    /// Identities of TLS-terminating proxies that forward the client certificate in a header.
    pub proxy_identities: Vec<String>,
    /// The header those proxies put the client certificate in.
    pub proxy_cert_header: Option<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("key", &self.key)
            .field("cert", &self.cert)
            .field("password", &redacted(&self.password))
            .field("auth", &self.auth)
            .field("ca", &self.ca)
            .field("system_roots", &self.system_roots)
            .field("proxy_identities", &self.proxy_identities)
            .field("proxy_cert_header", &self.proxy_cert_header)
            .finish()
    }
}

/// `tls.auth`: whether client certificates must chain to a trusted CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `""` or `off`: any client certificate is accepted; its public key is the identity.
    #[default]
    Off,
    /// `on`: client certificates must verify against the system roots or `tls.ca`.
    On,
}

/// One policy: route patterns (see kes-policy for matching) and the identities it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub identities: Vec<String>,
}

/// `cache.expiry` as written; zero means unset. Use [`CacheConfig::effective`] for the values
/// the cache should run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheConfig {
    pub any: Duration,
    pub unused: Duration,
    /// Zero disables offline caching.
    pub offline: Duration,
}

impl CacheConfig {
    /// Applies KES's defaults: `any` 0 becomes 5m, `unused` 0 becomes 30s, `offline` stays.
    /// KES HEAD sets `any = 30s` when `unused` is unset (a bug that leaves unused-eviction off
    /// and shortens `any`); this follows KES's documented intent instead.
    pub fn effective(&self) -> CacheConfig {
        CacheConfig {
            any: nonzero_or(self.any, DEFAULT_CACHE_ANY),
            unused: nonzero_or(self.unused, DEFAULT_CACHE_UNUSED),
            offline: self.offline,
        }
    }
}

fn nonzero_or(d: Duration, default: Duration) -> Duration {
    if d.is_zero() {
        default
    } else {
        d
    }
}

/// An `api:` entry for one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApiOverride {
    /// Serve the route without authentication or policy checks.
    pub skip_auth: bool,
    /// Replaces the route's default timeout; `None` keeps it (a configured 0 also keeps it).
    pub timeout: Option<Duration>,
}

/// `log.error` and `log.audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogConfig {
    pub error: LogLevel,
    pub audit: LogLevel,
}

/// A log threshold: records at this level and above are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    /// Nothing is written.
    Off,
}

impl LogLevel {
    /// Parses KES's level syntax (case-insensitive): empty or `on` (INFO), `off`, `DEBUG`,
    /// `INFO`, `WARN`, `ERROR`, `<LEVEL>+N`, or a Go `slog` level number. Go levels between
    /// the named ones become the next level up, which logs exactly the same records since
    /// KES only emits the four named levels; anything above ERROR is `Off`.
    pub fn parse(text: &str) -> Result<LogLevel, String> {
        const DEBUG: i64 = -4;
        const INFO: i64 = 0;
        const WARN: i64 = 4;
        const ERROR: i64 = 8;
        let s = text.trim().to_ascii_uppercase();
        let level = match s.as_str() {
            "" | "ON" | "INFO" => INFO,
            "OFF" => ERROR + 1,
            "DEBUG" => DEBUG,
            "WARN" => WARN,
            "ERROR" => ERROR,
            _ => {
                let named = [
                    ("DEBUG", DEBUG),
                    ("INFO", INFO),
                    ("WARN", WARN),
                    ("ERROR", ERROR),
                ];
                match named.iter().find(|(n, _)| s.starts_with(n)) {
                    Some((name, base)) => {
                        // Go's parser: `<NAME>+<int>`, where the int may carry its own sign.
                        let (head, offset) = s.split_once('+').ok_or_else(|| {
                            "want on, off, DEBUG, INFO, WARN, ERROR, <LEVEL>+N or a number"
                                .to_owned()
                        })?;
                        if head.trim() != *name {
                            return Err(
                                "want on, off, DEBUG, INFO, WARN, ERROR, <LEVEL>+N or a number"
                                    .to_owned(),
                            );
                        }
                        let n: i64 = offset
                            .parse()
                            .map_err(|_| format!("invalid level offset '{offset}'"))?;
                        base.saturating_add(n)
                    }
                    None => s.parse::<i64>().map_err(|_| {
                        "want on, off, DEBUG, INFO, WARN, ERROR, <LEVEL>+N or a number".to_owned()
                    })?,
                }
            }
        };
        Ok(match level {
            l if l <= DEBUG => LogLevel::Debug,
            l if l <= INFO => LogLevel::Info,
            l if l <= WARN => LogLevel::Warn,
            l if l <= ERROR => LogLevel::Error,
            _ => LogLevel::Off,
        })
    }
}

/// The one backend that stores keys.
// Built once per (re)load, so the size spread between variants costs nothing, and
// unboxed variants keep matching on it plain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeystoreConfig {
    /// Keys in process memory; lost on restart. For development and tests.
    Memory,
    /// One file per key in a directory.
    Fs { path: PathBuf },
    /// HashiCorp Vault or OpenBao KV.
    Vault(VaultConfig),
    /// AWS Secrets Manager.
    AwsSecretsManager(AwsConfig),
    /// GCP Secret Manager.
    GcpSecretManager(GcpConfig),
    /// Azure Key Vault.
    AzureKeyVault(AzureConfig),
    /// Fortanix DSM (SDKMS).
    FortanixSdkms(FortanixConfig),
    /// Thales CipherTrust Manager / Gemalto KeySecure.
    KeySecure(KeySecureConfig),
    /// Entrust KeyControl.
    KeyControl(KeyControlConfig),
    /// Bitwarden Secrets Manager (not a KES backend).
    Bitwarden(BitwardenConfig),
}

/// `keystore.vault`. String fields left empty in the file are empty here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    pub endpoint: String,
    /// KV secrets engine mount; default `kv`.
    pub engine: String,
    pub version: KvVersion,
    /// Sent as `X-Vault-Namespace` for KV operations; empty for none.
    pub namespace: String,
    /// Folder inside the engine where keys are stored; empty for the engine's root.
    pub prefix: String,
    /// Wrap stored keys with a Transit key.
    pub transit: Option<VaultTransit>,
    /// Exactly one of `approle` and `kubernetes` is set.
    pub approle: Option<VaultAppRole>,
    pub kubernetes: Option<VaultKubernetes>,
    pub tls: VaultTls,
    /// Health-check interval; default 15s.
    pub status_ping: Duration,
}

/// Vault KV engine version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvVersion {
    #[default]
    V1,
    V2,
}

/// `keystore.vault.transit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultTransit {
    /// Transit engine mount; default `transit`.
    pub engine: String,
    pub key: String,
}

/// `keystore.vault.approle`.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultAppRole {
    /// Auth namespace; `/` means the root namespace, empty means the KV namespace.
    pub namespace: String,
    /// Auth mount; default `approle`.
    pub engine: String,
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for VaultAppRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultAppRole")
            .field("namespace", &self.namespace)
            .field("engine", &self.engine)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `keystore.vault.kubernetes`.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultKubernetes {
    /// Auth namespace; `/` means the root namespace, empty means the KV namespace.
    pub namespace: String,
    /// Auth mount; default `kubernetes`.
    pub engine: String,
    pub role: String,
    /// A JWT, or, when it contains a `/`, the path of a file holding one (re-read at each
    /// login, because service-account tokens rotate).
    pub jwt: String,
}

impl VaultKubernetes {
    /// Whether `jwt` names a file rather than being the token itself (KES's rule).
    pub fn jwt_is_path(&self) -> bool {
        self.jwt.contains('/') || self.jwt.contains(std::path::MAIN_SEPARATOR)
    }
}

impl fmt::Debug for VaultKubernetes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jwt: &dyn fmt::Debug = if self.jwt_is_path() {
            &self.jwt
        } else {
            &"<redacted>"
        };
        f.debug_struct("VaultKubernetes")
            .field("namespace", &self.namespace)
            .field("engine", &self.engine)
            .field("role", &self.role)
            .field("jwt", jwt)
            .finish()
    }
}

/// `keystore.vault.tls`: client certificate (both or neither) and CAs for Vault's server cert.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VaultTls {
    pub key: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

/// `keystore.aws.secretsmanager`. Credentials left out come from the usual AWS sources.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsConfig {
    pub endpoint: String,
    pub region: String,
    /// KMS key that encrypts the secrets; AWS's default key when `None`.
    pub kms_key: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub session_token: Option<String>,
}

impl fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("kms_key", &self.kms_key)
            .field("access_key", &self.access_key)
            .field("secret_key", &redacted(&self.secret_key))
            .field("session_token", &redacted(&self.session_token))
            .finish()
    }
}

/// Secret Manager endpoint when the file sets none, as in KES.
pub const DEFAULT_GCP_ENDPOINT: &str = "secretmanager.googleapis.com:443";
/// OAuth2 scope when the file sets none.
pub const DEFAULT_GCP_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's OAuth2 token endpoint, where service-account assertions are exchanged.
pub const DEFAULT_GCP_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// `keystore.gcp.secretmanager`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpConfig {
    pub project_id: String,
    /// `host:port` (HTTPS) or a URL; [`DEFAULT_GCP_ENDPOINT`] when unset.
    pub endpoint: String,
    /// OAuth2 scopes of the access token; [`DEFAULT_GCP_SCOPE`] when unset.
    pub scopes: Vec<String>,
    /// `None` when the file names no service account: the store then uses
    /// `GOOGLE_APPLICATION_CREDENTIALS` or the metadata server, as Google's libraries do.
    pub credentials: Option<GcpCredentials>,
}

/// `keystore.gcp.secretmanager.credentials`: the fields of a service-account key file.
#[derive(Clone, PartialEq, Eq)]
pub struct GcpCredentials {
    pub client_email: String,
    pub client_id: String,
    pub private_key_id: String,
    /// PEM (PKCS#8) RSA key; `\n` escapes, as copied from a key file, are accepted.
    pub private_key: String,
    /// Token endpoint; [`DEFAULT_GCP_TOKEN_URI`] unless the file sets `token_uri` (an
    /// addition to KES's schema, named as in Google's key files).
    pub token_uri: String,
}

impl fmt::Debug for GcpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpCredentials")
            .field("client_email", &self.client_email)
            .field("client_id", &self.client_id)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &"<redacted>")
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

/// `keystore.azure.keyvault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// The vault's URL, e.g. `https://kes.vault.azure.net`.
    pub endpoint: String,
    pub auth: AzureAuth,
}

/// How the Key Vault store logs in.
#[derive(Clone, PartialEq, Eq)]
pub enum AzureAuth {
    /// `credentials`: an Entra ID application's client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        client_secret: String,
    },
    /// `managed_identity`: the instance's identity; `client_id` picks a user-assigned one.
    ManagedIdentity { client_id: Option<String> },
    /// Neither: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` when set, else
    /// the managed identity, as Azure's default credential does.
    Default,
}

impl fmt::Debug for AzureAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .finish(),
            Self::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            Self::Default => f.write_str("Default"),
        }
    }
}

/// `keystore.fortanix.sdkms`.
#[derive(Clone, PartialEq, Eq)]
pub struct FortanixConfig {
    pub endpoint: String,
    /// Group of the security objects created; the application's default group when `None`.
    pub group_id: Option<String>,
    /// The application's API key (`credentials.key`).
    pub api_key: String,
    /// CAs for the server's certificate (`tls.ca`); the system's roots when `None`.
    pub ca: Option<PathBuf>,
}

impl fmt::Debug for FortanixConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FortanixConfig")
            .field("endpoint", &self.endpoint)
            .field("group_id", &self.group_id)
            .field("api_key", &"<redacted>")
            .field("ca", &self.ca)
            .finish()
    }
}

/// `keystore.gemalto.keysecure`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecureConfig {
    pub endpoint: String,
    /// The refresh token (`credentials.token`).
    pub token: String,
    /// The domain the token belongs to; the root domain when `None`.
    pub domain: Option<String>,
    /// CAs for the server's certificate (`tls.ca`); the system's roots when `None`.
    pub ca: Option<PathBuf>,
}

impl fmt::Debug for KeySecureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySecureConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &"<redacted>")
            .field("domain", &self.domain)
            .field("ca", &self.ca)
            .finish()
    }
}

/// `keystore.entrust.keycontrol`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyControlConfig {
    pub endpoint: String,
    pub vault_id: String,
    pub box_id: String,
    pub username: String,
    pub password: String,
    /// CAs for the server's certificate (`tls.ca`); the system's roots when `None`.
    pub ca: Option<PathBuf>,
}

impl fmt::Debug for KeyControlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyControlConfig")
            .field("endpoint", &self.endpoint)
            .field("vault_id", &self.vault_id)
            .field("box_id", &self.box_id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("ca", &self.ca)
            .finish()
    }
}

/// Bitwarden's cloud API when the file sets none.
pub const DEFAULT_BITWARDEN_API_URL: &str = "https://api.bitwarden.com";
/// Bitwarden's cloud identity service when the file sets none.
pub const DEFAULT_BITWARDEN_IDENTITY_URL: &str = "https://identity.bitwarden.com";

/// `keystore.bitwarden.secretsmanager`.
#[derive(Clone, PartialEq, Eq)]
pub struct BitwardenConfig {
    pub api_url: String,
    pub identity_url: String,
    /// The organisation; taken from the access token's claims when `None`.
    pub organization_id: Option<String>,
    /// The project keys are created in; the machine account needs write access to it.
    pub project_id: String,
    /// A machine account's access token, `0.<id>.<secret>:<key>`.
    pub access_token: String,
}

impl fmt::Debug for BitwardenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitwardenConfig")
            .field("api_url", &self.api_url)
            .field("identity_url", &self.identity_url)
            .field("organization_id", &self.organization_id)
            .field("project_id", &self.project_id)
            .field("access_token", &"<redacted>")
            .finish()
    }
}

fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

/// The `cluster:` section (design section 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Unique, stable, >= 1.
    pub node_id: u64,
    /// Node-to-node listener.
    pub address: SocketAddr,
    /// `host:port` peers use to reach this node. Defaults to this node's `members` entry,
    /// else to `address`.
    pub advertise: String,
    /// Where the node keeps its replicated state; created if missing.
    pub data_dir: PathBuf,
    /// Initial voters, node id -> advertised `host:port`; used only to initialise a cluster.
    /// Empty, or contains `node_id`.
    pub members: BTreeMap<u64, String>,
    pub tls: ClusterTls,
}

/// Mutual TLS between nodes: each side presents `cert` and verifies the peer against `ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTls {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub ca: PathBuf,
}

/// Parses and validates a config file's text. `env` answers `${NAME}` references.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, ConfigError> {
    convert::parse(text, env)
}

/// Reads and parses the file at `path`, resolving `${NAME}` from the process environment.
pub fn load(path: &Path) -> Result<Parsed, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &|name| std::env::var(name).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        let cases = [
            ("", LogLevel::Info),
            ("on", LogLevel::Info),
            ("ON", LogLevel::Info),
            ("off", LogLevel::Off),
            ("debug", LogLevel::Debug),
            ("INFO", LogLevel::Info),
            ("Warn", LogLevel::Warn),
            ("ERROR", LogLevel::Error),
            ("DEBUG+2", LogLevel::Info),
            ("DEBUG+4", LogLevel::Info),
            ("INFO+1", LogLevel::Warn),
            ("WARN+4", LogLevel::Error),
            ("ERROR+1", LogLevel::Off),
            ("INFO+-8", LogLevel::Debug),
            ("-4", LogLevel::Debug),
            ("-10", LogLevel::Debug),
            ("0", LogLevel::Info),
            ("3", LogLevel::Warn),
            ("8", LogLevel::Error),
            ("9", LogLevel::Off),
        ];
        for (text, want) in cases {
            assert_eq!(LogLevel::parse(text), Ok(want), "{text:?}");
        }
        for bad in ["verbose", "DEBUG2", "INFO+x", "INFOX+1", "1.5", "true"] {
            assert!(LogLevel::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cache_effective_defaults() {
        let unset = CacheConfig::default().effective();
        assert_eq!(unset.any, Duration::from_secs(300));
        assert_eq!(unset.unused, Duration::from_secs(30));
        assert_eq!(unset.offline, Duration::ZERO);
        let set = CacheConfig {
            any: Duration::from_secs(60),
            unused: Duration::from_secs(10),
            offline: Duration::from_secs(3600),
        };
        assert_eq!(set.effective(), set);
    }

    #[test]
    fn debug_redacts_secrets() {
        let aws = AwsConfig {
            endpoint: "e".into(),
            region: "r".into(),
            kms_key: None,
            access_key: Some("AKIA".into()),
            secret_key: Some("very-secret".into()),
            session_token: Some("tok-secret".into()),
        };
        let s = format!("{aws:?}");
        assert!(
            !s.contains("very-secret") && !s.contains("tok-secret"),
            "{s}"
        );
        let k = VaultKubernetes {
            namespace: String::new(),
            engine: "kubernetes".into(),
            role: "kes".into(),
            jwt: "eyJsecret".into(),
        };
        assert!(!format!("{k:?}").contains("eyJsecret"));
        let a = VaultAppRole {
            namespace: String::new(),
            engine: "approle".into(),
            id: "id".into(),
            secret: "s3cret".into(),
        };
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kes.yaml");
        std::fs::write(
            &path,
            "admin:\n  identity: a\ntls:\n  key: k\n  cert: c\nkeystore:\n  memory: {}\n",
        )
        .unwrap();
        let parsed = load(&path).unwrap();
        assert_eq!(parsed.config.admin_identity, "a");
        let e = load(&dir.path().join("missing.yaml")).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("missing.yaml"), "{e}");
    }

    /// Every example shipped in `config/` must parse cleanly, with every `${VAR}` it
    /// references set.
    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect(),
            Err(e) => panic!("reading {}: {e}", dir.display()),
        };
        files.sort();
        assert!(
            files.len() >= 4,
            "expected the example configs in {}",
            dir.display()
        );
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => panic!("{}: {e}", file.display()),
            };
            let vars = referenced_vars(&text);
            let env = |name: &str| {
                vars.contains(&name.to_owned())
                    .then(|| format!("{name}-value"))
            };
            let parsed = parse(&text, &env).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(
                parsed.warnings.is_empty(),
                "{}: {:?}",
                file.display(),
                parsed.warnings
            );
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let c = parsed.config;
            assert_eq!(c.cluster.is_some(), name.starts_with("cluster"), "{name}");
            let want_store = match &c.keystore {
                KeystoreConfig::Fs { .. } => "fs",
                KeystoreConfig::Vault(_) => "vault",
                KeystoreConfig::AwsSecretsManager(_) => "aws",
                KeystoreConfig::GcpSecretManager(_) => "gcp",
                KeystoreConfig::AzureKeyVault(_) => "azure",
                KeystoreConfig::FortanixSdkms(_) => "fortanix",
                KeystoreConfig::KeySecure(_) => "gemalto",
                KeystoreConfig::KeyControl(_) => "entrust",
                KeystoreConfig::Bitwarden(_) => "bitwarden",
                other => panic!("{name}: unexpected keystore {other:?}"),
            };
            if name.starts_with("server-") {
                assert_eq!(name, format!("server-{want_store}.yaml"));
            }
            if let Some(minio) = c.policies.get("minio") {
                assert!(
                    minio.allow.iter().any(|p| p == "/v1/key/generate/*"),
                    "{name}"
                );
            }
        }
    }

    fn referenced_vars(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            rest = &rest[i + 2..];
            if let Some(j) = rest.find('}') {
                out.push(rest[..j].trim().to_owned());
                rest = &rest[j..];
            }
        }
        out
    }
}
