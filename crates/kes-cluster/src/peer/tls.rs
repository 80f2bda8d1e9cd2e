//! Mutual TLS between nodes.
//!
//! Both sides verify the other's certificate against the cluster CA. A node's certificate must
//! carry the DNS name `kes-node-<id>`: that binds the certificate to a member id, so a node cannot
//! speak for another, and a client certificate of the KES API (even the admin's) cannot reach the
//! node-to-node port, because it is not issued by the cluster CA with such a name.

use kes_config::ClusterTls;
use kes_tls::TlsError;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;

/// The DNS name a node's certificate must carry.
pub fn node_name(id: u64) -> String {
    format!("kes-node-{id}")
}

/// The member id a peer certificate is bound to, from its `kes-node-<id>` DNS name. A
/// certificate with no such name, or with more than one, is bound to no member.
pub fn peer_node_id(certs: Option<&[CertificateDer<'_>]>) -> Option<u64> {
    let leaf = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => d.strip_prefix("kes-node-"),
        _ => None,
    });
    let id = ids.next()?.parse().ok()?;
    if ids.next().is_some() {
        return None;
    }
    Some(id)
}

fn roots(tls: &ClusterTls) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    kes_tls::add_ca(&mut roots, &tls.ca)?;
    Ok(roots)
}

fn identity(
    tls: &ClusterTls,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    TlsError,
> {
    Ok((
        kes_tls::load_certs(&tls.cert)?,
        kes_tls::load_key(&tls.key, None)?,
    ))
}

/// The node-to-node listener's configuration: client certificates are mandatory and verified.
pub fn server_config(tls: &ClusterTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = kes_tls::provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(tls)?), Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError::Invalid {
                path: tls.ca.clone(),
                message: e.to_string(),
            })?;
    let (certs, key) = identity(tls)?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The configuration for calling peers; the server name checked is `kes-node-<id>`.
pub fn client_config(tls: &ClusterTls) -> Result<ClientConfig, TlsError> {
    let (certs, key) = identity(tls)?;
    let mut cfg = ClientConfig::builder_with_provider(kes_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(tls)?)
        .with_client_auth_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// The client configuration of a node without peers (a single node without a `cluster:`
/// section): it trusts nothing, and is never used to connect.
pub fn no_peers_config() -> ClientConfig {
    ClientConfig::builder_with_provider(kes_tls::provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            ClientConfig::builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        })
}
