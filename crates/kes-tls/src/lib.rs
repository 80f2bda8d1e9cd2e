//! TLS for the KES API: rustls server configurations built from KES's `tls:` settings, a TCP
//! listener that runs handshakes concurrently under a timeout, client identities computed from
//! peer certificates, and certificate generation for API keys, `kes identity new` and tests.
//!
//! KES's default (`tls.auth: off`) requires a client certificate but does not verify its chain:
//! the identity is the hash of the certificate's public key, and policies decide the rest. Only
//! `tls.auth: on` verifies client chains against `tls.ca` and the system roots.

pub mod ca;
pub mod certgen;
pub mod check;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Errors building a TLS configuration. They name the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("'{path}' contains no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("'{path}' contains no PEM private key")]
    NoPrivateKey { path: PathBuf },
    #[error("'{path}': {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the server's certificate and key come from.
#[derive(Clone, Debug)]
pub enum CertSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
        password: Option<String>,
    },
    /// Generated in memory (`kes server --dev`, tests).
    Memory { cert_der: Vec<u8>, key_der: Vec<u8> },
}

/// How client certificates are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// Any certificate is accepted without chain verification (KES's default).
    Any,
    /// The certificate must chain to `tls.ca` or the system roots.
    Verify,
}

/// Everything needed to (re)build the server's rustls configuration.
#[derive(Clone, Debug)]
pub struct ServerTlsSource {
    pub cert: CertSource,
    pub auth: ClientAuthMode,
    /// A CA file or directory for client verification (`tls.ca`).
    pub ca: Option<PathBuf>,
    /// When some route skips authentication, a missing client certificate must not abort the
    /// handshake; the request then gets KES's `400 tls: client certificate is required`.
    pub client_cert_optional: bool,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads every PEM certificate in `path`.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first PEM private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        // Legacy `Proc-Type: 4,ENCRYPTED` PEM uses MD5-based key derivation that we refuse to
        // implement; say so instead of failing with a parse error.
        let hint = if password.is_some() {
            "encrypted private keys are not supported; decrypt it with `openssl pkey`"
        } else {
            "the private key is encrypted; decrypt it with `openssl pkey`"
        };
        return Err(TlsError::Invalid {
            path: path.to_owned(),
            message: hint.into(),
        });
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoPrivateKey {
        path: path.to_owned(),
    })
}

/// Adds the certificates of a CA file, or of every file in a CA directory, to `roots`.
pub fn add_ca(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect()
    } else {
        vec![path.to_owned()]
    };
    for file in files {
        for cert in load_certs(&file)? {
            roots.add(cert).map_err(|e| TlsError::Invalid {
                path: file.clone(),
                message: e.to_string(),
            })?;
        }
    }
    Ok(())
}

fn certified_key(src: &CertSource, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let (certs, key, path) = match src {
        CertSource::Files {
            cert,
            key,
            password,
        } => (
            load_certs(cert)?,
            load_key(key, password.as_deref())?,
            cert.clone(),
        ),
        CertSource::Memory { cert_der, key_der } => (
            vec![CertificateDer::from(cert_der.clone())],
            PrivateKeyDer::try_from(key_der.clone()).map_err(|e| TlsError::Invalid {
                path: PathBuf::from("<memory>"),
                message: e.to_string(),
            })?,
            PathBuf::from("<memory>"),
        ),
    };
    check_has_san(&certs[0], &path)?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Invalid {
            path: path.clone(),
            message: format!("unsupported private key: {e}"),
        })?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| TlsError::Invalid {
        path,
        message: format!("certificate and private key do not match: {e}"),
    })?;
    Ok(ck)
}

/// KES refuses server certificates without any DNS or IP subject alternative name, because
/// clients cannot verify them; so do we.
fn check_has_san(cert: &CertificateDer<'_>, path: &Path) -> Result<(), TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| invalid(format!("invalid certificate: {e}")))?;
    let has = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value.general_names.iter().any(|n| {
                matches!(
                    n,
                    x509_parser::extensions::GeneralName::DNSName(_)
                        | x509_parser::extensions::GeneralName::IPAddress(_)
                )
            })
        })
        .unwrap_or(false);
    if has {
        Ok(())
    } else {
        Err(invalid(
            "the server certificate has no DNS or IP subject alternative name".into(),
        ))
    }
}

/// Resolves the one server certificate regardless of SNI.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Requests a client certificate and checks only that its handshake signature is valid: the
/// identity is the key, not the chain.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
    mandatory: bool,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerTlsSource {
    /// Builds a fresh rustls configuration from the current files.
    pub fn build(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let ck = certified_key(&self.cert, &provider)?;
        let verifier: Arc<dyn ClientCertVerifier> = match self.auth {
            ClientAuthMode::Any => Arc::new(AnyClientCert {
                provider: Arc::clone(&provider),
                mandatory: !self.client_cert_optional,
            }),
            ClientAuthMode::Verify => {
                let mut roots = RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    // A broken system certificate must not stop the server.
                    let _ = roots.add(cert);
                }
                if let Some(ca) = &self.ca {
                    add_ca(&mut roots, ca)?;
                }
                let builder = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                );
                let builder = if self.client_cert_optional {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                builder.build().map_err(|e| TlsError::Invalid {
                    path: self.ca.clone().unwrap_or_default(),
                    message: e.to_string(),
                })?
            }
        };
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(FixedCert(Arc::new(ck))));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Who the peer is, from the certificates it presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// No (non-CA) certificate.
    Missing,
    /// Exactly one leaf certificate; the hex SHA-256 of its SubjectPublicKeyInfo.
    Identity(String),
    /// More than one leaf certificate.
    Many,
}

/// Computes the identity of a TLS peer as KES does: CA certificates are ignored, exactly one
/// other certificate is required, and the identity hashes its public key.
pub fn identify(certs: Option<&[CertificateDer<'_>]>) -> PeerIdentity {
    let mut found: Option<String> = None;
    for cert in certs.unwrap_or_default() {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            continue;
        };
        if parsed.is_ca() {
            continue;
        }
        if found.is_some() {
            return PeerIdentity::Many;
        }
        found = Some(kes_crypto::identity_of_spki(
            parsed.tbs_certificate.subject_pki.raw,
        ));
    }
    found.map_or(PeerIdentity::Missing, PeerIdentity::Identity)
}

/// Limits of the TLS listener.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// Longest a client may take to complete the handshake.
    pub handshake_timeout: Duration,
    /// Most connections open at once; further accepts wait.
    pub max_connections: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 8192,
        }
    }
}

/// Accepts TCP connections until `cancel` fires, runs each TLS handshake in its own task under
/// the handshake timeout (so a slow client never blocks others), and hands established
/// connections to `serve`. The rustls configuration is read at every accept, so swapping it
/// (on SIGHUP) affects new connections only.
pub async fn serve_tls<F, Fut>(
    listener: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
    limits: ListenerLimits,
    cancel: CancellationToken,
    serve: F,
) where
    F: Fn(TlsStream<TcpStream>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, addr) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Usually EMFILE; back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(config.load_full());
        let serve = serve.clone();
        let timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve(stream, addr).await,
                Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(peer = %addr, "tls handshake timed out"),
            }
        });
    }
}
