//! KES's access model, pure: a policy is a set of allow and deny patterns over request paths;
//! deny wins, anything not allowed is denied, and a pattern ending in `*` matches by prefix.
//! Identities are assigned to at most one policy; the admin identity bypasses policies.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A named set of allow and deny patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// Does `pattern` match the (percent-decoded) request `path`?
///
/// The empty pattern never matches; `X*` matches every path starting with `X`; any other
/// pattern, including one with a `*` elsewhere, must equal the path.
pub fn matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        _ if pattern.is_empty() => false,
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

impl Policy {
    /// Deny beats allow; no match denies.
    pub fn verify(&self, path: &str) -> bool {
        if self.deny.iter().any(|p| matches(p, path)) {
            return false;
        }
        self.allow.iter().any(|p| matches(p, path))
    }
}

/// The outcome of an authorization check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admin,
    Allowed,
    Denied,
}

/// A policy together with its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPolicy {
    pub name: String,
    pub policy: Policy,
}

/// Policies and the identities assigned to them, as one immutable snapshot that the server
/// swaps atomically when it changes.
#[derive(Clone, Debug, Default)]
pub struct Access {
    admin: String,
    policies: BTreeMap<String, Arc<NamedPolicy>>,
    identities: HashMap<String, Arc<NamedPolicy>>,
}

/// Why an access configuration is inconsistent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessError {
    IdentityInTwoPolicies {
        identity: String,
        first: String,
        second: String,
    },
    AdminInPolicy {
        policy: String,
    },
    UnknownPolicy {
        identity: String,
        policy: String,
    },
}

impl std::fmt::Display for AccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::IdentityInTwoPolicies {
                identity,
                first,
                second,
            } => write!(
                f,
                "identity '{identity}' is assigned to policy '{first}' and to policy '{second}'"
            ),
            Self::AdminInPolicy { policy } => {
                write!(
                    f,
                    "the admin identity cannot be assigned to policy '{policy}'"
                )
            }
            Self::UnknownPolicy { identity, policy } => {
                write!(
                    f,
                    "identity '{identity}' is assigned to unknown policy '{policy}'"
                )
            }
        }
    }
}

impl std::error::Error for AccessError {}

impl Access {
    /// Builds the access state from policies and `identity -> policy name` assignments.
    pub fn new<P, I>(admin: &str, policies: P, assignments: I) -> Result<Self, AccessError>
    where
        P: IntoIterator<Item = (String, Policy)>,
        I: IntoIterator<Item = (String, String)>,
    {
        let policies: BTreeMap<String, Arc<NamedPolicy>> = policies
            .into_iter()
            .map(|(name, policy)| (name.clone(), Arc::new(NamedPolicy { name, policy })))
            .collect();
        let mut identities: HashMap<String, Arc<NamedPolicy>> = HashMap::new();
        for (identity, policy) in assignments {
            if identity == admin {
                return Err(AccessError::AdminInPolicy { policy });
            }
            let Some(p) = policies.get(&policy) else {
                return Err(AccessError::UnknownPolicy { identity, policy });
            };
            if let Some(prev) = identities.get(&identity) {
                if prev.name != policy {
                    return Err(AccessError::IdentityInTwoPolicies {
                        first: prev.name.clone(),
                        identity,
                        second: policy,
                    });
                }
            }
            identities.insert(identity, Arc::clone(p));
        }
        Ok(Self {
            admin: admin.to_owned(),
            policies,
            identities,
        })
    }

    pub fn admin(&self) -> &str {
        &self.admin
    }

    pub fn is_admin(&self, identity: &str) -> bool {
        !identity.is_empty() && identity == self.admin
    }

    /// Decides whether `identity` may call `path`.
    pub fn authorize(&self, identity: &str, path: &str) -> Decision {
        if self.is_admin(identity) {
            return Decision::Admin;
        }
        match self.identities.get(identity) {
            Some(p) if p.policy.verify(path) => Decision::Allowed,
            _ => Decision::Denied,
        }
    }

    pub fn policy(&self, name: &str) -> Option<&NamedPolicy> {
        self.policies.get(name).map(|p| p.as_ref())
    }

    pub fn policy_of(&self, identity: &str) -> Option<&NamedPolicy> {
        self.identities.get(identity).map(|p| p.as_ref())
    }

    /// Policy names starting with `prefix`, sorted.
    pub fn policy_names(&self, prefix: &str) -> Vec<String> {
        self.policies
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Identities starting with `prefix`, sorted; the admin identity is always included when it
    /// matches, as KES does.
    pub fn identity_names(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .identities
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect();
        if self.admin.starts_with(prefix) {
            out.push(self.admin.clone());
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(allow: &[&str], deny: &[&str]) -> Policy {
        Policy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn matching() {
        assert!(!matches("", ""));
        assert!(matches("/v1/key/*", "/v1/key/create/a"));
        assert!(matches("/v1/status", "/v1/status"));
        assert!(!matches("/v1/status", "/v1/status/"));
        assert!(!matches("/v1/*/create", "/v1/key/create"));
        assert!(matches("/v1/*/create", "/v1/*/create"));
        assert!(matches("*", "/anything"));
    }

    #[test]
    fn deny_wins() {
        let pol = p(&["/v1/key/create/my*"], &["/v1/key/create/my-key*"]);
        assert!(!pol.verify("/v1/key/create/my-key1"));
        assert!(pol.verify("/v1/key/create/my-minio-key"));
        assert!(
            !Policy::default().verify("/v1/status"),
            "empty policy denies"
        );
    }

    #[test]
    fn access() {
        let a = Access::new(
            "admin",
            [("app".to_string(), p(&["/v1/key/generate/*"], &[]))],
            [("id1".to_string(), "app".to_string())],
        )
        .unwrap();
        assert_eq!(a.authorize("admin", "/v1/x"), Decision::Admin);
        assert_eq!(a.authorize("id1", "/v1/key/generate/k"), Decision::Allowed);
        assert_eq!(a.authorize("id1", "/v1/key/create/k"), Decision::Denied);
        assert_eq!(a.authorize("other", "/v1/key/generate/k"), Decision::Denied);
        assert_eq!(a.authorize("", "/v1/key/generate/k"), Decision::Denied);
        assert_eq!(a.identity_names(""), vec!["admin", "id1"]);
        assert!(Access::new("admin", [], [("admin".into(), "x".into())]).is_err());
        let two = Access::new(
            "admin",
            [
                ("a".into(), Policy::default()),
                ("b".into(), Policy::default()),
            ],
            [("i".into(), "a".into()), ("i".into(), "b".into())],
        );
        assert!(matches!(
            two,
            Err(AccessError::IdentityInTwoPolicies { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn prefix_pattern_is_starts_with(prefix in "[a-z/]{0,8}", path in "[a-z/]{0,12}") {
            let pat = format!("{prefix}*");
            proptest::prop_assert_eq!(matches(&pat, &path), path.starts_with(&prefix));
        }
    }
}
