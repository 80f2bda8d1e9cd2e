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
pub mod conn;
pub mod insecure;

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
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// With [`ClientAuthMode::Verify`], also trust the system's root CAs (`tls.system_roots`).
    /// Off by default: a certificate any public CA issued must not be a client of a key
    /// service that was only meant to trust its own CA.
    pub system_roots: bool,
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
    if let Some(missing) = missing_usage(&certs[0], Usage::Server) {
        tracing::warn!(
            certificate = %path.display(),
            "the server certificate lacks Extended Key Usage {missing}: clients that verify it (MinIO, kes) will refuse it; issue it with serverAuth"
        );
    }
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
                if self.system_roots {
                    let native = rustls_native_certs::load_native_certs();
                    for cert in native.certs {
                        // A broken system certificate must not stop the server.
                        let _ = roots.add(cert);
                    }
                }
                if let Some(ca) = &self.ca {
                    add_ca(&mut roots, ca)?;
                }
                if roots.is_empty() {
                    return Err(TlsError::Invalid {
                        path: self.ca.clone().unwrap_or_default(),
                        message: "tls.auth is on but no CA is trusted: set tls.ca (or tls.system_roots: on)".into(),
                    });
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
                let inner = builder.build().map_err(|e| TlsError::Invalid {
                    path: self.ca.clone().unwrap_or_default(),
                    message: e.to_string(),
                })?;
                Arc::new(LoggingVerifier { inner })
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
    /// No certificate.
    Missing,
    /// The hex SHA-256 of the leaf certificate's SubjectPublicKeyInfo.
    Identity(String),
    /// The chain holds another certificate that is not a CA besides the leaf (KES's `400 tls:
    /// received more than one client certificate`).
    Many,
    /// The leaf is a CA certificate, or cannot be parsed: it identifies nobody, and is never
    /// replaced by another certificate of the chain.
    Rejected,
}

/// Computes the identity of a TLS peer: the hash of the public key of the **leaf** certificate,
/// the one whose key signed the handshake, and nothing else.
///
/// KES skips CA certificates and takes the first other certificate of the chain, which need
/// not be the leaf: a client holding only its own key could put a self-signed CA certificate of
/// its own in front of someone else's (public) certificate and be taken for them. Here a CA
/// leaf identifies nobody ([`PeerIdentity::Rejected`]); as in KES, a chain with more than one
/// non-CA certificate is refused ([`PeerIdentity::Many`]).
pub fn identify(certs: Option<&[CertificateDer<'_>]>) -> PeerIdentity {
    let certs = certs.unwrap_or_default();
    let Some(leaf) = certs.first() else {
        return PeerIdentity::Missing;
    };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return PeerIdentity::Rejected;
    };
    if parsed.is_ca() {
        return PeerIdentity::Rejected;
    }
    let others_not_ca = certs[1..]
        .iter()
        .any(|c| x509_parser::parse_x509_certificate(c.as_ref()).map_or(true, |(_, p)| !p.is_ca()));
    if others_not_ca {
        return PeerIdentity::Many;
    }
    PeerIdentity::Identity(kes_crypto::identity_of_spki(
        parsed.tbs_certificate.subject_pki.raw,
    ))
}

/// Which side of TLS a certificate is meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// The Extended Key Usage `cert` lacks for `usage`, if it lists usages at all (a certificate
/// without the extension may be used for anything, as in RFC 5280 and webpki).
pub fn missing_usage(cert: &CertificateDer<'_>, usage: Usage) -> Option<&'static str> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let eku = parsed.extended_key_usage().ok()??.value;
    match usage {
        Usage::Server if !eku.any && !eku.server_auth => Some("Server Authentication (serverAuth)"),
        Usage::Client if !eku.any && !eku.client_auth => Some("Client Authentication (clientAuth)"),
        _ => None,
    }
}

/// A short description of a certificate for log lines: subject and identity.
pub fn describe_cert(cert: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, p)) => format!(
            "subject '{}', identity {}",
            p.subject(),
            kes_crypto::identity_of_spki(p.tbs_certificate.subject_pki.raw)
        ),
        Err(_) => "an unparsable certificate".to_owned(),
    }
}

/// `tls.auth: on`: webpki's verification (chain to the trusted CAs, validity, the client
/// usage), with a log line that names the certificate and what is wrong with it, since the
/// client only sees a TLS alert.
#[derive(Debug)]
struct LoggingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for LoggingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                let why = match missing_usage(end_entity, Usage::Client) {
                    Some(missing) => format!("it lacks Extended Key Usage {missing}"),
                    None => e.to_string(),
                };
                tracing::warn!(certificate = %describe_cert(end_entity), reason = %why, "client certificate refused");
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub use conn::{serve_tls, Conn, ListenerLimits, RequestGuard, Served};
