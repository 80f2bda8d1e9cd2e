//! The file as written: serde structs that mirror KES's YAML schema, with every scalar kept as
//! text. Keeping text lets `${VAR}` stand in for numbers, booleans and durations alike, and
//! lets validation (in `convert`) report the value exactly as the user wrote it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Any YAML scalar, as its source text. `null` and an empty value read as "".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::default())
            }
        }
        // serde_yaml hands `deserialize_str` the scalar's source text even when it would
        // resolve to a bool or number, so `on`, `0x10` and `1.50` arrive unchanged.
        d.deserialize_str(V)
    }
}

/// A mapping kept in file order, duplicates included, so validation can report a repeated
/// policy name or route by line (a `BTreeMap` would silently keep the last one).
#[derive(Debug)]
pub(crate) struct Entries<V>(pub Vec<(String, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Entries::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(Scalar(key)) = map.next_key::<Scalar>()? {
                    out.push((key, map.next_value::<V>()?));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Vis(PhantomData))
    }
}

/// For keystore entries: a key that is present counts even with an empty value, so that
/// `fs:` reports the missing path instead of "no keystore specified".
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawConfig {
    pub version: Option<Scalar>,
    pub address: Option<Scalar>,
    pub admin: Option<RawAdmin>,
    pub tls: Option<RawTls>,
    pub policy: Option<Entries<RawPolicy>>,
    pub cache: Option<RawCache>,
    pub api: Option<Entries<RawApi>>,
    pub log: Option<RawLog>,
    pub keys: Option<Vec<Option<RawKey>>>,
    pub keystore: Option<RawKeystore>,
    pub cluster: Option<RawCluster>,
    pub limits: Option<RawLimits>,
}

/// `limits:`, this server's own section (KES has none): connection and request bounds.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawLimits {
    pub connections: Option<Scalar>,
    pub connections_per_ip: Option<Scalar>,
    pub handshake_timeout: Option<Scalar>,
    pub header_timeout: Option<Scalar>,
    pub idle_timeout: Option<Scalar>,
    pub body_timeout: Option<Scalar>,
    pub http2_streams: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAdmin {
    pub identity: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawTls {
    pub key: Option<Scalar>,
    pub cert: Option<Scalar>,
    pub password: Option<Scalar>,
    pub auth: Option<Scalar>,
    pub ca: Option<Scalar>,
    pub system_roots: Option<Scalar>,
    pub proxy: Option<RawProxy>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawProxy {
    pub identities: Option<Vec<Scalar>>,
    pub header: Option<RawProxyHeader>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawProxyHeader {
    pub cert: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawPolicy {
    pub allow: Option<Vec<Scalar>>,
    pub deny: Option<Vec<Scalar>>,
    pub identities: Option<Vec<Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawCache {
    pub expiry: Option<RawExpiry>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawExpiry {
    pub any: Option<Scalar>,
    pub unused: Option<Scalar>,
    pub offline: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawApi {
    pub skip_auth: Option<Scalar>,
    pub timeout: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawLog {
    pub error: Option<Scalar>,
    pub audit: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKey {
    pub name: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKeystore {
    #[serde(default, deserialize_with = "present")]
    pub fs: Option<RawFs>,
    #[serde(default, deserialize_with = "present")]
    pub memory: Option<RawMemory>,
    #[serde(default, deserialize_with = "present")]
    pub vault: Option<RawVault>,
    #[serde(default, deserialize_with = "present")]
    pub aws: Option<RawAws>,
    #[serde(default, deserialize_with = "present")]
    pub fortanix: Option<RawFortanix>,
    #[serde(default, deserialize_with = "present")]
    pub gemalto: Option<RawGemalto>,
    #[serde(default, deserialize_with = "present")]
    pub gcp: Option<RawGcp>,
    #[serde(default, deserialize_with = "present")]
    pub azure: Option<RawAzure>,
    #[serde(default, deserialize_with = "present")]
    pub entrust: Option<RawEntrust>,
    /// Not in KES: Bitwarden Secrets Manager.
    #[serde(default, deserialize_with = "present")]
    pub bitwarden: Option<RawBitwarden>,
    /// In KES's schema but ignored by KES HEAD; accepted with a warning.
    pub kes: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFs {
    pub path: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawMemory {}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawVault {
    pub endpoint: Option<Scalar>,
    pub engine: Option<Scalar>,
    pub version: Option<Scalar>,
    pub namespace: Option<Scalar>,
    pub prefix: Option<Scalar>,
    pub transit: Option<RawTransit>,
    pub approle: Option<RawAppRole>,
    pub kubernetes: Option<RawKubernetes>,
    pub tls: Option<RawVaultTls>,
    pub status: Option<RawVaultStatus>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawTransit {
    pub engine: Option<Scalar>,
    pub key: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAppRole {
    pub namespace: Option<Scalar>,
    pub engine: Option<Scalar>,
    pub id: Option<Scalar>,
    pub secret: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKubernetes {
    pub namespace: Option<Scalar>,
    pub engine: Option<Scalar>,
    pub role: Option<Scalar>,
    pub jwt: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawVaultTls {
    pub key: Option<Scalar>,
    pub cert: Option<Scalar>,
    pub ca: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawVaultStatus {
    pub ping: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAws {
    pub secretsmanager: Option<RawSecretsManager>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawSecretsManager {
    pub endpoint: Option<Scalar>,
    pub region: Option<Scalar>,
    pub kmskey: Option<Scalar>,
    pub credentials: Option<RawAwsCredentials>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAwsCredentials {
    pub accesskey: Option<Scalar>,
    pub secretkey: Option<Scalar>,
    pub token: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawGcp {
    pub secretmanager: Option<RawGcpSecretManager>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawGcpSecretManager {
    pub project_id: Option<Scalar>,
    pub endpoint: Option<Scalar>,
    pub scopes: Option<Vec<Scalar>>,
    pub credentials: Option<RawGcpCredentials>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawGcpCredentials {
    pub client_email: Option<Scalar>,
    pub client_id: Option<Scalar>,
    pub private_key_id: Option<Scalar>,
    pub private_key: Option<Scalar>,
    /// Not in KES's schema: the OAuth2 token endpoint, as a service-account key file names it.
    pub token_uri: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAzure {
    pub keyvault: Option<RawKeyVault>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKeyVault {
    pub endpoint: Option<Scalar>,
    pub credentials: Option<RawAzureCredentials>,
    pub managed_identity: Option<RawManagedIdentity>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAzureCredentials {
    pub tenant_id: Option<Scalar>,
    pub client_id: Option<Scalar>,
    pub client_secret: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawManagedIdentity {
    pub client_id: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFortanix {
    pub sdkms: Option<RawSdkms>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawSdkms {
    pub endpoint: Option<Scalar>,
    pub group_id: Option<Scalar>,
    pub credentials: Option<RawSdkmsCredentials>,
    pub tls: Option<RawCaOnly>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawSdkmsCredentials {
    pub key: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawGemalto {
    pub keysecure: Option<RawKeySecure>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKeySecure {
    pub endpoint: Option<Scalar>,
    pub credentials: Option<RawKeySecureCredentials>,
    pub tls: Option<RawCaOnly>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKeySecureCredentials {
    pub token: Option<Scalar>,
    pub domain: Option<Scalar>,
    /// In KES's sample and ignored by KES: accepted without effect.
    #[allow(dead_code)]
    pub retry: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawEntrust {
    pub keycontrol: Option<RawKeyControl>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKeyControl {
    pub endpoint: Option<Scalar>,
    pub vault_id: Option<Scalar>,
    pub box_id: Option<Scalar>,
    pub credentials: Option<RawKeyControlCredentials>,
    pub tls: Option<RawCaOnly>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKeyControlCredentials {
    pub username: Option<Scalar>,
    pub password: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawBitwarden {
    pub secretsmanager: Option<RawBitwardenSm>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawBitwardenSm {
    pub api_url: Option<Scalar>,
    pub identity_url: Option<Scalar>,
    pub organization_id: Option<Scalar>,
    pub project_id: Option<Scalar>,
    pub access_token: Option<Scalar>,
}

/// A `tls:` block that only names the CAs to trust.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawCaOnly {
    pub ca: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawCluster {
    pub node_id: Option<Scalar>,
    pub address: Option<Scalar>,
    pub advertise: Option<Scalar>,
    pub data_dir: Option<Scalar>,
    pub members: Option<Entries<Scalar>>,
    pub tls: Option<RawClusterTls>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawClusterTls {
    pub key: Option<Scalar>,
    pub cert: Option<Scalar>,
    pub ca: Option<Scalar>,
}
