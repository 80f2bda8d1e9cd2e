//! Request and response bodies of the KES API.
//!
//! Requests are decoded as Go's `encoding/json` decodes them into KES's structs: field names
//! match case-insensitively, unknown fields are ignored, `null` means empty, and the last of
//! duplicate fields wins. Responses serialize to the exact field names and omission rules of
//! KES's response structs.

use crate::b64::Bytes64;
use crate::time::GoTime;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A string field where `null` means empty, as in Go.
#[derive(Default)]
struct NullableString(String);

impl<'de> Deserialize<'de> for NullableString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(Option::<String>::deserialize(d)?.unwrap_or_default()))
    }
}

/// Generates a request struct whose `Deserialize` matches field names case-insensitively.
macro_rules! go_request {
    ($(#[$m:meta])* $name:ident { $($field:ident : $ty:ident = $json:literal $(| $alias:literal)*),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct $name {
            $(pub $field: go_request!(@ty $ty),)*
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a JSON object for ", stringify!($name)))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<$name, E> {
                        Ok($name::default())
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                            $(
                                if key.eq_ignore_ascii_case($json) $(|| key.eq_ignore_ascii_case($alias))* {
                                    out.$field = go_request!(@read map, $ty);
                                    continue;
                                }
                            )*
                            map.next_value::<IgnoredAny>()?;
                        }
                        Ok(out)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
    (@ty bytes) => { Bytes64 };
    (@ty string) => { String };
    (@read $map:ident, bytes) => { $map.next_value::<Bytes64>()? };
    (@read $map:ident, string) => { $map.next_value::<NullableString>()?.0 };
}

go_request!(
    /// `PUT /v1/key/generate/{name}`.
    GenerateRequest { context: bytes = "context", version: string = "version" }
);
go_request!(
    /// `PUT /v1/key/encrypt/{name}`.
    EncryptRequest { plaintext: bytes = "plaintext", context: bytes = "context", version: string = "version" }
);
go_request!(
    /// `PUT /v1/key/decrypt/{name}`; also one item of the legacy bulk decrypt body.
    DecryptRequest { ciphertext: bytes = "ciphertext", context: bytes = "context", version: string = "version" }
);
go_request!(
    /// `PUT /v1/key/hmac/{name}`.
    HmacRequest { message: bytes = "message", version: string = "version" }
);
go_request!(
    /// `PUT /v1/key/import/{name}`. The 2023 edge releases sent `bytes` and `algorithm`.
    ImportKeyRequest { key: bytes = "key" | "bytes", cipher: string = "cipher" | "algorithm" }
);

/// Skips `version` on the wire when empty, as Go's `omitempty`.
fn is_empty(s: &str) -> bool {
    s.is_empty()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResponse {
    pub version: String,
    #[serde(default)]
    pub commit: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub version: String,
    pub os: String,
    pub arch: String,
    /// Seconds since the server started.
    pub uptime: u64,
    pub num_cpu: u64,
    pub num_cpu_used: u64,
    pub mem_heap_used: u64,
    pub mem_stack_used: u64,
    /// Keystore round trip in milliseconds (at least 1), absent when unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystore_latency: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keystore_unreachable: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keystore_unavailable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiDescription {
    pub method: String,
    pub path: String,
    pub max_body: u64,
    /// Whole seconds; 0 for the streaming log routes.
    pub timeout: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeKeyResponse {
    pub name: String,
    pub algorithm: String,
    pub created_at: GoTime,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub created_by: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListKeysResponse {
    #[serde(default, deserialize_with = "null_vec")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub continue_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateResponse {
    pub plaintext: Bytes64,
    pub ciphertext: Bytes64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptResponse {
    pub ciphertext: Bytes64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecryptResponse {
    pub plaintext: Bytes64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HmacResponse {
    pub hmac: Bytes64,
}

/// A policy rule; KES sends rules as `{"<pattern>":{}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribePolicyResponse {
    pub name: String,
    pub created_at: GoTime,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub created_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadPolicyResponse {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allow: BTreeMap<String, Rule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deny: BTreeMap<String, Rule>,
    pub created_at: GoTime,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub created_by: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPoliciesResponse {
    #[serde(default, deserialize_with = "null_vec")]
    pub names: Vec<String>,
    #[serde(default)]
    pub continue_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeIdentityResponse {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub policy: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    pub created_at: GoTime,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub created_by: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListIdentitiesResponse {
    #[serde(default, deserialize_with = "null_vec")]
    pub identities: Vec<String>,
    #[serde(default)]
    pub continue_at: String,
}

/// `GET /v1/identity/self/describe`, flat as kms-go decodes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfDescribeResponse {
    pub identity: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    pub created_at: GoTime,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub created_by: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub policy: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allow: BTreeMap<String, Rule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deny: BTreeMap<String, Rule>,
}

/// One line of `/v1/log/audit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time: GoTime,
    pub request: AuditRequest,
    pub response: AuditResponse,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRequest {
    pub ip: String,
    pub path: String,
    pub identity: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResponse {
    pub code: u16,
    /// Milliseconds, as KES sends it.
    pub time: u64,
}

/// One line of `/v1/log/error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEvent {
    pub message: String,
}

/// `{"message": ...}` error bodies and the `{"error": ...}` variant older servers sent.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

fn null_vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gojson::to_go_json;

    #[test]
    fn requests_decode_like_go() {
        let r: GenerateRequest = serde_json::from_str(r#"{"CONTEXT":"e30=","x":[1,{}]}"#).unwrap();
        assert_eq!(r.context.0, b"{}");
        let r: GenerateRequest = serde_json::from_str("null").unwrap();
        assert!(r.context.0.is_empty());
        let r: DecryptRequest =
            serde_json::from_str(r#"{"ciphertext":"AA==","context":null,"version":null}"#).unwrap();
        assert_eq!(r.ciphertext.0, vec![0]);
        let r: ImportKeyRequest =
            serde_json::from_str(r#"{"bytes":"AA==","algorithm":"AES256-GCM_SHA256"}"#).unwrap();
        assert_eq!(r.cipher, "AES256-GCM_SHA256");
        assert!(serde_json::from_str::<GenerateRequest>(r#"{"context":"@@@"}"#).is_err());
        assert!(serde_json::from_str::<GenerateRequest>(r#"{"context":5}"#).is_err());
        assert!(serde_json::from_str::<GenerateRequest>("[]").is_err());
        assert!(serde_json::from_str::<ImportKeyRequest>(r#"{"cipher":1}"#).is_err());
    }

    #[test]
    fn responses_omit_like_go() {
        let r = ListKeysResponse {
            names: vec!["a".into()],
            continue_at: String::new(),
        };
        assert_eq!(to_go_json(&r), br#"{"names":["a"]}"#);
        let p = ListPoliciesResponse::default();
        assert_eq!(to_go_json(&p), br#"{"names":[],"continue_at":""}"#);
        let s = StatusResponse {
            keystore_unreachable: true,
            keystore_unavailable: true,
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&to_go_json(&s)).unwrap();
        assert!(v.get("keystore_latency").is_none());
        assert_eq!(v["keystore_unavailable"], true);
        let l: ListKeysResponse = serde_json::from_str(r#"{"names":null}"#).unwrap();
        assert!(l.names.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Admin extensions beyond KES.

/// One member in `/v1/cluster/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: u64,
    pub address: String,
    pub voter: bool,
    /// Highest log index known replicated to it (leader's view), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
    /// How far it is behind the leader's last log index, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// `/v1/cluster/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: u64,
    pub sealed: bool,
    pub serving: bool,
    pub cut_off: bool,
    pub keys: usize,
    pub tombstones: usize,
    pub members: Vec<MemberStatus>,
}
