//! KES's route table and Go `ServeMux` path semantics.
//!
//! KES routes with Go's `http.ServeMux`: paths ending in `/` match a whole subtree and the rest of
//! the path is the resource name; other paths match exactly; unclean paths are redirected. We
//! keep that behaviour (clients build paths with it in mind) but serve a subtree root without its
//! trailing slash directly instead of redirecting, because the Go client's redirect of a POST
//! turns into a GET.

use kes_config::ApiOverride;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest request body of the crypto routes: KES's `1 MB` is 1,000,000 bytes.
pub const MAX_CRYPTO_BODY: u64 = 1_000_000;

/// Largest body of the admin routes (a policy with many patterns).
pub const MAX_ADMIN_BODY: u64 = 1 << 20;

/// Most items in one legacy bulk-decrypt request.
pub const MAX_BULK_ITEMS: usize = 1000;

/// Largest body of a legacy bulk decrypt: 1000 items of up to ~1 MB would be absurd; KES E2 used
/// the same 1 MB limit for the whole array.
pub const MAX_BULK_BODY: u64 = MAX_CRYPTO_BODY;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteId {
    Version,
    Ready,
    Status,
    Metrics,
    Api,
    KeyCreate,
    KeyImport,
    KeyDescribe,
    KeyList,
    KeyDelete,
    KeyGenerate,
    KeyEncrypt,
    KeyDecrypt,
    KeyHmac,
    KeyBulkDecrypt,
    PolicyDescribe,
    PolicyRead,
    PolicyList,
    IdentityDescribe,
    IdentityList,
    SelfDescribe,
    LogError,
    LogAudit,
    PolicyWrite,
    PolicyAssign,
    PolicyDelete,
    IdentityDelete,
    ClusterStatus,
    ClusterAdd,
    ClusterRemove,
    ClusterLeader,
    ClusterSnapshot,
    ClusterMetrics,
    ClusterBackup,
}

/// How a route authenticates its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No identity needed (`/version`, or `skip_auth: true`).
    None,
    /// An identity is required and must be admin or allowed by its policy.
    Verify,
    /// The identity is computed but no policy is checked.
    IdentifyOnly,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub id: RouteId,
    pub method: &'static str,
    /// The pattern; ends in `/` for subtree routes.
    pub path: &'static str,
    pub max_body: u64,
    /// Zero means no timeout (streams).
    pub timeout: Duration,
    pub auth: Auth,
}

impl Route {
    pub fn is_subtree(&self) -> bool {
        self.path.ends_with('/')
    }

    /// KES counts and times only key, policy and identity routes.
    pub fn is_metered(&self) -> bool {
        self.path.starts_with("/v1/key/")
            || self.path.starts_with("/v1/policy/")
            || self.path.starts_with("/v1/identity/")
    }

    /// Extensions beyond KES that only the admin identity may call.
    pub fn is_admin_only(&self) -> bool {
        self.path.starts_with("/v1/cluster/")
            || matches!(
                self.id,
                RouteId::PolicyWrite
                    | RouteId::PolicyAssign
                    | RouteId::PolicyDelete
                    | RouteId::IdentityDelete
            )
    }

    /// Key routes produce audit events, as in KES, and so do the admin routes that change
    /// policies, identities or the cluster: who asked, what (the path names the policy,
    /// identity or node), and the answer, refusals included.
    /// A backup copies the whole state out (sealed), so it is audited too.
    pub fn is_audited(&self) -> bool {
        self.path.starts_with("/v1/key/")
            || self.is_admin_change()
            || self.id == RouteId::ClusterBackup
    }

    /// Admin routes that change the replicated state or the membership.
    pub fn is_admin_change(&self) -> bool {
        matches!(
            self.id,
            RouteId::PolicyWrite
                | RouteId::PolicyAssign
                | RouteId::PolicyDelete
                | RouteId::IdentityDelete
                | RouteId::ClusterAdd
                | RouteId::ClusterRemove
                | RouteId::ClusterLeader
                | RouteId::ClusterSnapshot
        )
    }
}

fn default_routes() -> Vec<Route> {
    use RouteId::*;
    let s = Duration::from_secs;
    let r = |id, method, path, max_body, timeout: u64, auth| Route {
        id,
        method,
        path,
        max_body,
        timeout: s(timeout),
        auth,
    };
    vec![
        r(Version, "GET", "/version", 0, 10, Auth::None),
        r(Ready, "GET", "/v1/ready", 0, 15, Auth::Verify),
        r(Status, "GET", "/v1/status", 0, 15, Auth::Verify),
        r(Metrics, "GET", "/v1/metrics", 0, 15, Auth::Verify),
        r(Api, "GET", "/v1/api", 0, 10, Auth::Verify),
        r(KeyCreate, "PUT", "/v1/key/create/", 0, 15, Auth::Verify),
        r(
            KeyImport,
            "PUT",
            "/v1/key/import/",
            MAX_CRYPTO_BODY,
            15,
            Auth::Verify,
        ),
        r(KeyDescribe, "GET", "/v1/key/describe/", 0, 15, Auth::Verify),
        r(KeyList, "GET", "/v1/key/list/", 0, 15, Auth::Verify),
        r(KeyDelete, "DELETE", "/v1/key/delete/", 0, 15, Auth::Verify),
        r(
            KeyGenerate,
            "PUT",
            "/v1/key/generate/",
            MAX_CRYPTO_BODY,
            15,
            Auth::Verify,
        ),
        r(
            KeyEncrypt,
            "PUT",
            "/v1/key/encrypt/",
            MAX_CRYPTO_BODY,
            15,
            Auth::Verify,
        ),
        r(
            KeyDecrypt,
            "PUT",
            "/v1/key/decrypt/",
            MAX_CRYPTO_BODY,
            15,
            Auth::Verify,
        ),
        r(
            KeyHmac,
            "PUT",
            "/v1/key/hmac/",
            MAX_CRYPTO_BODY,
            15,
            Auth::Verify,
        ),
        r(
            KeyBulkDecrypt,
            "PUT",
            "/v1/key/bulk/decrypt/",
            MAX_BULK_BODY,
            15,
            Auth::Verify,
        ),
        r(
            PolicyDescribe,
            "GET",
            "/v1/policy/describe/",
            0,
            15,
            Auth::Verify,
        ),
        r(PolicyRead, "GET", "/v1/policy/read/", 0, 15, Auth::Verify),
        r(PolicyList, "GET", "/v1/policy/list/", 0, 15, Auth::Verify),
        r(
            IdentityDescribe,
            "GET",
            "/v1/identity/describe/",
            0,
            15,
            Auth::Verify,
        ),
        r(
            IdentityList,
            "GET",
            "/v1/identity/list/",
            0,
            15,
            Auth::Verify,
        ),
        r(
            SelfDescribe,
            "GET",
            "/v1/identity/self/describe",
            0,
            15,
            Auth::IdentifyOnly,
        ),
        r(LogError, "GET", "/v1/log/error", 0, 0, Auth::Verify),
        r(LogAudit, "GET", "/v1/log/audit", 0, 0, Auth::Verify),
        // Admin-only extensions: policy changes (KES's earlier route names) and cluster
        // operations.
        r(
            PolicyWrite,
            "PUT",
            "/v1/policy/write/",
            MAX_ADMIN_BODY,
            15,
            Auth::Verify,
        ),
        r(
            PolicyAssign,
            "PUT",
            "/v1/policy/assign/",
            MAX_ADMIN_BODY,
            15,
            Auth::Verify,
        ),
        r(
            PolicyDelete,
            "DELETE",
            "/v1/policy/delete/",
            0,
            15,
            Auth::Verify,
        ),
        r(
            IdentityDelete,
            "DELETE",
            "/v1/identity/delete/",
            0,
            15,
            Auth::Verify,
        ),
        r(
            ClusterStatus,
            "GET",
            "/v1/cluster/status",
            0,
            15,
            Auth::Verify,
        ),
        r(
            ClusterAdd,
            "PUT",
            "/v1/cluster/add/",
            MAX_ADMIN_BODY,
            60,
            Auth::Verify,
        ),
        r(
            ClusterRemove,
            "DELETE",
            "/v1/cluster/remove/",
            0,
            60,
            Auth::Verify,
        ),
        r(
            ClusterLeader,
            "PUT",
            "/v1/cluster/leader/",
            0,
            15,
            Auth::Verify,
        ),
        r(
            ClusterSnapshot,
            "PUT",
            "/v1/cluster/snapshot",
            0,
            60,
            Auth::Verify,
        ),
        r(
            ClusterMetrics,
            "GET",
            "/v1/cluster/metrics",
            0,
            15,
            Auth::Verify,
        ),
        r(
            ClusterBackup,
            "GET",
            "/v1/cluster/backup",
            0,
            60,
            Auth::Verify,
        ),
    ]
}

/// The routes with the configuration's `api:` overrides applied.
#[derive(Clone, Debug)]
pub struct Routes {
    routes: Vec<Route>,
}

/// The result of matching a request path.
pub enum Match<'a, 'p> {
    Route { route: &'a Route, resource: &'p str },
    Redirect(String),
    NotFound,
}

impl Routes {
    pub fn new(overrides: &BTreeMap<String, ApiOverride>) -> Self {
        let mut routes = default_routes();
        for route in &mut routes {
            if let Some(o) = overrides.get(route.path) {
                if o.skip_auth {
                    route.auth = Auth::None;
                }
                if let Some(t) = o.timeout.filter(|t| !t.is_zero()) {
                    route.timeout = t;
                }
            }
        }
        Self { routes }
    }

    pub fn all(&self) -> &[Route] {
        &self.routes
    }

    /// Whether any route lets unauthenticated clients in, which makes client certificates
    /// optional at the TLS layer.
    pub fn any_skip_auth(&self) -> bool {
        self.routes
            .iter()
            .any(|r| r.auth == Auth::None && r.id != RouteId::Version)
    }

    /// Matches a percent-decoded path.
    pub fn find<'a, 'p>(&'a self, path: &'p str) -> Match<'a, 'p> {
        if !is_clean(path) {
            let cleaned = clean_path(path);
            if cleaned != path {
                return Match::Redirect(cleaned);
            }
        }
        let mut best: Option<(&'a Route, &'p str)> = None;
        for route in &self.routes {
            if route.is_subtree() {
                let root = &route.path[..route.path.len() - 1];
                let resource = if let Some(rest) = path.strip_prefix(route.path) {
                    rest
                } else if path == root {
                    ""
                } else {
                    continue;
                };
                if best.is_none_or(|(b, _)| b.path.len() < route.path.len()) {
                    best = Some((route, resource));
                }
            } else if route.path == path {
                return Match::Route {
                    route,
                    resource: "",
                };
            }
        }
        match best {
            Some((route, resource)) => Match::Route { route, resource },
            None => Match::NotFound,
        }
    }
}

/// Whether [`clean_path`] would give `p` back unchanged, checked without building anything:
/// an absolute path without empty, `.` or `..` segments (a trailing slash allowed). Nearly
/// every request's path is clean.
fn is_clean(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    // "/" alone is clean; otherwise no segment may be empty, "." or "..".
    p == "/" || rest.split('/').all(|seg| !matches!(seg, "" | "." | ".."))
}

/// Go's `cleanPath` for the mux: `path.Clean`, keeping a trailing slash.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".into();
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(p.len() + 1);
    for s in &parts {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    } else if p.ends_with('/') || p.ends_with("/.") || p.ends_with("/..") {
        // Go keeps the trailing slash of the original path (but not for `.`/`..` endings,
        // where path.Clean removes it; the mux then re-adds it only if the original ended in /).
        if p.ends_with('/') {
            out.push('/');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clean_check_agrees_with_clean_path() {
        for p in [
            "/",
            "",
            "//",
            "/v1",
            "/v1/",
            "/v1/key/generate/k",
            "/v1/key/list/",
            "/v1//key",
            "/v1/./key",
            "/v1/../key",
            "/v1/key/.",
            "/v1/key/..",
            "/v1/key/./",
            "v1/key",
            "/.",
            "/..",
            "/a//",
            "/a/b/c/",
            "/a/.b",
            "/a/..b",
            "/a/b..",
        ] {
            assert_eq!(is_clean(p), clean_path(p) == p, "{p:?}");
        }
    }

    #[test]
    fn key_routes_and_admin_changes_are_audited_and_reads_are_not() {
        let routes = Routes::new(&BTreeMap::new());
        let audited: Vec<&str> = routes
            .all()
            .iter()
            .filter(|r| r.is_audited())
            .map(|r| r.path)
            .filter(|p| !p.starts_with("/v1/key/"))
            .collect();
        assert_eq!(
            audited,
            vec![
                "/v1/policy/write/",
                "/v1/policy/assign/",
                "/v1/policy/delete/",
                "/v1/identity/delete/",
                "/v1/cluster/add/",
                "/v1/cluster/remove/",
                "/v1/cluster/leader/",
                "/v1/cluster/snapshot",
                "/v1/cluster/backup",
            ]
        );
        for r in routes.all() {
            if r.path.starts_with("/v1/key/") {
                assert!(r.is_audited(), "{}", r.path);
            }
            if r.method == "GET"
                && !r.path.starts_with("/v1/key/")
                && r.path != "/v1/cluster/backup"
            {
                assert!(!r.is_audited(), "{}", r.path);
            }
        }
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean_path("/v1/key/list/"), "/v1/key/list/");
        assert_eq!(clean_path("/v1//key"), "/v1/key");
        assert_eq!(clean_path("/v1/./key/"), "/v1/key/");
        assert_eq!(clean_path("/v1/x/../key"), "/v1/key");
        assert_eq!(clean_path("/../"), "/");
    }

    #[test]
    fn matching() {
        let r = Routes::new(&BTreeMap::new());
        let id = |p: &str| match r.find(p) {
            Match::Route { route, resource } => Some((route.id, resource.to_string())),
            _ => None,
        };
        assert_eq!(
            id("/v1/key/create/k"),
            Some((RouteId::KeyCreate, "k".into()))
        );
        assert_eq!(id("/v1/key/list"), Some((RouteId::KeyList, "".into())));
        assert_eq!(id("/v1/key/list/*"), Some((RouteId::KeyList, "*".into())));
        assert_eq!(
            id("/v1/key/bulk/decrypt/k"),
            Some((RouteId::KeyBulkDecrypt, "k".into()))
        );
        assert_eq!(
            id("/v1/identity/self/describe"),
            Some((RouteId::SelfDescribe, "".into()))
        );
        assert_eq!(id("/v1/status"), Some((RouteId::Status, "".into())));
        assert_eq!(id("/v1/status/"), None);
        assert_eq!(
            id("/v1/key/create/a/b"),
            Some((RouteId::KeyCreate, "a/b".into()))
        );
        assert!(matches!(r.find("/nope"), Match::NotFound));
        assert!(matches!(r.find("/v1//status"), Match::Redirect(p) if p == "/v1/status"));
    }

    #[test]
    fn overrides() {
        let mut o = BTreeMap::new();
        o.insert(
            "/v1/status".to_string(),
            ApiOverride {
                skip_auth: true,
                timeout: Some(Duration::from_secs(3)),
            },
        );
        let r = Routes::new(&o);
        let st = r.all().iter().find(|x| x.id == RouteId::Status).unwrap();
        assert_eq!(st.auth, Auth::None);
        assert_eq!(st.timeout, Duration::from_secs(3));
        assert!(r.any_skip_auth());
        assert!(!Routes::new(&BTreeMap::new()).any_skip_auth());
    }
}
