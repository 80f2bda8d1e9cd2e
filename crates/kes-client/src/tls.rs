//! The client's rustls configuration: server verification against a CA file and the system
//! roots (or nothing, in insecure mode), and the client certificate KES identifies us by.

use crate::error::ClientError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::path::PathBuf;
use std::sync::Arc;

/// Where the client certificate comes from.
#[derive(Clone)]
pub(crate) enum ClientCert {
    /// DER certificate chain and PKCS#8 key held in memory (API keys, tests).
    Der {
        chain: Vec<Vec<u8>>,
        key: zeroize::Zeroizing<Vec<u8>>,
    },
    /// PEM files read when the client is built.
    Files { cert: PathBuf, key: PathBuf },
}

/// Where trusted server certificates come from.
#[derive(Clone, Default)]
pub(crate) struct Trust {
    pub system_roots: bool,
    pub ca_files: Vec<PathBuf>,
    pub ca_pems: Vec<String>,
    pub insecure: bool,
}

fn config_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Config(e.to_string())
}

fn roots(trust: &Trust) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    if trust.system_roots {
        // Unreadable system certificates are skipped, as Go's x509.SystemCertPool does; a
        // missing CA only shows up as a verification failure for servers that need it.
        let native = rustls_native_certs::load_native_certs();
        let _ = roots.add_parsable_certificates(native.certs);
    }
    for path in &trust.ca_files {
        kes_tls::add_ca(&mut roots, path).map_err(config_err)?;
    }
    for pem in &trust.ca_pems {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| config_err(format!("invalid CA certificate: {e}")))?;
        if certs.is_empty() {
            return Err(config_err("the CA PEM contains no certificate"));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| config_err(format!("invalid CA certificate: {e}")))?;
        }
    }
    Ok(roots)
}

fn client_cert(
    cert: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientError> {
    match cert {
        ClientCert::Der { chain, key } => {
            let chain = chain
                .iter()
                .map(|c| CertificateDer::from(c.clone()))
                .collect();
            let key = PrivateKeyDer::try_from(key.to_vec())
                .map_err(|e| config_err(format!("invalid client private key: {e}")))?;
            Ok((chain, key))
        }
        ClientCert::Files { cert, key } => {
            let chain = kes_tls::load_certs(cert).map_err(config_err)?;
            let key = kes_tls::load_key(key, None).map_err(config_err)?;
            Ok((chain, key))
        }
    }
}

/// Builds the rustls configuration: TLS 1.2 and 1.3, ALPN h2 and http/1.1, ring provider.
pub(crate) fn client_config(
    trust: &Trust,
    cert: Option<&ClientCert>,
) -> Result<ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(config_err)?;
    let builder = if trust.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                kes_tls::insecure::AcceptAnyServerCert::new(provider),
            ))
    } else {
        builder.with_root_certificates(roots(trust)?)
    };
    let mut config = match cert {
        Some(cert) => {
            let (chain, key) = client_cert(cert)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_err(format!("invalid client certificate or key: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
