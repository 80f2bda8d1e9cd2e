//! Start-up check of a node's own node-to-node certificate.
//!
//! A node whose certificate its peers will refuse (wrong extended key usage, expired, issued by
//! another CA, without its `kes-node-<id>` name) would start, fail every Raft call and leave the
//! operator to read handshake errors on the *other* nodes. Checking the certificate against the
//! same rules before anything listens turns that into one message naming the file and the fix.

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

/// What is wrong with a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCertProblem {
    /// The file cannot be read or holds no PEM certificate.
    Unreadable(String),
    /// The file holds something that is not an X.509 certificate.
    Malformed(String),
    Expired {
        not_after: OffsetDateTime,
    },
    NotYetValid {
        not_before: OffsetDateTime,
    },
    /// The certificate is a CA certificate, not a node's.
    IsCa,
    /// The extended key usage lacks serverAuth or clientAuth (a node is both).
    MissingUsage {
        missing: &'static str,
    },
    /// No `kes-node-<id>` DNS name; `other` is the id of another node's name, if present.
    MissingName {
        name: String,
        other: Option<u64>,
    },
    /// The CA file cannot be read or holds no CA certificate.
    CaUnreadable {
        ca: PathBuf,
        reason: String,
    },
    /// The chain does not lead to the CA in `ca`.
    NotFromCa {
        ca: PathBuf,
        reason: String,
    },
}

impl fmt::Display for NodeCertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable(r) => write!(f, "{r}"),
            Self::Malformed(r) => write!(f, "it is not a valid X.509 certificate ({r})"),
            Self::Expired { not_after } => write!(f, "it expired on {}", date(*not_after)),
            Self::NotYetValid { not_before } => write!(
                f,
                "it is not valid before {} (is this host's clock right?)",
                date(*not_before)
            ),
            Self::IsCa => write!(f, "it is a CA certificate, not a node certificate"),
            Self::MissingUsage { missing } => write!(
                f,
                "its extended key usage lacks {missing} (a node certificate needs serverAuth and \
                 clientAuth: every node both calls and answers its peers)"
            ),
            Self::MissingName { name, other } => {
                write!(
                    f,
                    "it lacks the DNS name {name}, which binds it to this node's id"
                )?;
                if let Some(o) = other {
                    write!(f, " (it is node {o}'s certificate)")?;
                }
                Ok(())
            }
            Self::CaUnreadable { ca, reason } => {
                write!(
                    f,
                    "the cluster CA file '{}' is unusable: {reason}",
                    ca.display()
                )
            }
            Self::NotFromCa { ca, reason } => write!(
                f,
                "it is not issued by the cluster CA in '{}' ({reason})",
                ca.display()
            ),
        }
    }
}

/// A node certificate that cannot be used, with the file and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("node certificate '{}' (cluster.tls.cert) cannot be used: {problem}. {}", path.display(), self.fix())]
pub struct NodeCertError {
    pub path: PathBuf,
    pub node_id: u64,
    pub problem: NodeCertProblem,
}

impl NodeCertError {
    /// The remedy, spelled out.
    pub fn fix(&self) -> String {
        let issue = format!(
            "kes ca issue node --id {id} --ca-cert <cluster CA certificate> --ca-key <cluster \
             CA key> --cert {cert} --key <cluster.tls.key> --dns <this host's name>",
            id = self.node_id,
            cert = self.path.display()
        );
        match &self.problem {
            NodeCertProblem::CaUnreadable { .. } => {
                "Fix: point cluster.tls.ca at the PEM certificate of the CA that issued the \
                 node certificates (`kes ca new` creates one)"
                    .to_owned()
            }
            NodeCertProblem::NotYetValid { .. } => {
                "Fix: correct this host's clock (NTP), or issue a new certificate with: \
                 "
                .to_owned()
                    + &issue
            }
            NodeCertProblem::NotFromCa { .. } => format!(
                "Fix: issue the node certificate from the cluster CA with: {issue}; or, if the \
                 certificate is right, point cluster.tls.ca at the CA that issued it (every node \
                 must use the same CA)"
            ),
            _ => format!("Fix: issue a new node certificate from the cluster CA with: {issue}"),
        }
    }
}

fn date(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.format(&f).unwrap_or_else(|_| t.to_string())
}

/// A usable node certificate.
#[derive(Debug, Clone)]
pub struct NodeCertificate {
    pub not_after: OffsetDateTime,
}

impl NodeCertificate {
    /// How long until it expires (zero if it already has).
    pub fn remaining(&self) -> std::time::Duration {
        let left = self.not_after - OffsetDateTime::now_utc();
        std::time::Duration::try_from(left).unwrap_or_default()
    }
}

/// Certificate files whose expiry the cluster metrics report, by role (`api`, `node`,
/// `cluster-ca`). Registered once at start by the binary; read at every scrape, so a file
/// replaced for rotation shows its new date without a restart.
static WATCHED: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Adds `path` to the certificates whose expiry [`render_expiry`] reports as `role`.
pub fn watch_expiry(role: &str, path: &Path) {
    if let Ok(mut w) = WATCHED.lock() {
        w.retain(|(r, _)| r != role);
        w.push((role.to_owned(), path.to_owned()));
    }
}

/// The `kes_cluster_certificate_expiry_timestamp_seconds` family (Prometheus text): when each
/// watched certificate (the first in its file) expires, as a Unix time. A file that cannot be
/// read or parsed has no sample; the family is absent when nothing is watched.
pub fn render_expiry(out: &mut String) {
    use std::fmt::Write;
    let watched = match WATCHED.lock() {
        Ok(w) => w.clone(),
        Err(_) => return,
    };
    if watched.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP kes_cluster_certificate_expiry_timestamp_seconds When the certificate expires (Unix time).\n# TYPE kes_cluster_certificate_expiry_timestamp_seconds gauge"
    );
    for (role, path) in watched {
        let Ok(chain) = crate::load_certs(&path) else {
            continue;
        };
        let Some(t) = chain
            .first()
            .and_then(|c| certificate_not_after(c.as_ref()))
        else {
            continue;
        };
        let file = path
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        let _ = writeln!(
            out,
            "kes_cluster_certificate_expiry_timestamp_seconds{{certificate=\"{role}\",file=\"{file}\"}} {}",
            t.unix_timestamp()
        );
    }
}

/// When a DER certificate expires, if it parses.
pub fn certificate_not_after(der: &[u8]) -> Option<OffsetDateTime> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(timestamp(x509.validity().not_after))
}

fn timestamp(t: x509_parser::time::ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Checks the certificate in `cert` (its first PEM certificate, intermediates after it) as the
/// node certificate of member `node_id`, against the cluster CA in `ca`, by the rules its peers
/// apply: valid now, not a CA, serverAuth and clientAuth, the DNS name `kes-node-<id>`, and a
/// chain to the CA.
pub fn check_node_certificate(
    cert: &Path,
    ca: &Path,
    node_id: u64,
) -> Result<NodeCertificate, NodeCertError> {
    check_at(cert, ca, node_id, OffsetDateTime::now_utc())
}

fn check_at(
    cert: &Path,
    ca: &Path,
    node_id: u64,
    now: OffsetDateTime,
) -> Result<NodeCertificate, NodeCertError> {
    let fail = |problem| NodeCertError {
        path: cert.to_owned(),
        node_id,
        problem,
    };
    let chain =
        crate::load_certs(cert).map_err(|e| fail(NodeCertProblem::Unreadable(e.to_string())))?;
    let Some(leaf) = chain.first() else {
        return Err(fail(NodeCertProblem::Unreadable(
            "it holds no PEM certificate".into(),
        )));
    };
    let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| fail(NodeCertProblem::Malformed(e.to_string())))?;

    let validity = x509.validity();
    let (not_before, not_after) = (
        timestamp(validity.not_before),
        timestamp(validity.not_after),
    );
    if now > not_after {
        return Err(fail(NodeCertProblem::Expired { not_after }));
    }
    if now < not_before {
        return Err(fail(NodeCertProblem::NotYetValid { not_before }));
    }
    if x509.is_ca() {
        return Err(fail(NodeCertProblem::IsCa));
    }
    // No extended key usage at all means any usage (RFC 5280); one that is present must list
    // both.
    if let Ok(Some(eku)) = x509.extended_key_usage() {
        let missing = match (eku.value.server_auth, eku.value.client_auth) {
            (true, true) => None,
            (false, true) => Some("serverAuth"),
            (true, false) => Some("clientAuth"),
            (false, false) => Some("serverAuth and clientAuth"),
        };
        if let Some(missing) = missing {
            return Err(fail(NodeCertProblem::MissingUsage { missing }));
        }
    }
    let name = crate::ca::node_dns_name(node_id);
    let dns: Vec<&str> = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !dns.iter().any(|d| d.eq_ignore_ascii_case(&name)) {
        let other = dns
            .iter()
            .find_map(|d| d.strip_prefix("kes-node-").and_then(|i| i.parse().ok()));
        return Err(fail(NodeCertProblem::MissingName { name, other }));
    }

    let mut roots = RootCertStore::empty();
    crate::add_ca(&mut roots, ca).map_err(|e| {
        fail(NodeCertProblem::CaUnreadable {
            ca: ca.to_owned(),
            reason: e.to_string(),
        })
    })?;
    if roots.is_empty() {
        return Err(fail(NodeCertProblem::CaUnreadable {
            ca: ca.to_owned(),
            reason: "it holds no usable CA certificate".into(),
        }));
    }
    verify_chain(&chain, roots, &name, now).map_err(|reason| {
        fail(NodeCertProblem::NotFromCa {
            ca: ca.to_owned(),
            reason,
        })
    })?;
    Ok(NodeCertificate { not_after })
}

/// The chain checks the peers run: as a server named `name` and as a client.
fn verify_chain(
    chain: &[CertificateDer<'static>],
    roots: RootCertStore,
    name: &str,
    now: OffsetDateTime,
) -> Result<(), String> {
    let (leaf, intermediates) = match chain.split_first() {
        Some(x) => x,
        None => return Err("no certificate".into()),
    };
    let provider = crate::provider();
    let roots = Arc::new(roots);
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    let explain = |e: rustls::Error| match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "no chain to it: signed by another CA".to_owned()
        }
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            "the signature does not verify with its key".to_owned()
        }
        other => other.to_string(),
    };
    let server = WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    server
        .verify_server_cert(leaf, intermediates, &server_name, &[], now)
        .map_err(explain)?;
    let client = WebPkiClientVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .verify_client_cert(leaf, intermediates, now)
        .map_err(explain)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::ca::{Ca, IssueRequest, KeyType, Profile};
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
    use std::time::Duration;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn put(&self, name: &str, data: &str) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            p
        }
    }

    fn ca() -> Ca {
        Ca::generate(
            "cluster CA",
            Duration::from_secs(3600 * 24 * 30),
            KeyType::EcdsaP256,
        )
        .unwrap()
    }

    fn node(ca: &Ca, id: u64) -> String {
        ca.issue(&IssueRequest {
            valid_for: Duration::from_secs(3600 * 24),
            ..IssueRequest::new(Profile::Node { id })
        })
        .unwrap()
        .cert_pem
    }

    /// A leaf signed by `ca` with hand-picked properties, for the cases the CA refuses to make.
    fn custom(
        ca: &Ca,
        dns: &str,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> String {
        let ca_params = CertificateParams::from_ca_cert_pem(ca.cert_pem()).unwrap();
        let ca_key = KeyPair::from_pem(&ca.key_pem()).unwrap();
        let issuer = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::DnsName(dns.to_owned().try_into().unwrap())];
        p.extended_key_usages = ekus;
        p.is_ca = IsCa::ExplicitNoCa;
        p.not_before = not_before;
        p.not_after = not_after;
        p.signed_by(&key, &issuer, &ca_key).unwrap().pem()
    }

    #[test]
    fn watched_certificates_expiry_is_rendered() {
        let f = Files::new();
        let ca = ca();
        let cert = f.put("node.cert", &node(&ca, 1));
        let mut out = String::new();
        watch_expiry("node", &cert);
        watch_expiry("cluster-ca", &f.dir.path().join("absent.cert"));
        render_expiry(&mut out);
        let want = certificate_not_after(
            rustls::pki_types::pem::PemObject::from_pem_file(&cert)
                .map(|d: CertificateDer| d.to_vec())
                .unwrap()
                .as_slice(),
        )
        .unwrap()
        .unix_timestamp();
        assert!(out.contains("# TYPE kes_cluster_certificate_expiry_timestamp_seconds gauge"));
        assert!(
            out.contains(&format!(
                "kes_cluster_certificate_expiry_timestamp_seconds{{certificate=\"node\",file=\"{}\"}} {want}",
                cert.display()
            )),
            "{out}"
        );
        assert!(
            !out.contains("cluster-ca"),
            "an unreadable file has no sample: {out}"
        );
    }

    #[test]
    fn a_proper_node_certificate_passes() {
        let f = Files::new();
        let ca = ca();
        let ca_file = f.put("ca.cert", ca.cert_pem());
        let cert = f.put("node.cert", &node(&ca, 2));
        let ok = check_node_certificate(&cert, &ca_file, 2).unwrap();
        assert!(ok.remaining() > Duration::from_secs(3600 * 23));
    }

    #[test]
    fn each_problem_is_named_with_the_file_and_a_fix() {
        let f = Files::new();
        let ca = ca();
        let ca_file = f.put("ca.cert", ca.cert_pem());
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let both = || {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        };

        type Case = (
            &'static str,
            String,
            fn(&NodeCertProblem) -> bool,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "wrong-id",
                node(&ca, 3),
                |p| matches!(p, NodeCertProblem::MissingName { other: Some(3), .. }),
                "lacks the DNS name kes-node-1",
            ),
            (
                "client-only",
                custom(
                    &ca,
                    "kes-node-1",
                    vec![ExtendedKeyUsagePurpose::ClientAuth],
                    now - day,
                    now + day,
                ),
                |p| {
                    matches!(
                        p,
                        NodeCertProblem::MissingUsage {
                            missing: "serverAuth"
                        }
                    )
                },
                "lacks serverAuth",
            ),
            (
                "server-only",
                custom(
                    &ca,
                    "kes-node-1",
                    vec![ExtendedKeyUsagePurpose::ServerAuth],
                    now - day,
                    now + day,
                ),
                |p| {
                    matches!(
                        p,
                        NodeCertProblem::MissingUsage {
                            missing: "clientAuth"
                        }
                    )
                },
                "lacks clientAuth",
            ),
            (
                "expired",
                custom(&ca, "kes-node-1", both(), now - day - day, now - day),
                |p| matches!(p, NodeCertProblem::Expired { .. }),
                "expired on",
            ),
            (
                "future",
                custom(&ca, "kes-node-1", both(), now + day, now + day + day),
                |p| matches!(p, NodeCertProblem::NotYetValid { .. }),
                "clock",
            ),
            (
                "other-ca",
                node(&self::ca(), 1),
                |p| matches!(p, NodeCertProblem::NotFromCa { .. }),
                "not issued by the cluster CA",
            ),
            (
                "the-ca",
                ca.cert_pem().to_owned(),
                |p| matches!(p, NodeCertProblem::IsCa),
                "CA certificate",
            ),
            (
                "garbage",
                "not a certificate".to_owned(),
                |p| matches!(p, NodeCertProblem::Unreadable(_)),
                "no PEM certificate",
            ),
        ];
        for (name, pem, is, text) in cases {
            let cert = f.put(&format!("{name}.cert"), &pem);
            let e = check_node_certificate(&cert, &ca_file, 1).unwrap_err();
            assert!(is(&e.problem), "{name}: {:?}", e.problem);
            let msg = e.to_string();
            assert!(msg.contains(&cert.display().to_string()), "{name}: {msg}");
            assert!(msg.contains(text), "{name}: {msg}");
            assert!(msg.contains("Fix:"), "{name}: {msg}");
        }

        // A CA file that is not one.
        let cert = f.put("ok.cert", &node(&ca, 1));
        let bad_ca = f.put("bad-ca.cert", "nothing here");
        let e = check_node_certificate(&cert, &bad_ca, 1).unwrap_err();
        assert!(
            matches!(e.problem, NodeCertProblem::CaUnreadable { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("cluster.tls.ca"), "{e}");
        let missing = f.dir.path().join("absent.cert");
        let e = check_node_certificate(&missing, &ca_file, 1).unwrap_err();
        assert!(matches!(e.problem, NodeCertProblem::Unreadable(_)), "{e}");
    }
}
