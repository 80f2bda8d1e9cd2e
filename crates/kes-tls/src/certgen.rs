//! Certificate generation with rcgen: the self-signed client certificate derived from a
//! `kes:v1:` API key, the self-signed certificates of `kes identity new` and `kes server --dev`,
//! and a throwaway CA that tests use to issue chains per run.
//!
//! RSA keys are not offered: rcgen cannot generate them with the ring backend, and KES itself
//! generates only Ed25519 (identities) and ECDSA P-256 (dev server) keys.

use kes_crypto::ApiKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// How long the certificate of an API key is valid, as in kms-go's `GenerateCertificate`.
pub const API_KEY_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// How long certificates issued by [`TestCa`] are valid.
const TEST_CERT_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// Failure to generate or inspect a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    #[error("failed to generate certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid DNS name '{0}'")]
    InvalidDnsName(String),
    #[error("invalid validity period: {0}")]
    InvalidValidity(String),
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
}

/// The kind of key pair to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// What `kes identity new` generates.
    #[default]
    Ed25519,
    /// What `kes server --dev` generates.
    EcdsaP256,
    EcdsaP384,
}

impl KeyKind {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

/// A certificate together with its PKCS#8 private key, in DER and PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_der: Vec<u8>,
    pub key_der: Zeroizing<Vec<u8>>,
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key must never end up in logs.
        f.debug_struct("CertifiedKey")
            .field("cert_der", &format_args!("{} bytes", self.cert_der.len()))
            .field("key_der", &"<redacted>")
            .finish()
    }
}

impl CertifiedKey {
    fn new(cert: &rcgen::Certificate, key: &KeyPair) -> Self {
        Self {
            cert_der: cert.der().to_vec(),
            key_der: Zeroizing::new(key.serialize_der()),
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        }
    }

    /// The KES identity of this certificate's public key.
    pub fn identity(&self) -> Result<String, CertGenError> {
        certificate_identity(&self.cert_der)
    }
}

/// A random positive serial of at most 128 bits, as Go's `GenerateCertificate` draws it.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // A zero serial is not allowed by RFC 5280; the odds are negligible but free to rule out.
    bytes[15] |= 1;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, validity: Duration) -> Result<(), CertGenError> {
    let now = OffsetDateTime::now_utc();
    // X.509 times have whole seconds; truncating keeps NotBefore from lying in the future.
    let now = now
        .replace_nanosecond(0)
        .map_err(|e| CertGenError::InvalidValidity(e.to_string()))?;
    let span = time::Duration::try_from(validity)
        .map_err(|e| CertGenError::InvalidValidity(e.to_string()))?;
    let not_after = now
        .checked_add(span)
        .ok_or_else(|| CertGenError::InvalidValidity(format!("{validity:?} is too long")))?;
    params.not_before = now;
    params.not_after = not_after;
    Ok(())
}

fn subject(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if !cn.is_empty() {
        dn.push(DnType::CommonName, cn);
    }
    dn
}

fn sans(dns: &[String], ips: &[IpAddr]) -> Result<Vec<SanType>, CertGenError> {
    let mut out = Vec::with_capacity(dns.len() + ips.len());
    for name in dns {
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|_| CertGenError::InvalidDnsName(name.clone()))?;
        out.push(SanType::DnsName(ia5));
    }
    out.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(out)
}

/// Parameters of a leaf certificate for TLS servers and clients.
fn leaf_params(
    cn: &str,
    dns: &[String],
    ips: &[IpAddr],
    valid_for: Duration,
    server: bool,
) -> Result<CertificateParams, CertGenError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(cn);
    params.serial_number = Some(random_serial());
    params.subject_alt_names = sans(dns, ips)?;
    // Go sets BasicConstraintsValid with IsCA=false; rcgen's ExplicitNoCa writes the same.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    validity(&mut params, valid_for)?;
    Ok(params)
}

fn api_key_pair(key: &ApiKey) -> Result<KeyPair, CertGenError> {
    let der = key.pkcs8_der();
    let pkcs8 = PrivatePkcs8KeyDer::from(der.as_slice());
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &pkcs8,
        &rcgen::PKCS_ED25519,
    )?)
}

/// The self-signed client certificate for an API key, as kms-go's `GenerateCertificate` makes
/// it: Ed25519, random 128-bit serial, CN = the identity, valid from now for 90 days,
/// digitalSignature, clientAuth, not a CA. It differs on every call; its identity does not.
pub fn api_key_certificate(key: &ApiKey) -> Result<CertifiedKey, CertGenError> {
    let key_pair = api_key_pair(key)?;
    let params = leaf_params(&key.identity(), &[], &[], API_KEY_CERT_VALIDITY, false)?;
    let cert = params.self_signed(&key_pair)?;
    Ok(CertifiedKey::new(&cert, &key_pair))
}

/// A self-signed certificate for the API key's Ed25519 key, usable by servers and clients:
/// what `kes identity new --key --cert` writes, so the files and the printed API key are the
/// same identity.
pub fn api_key_server_certificate(
    key: &ApiKey,
    subject: &str,
    dns: &[String],
    ips: &[IpAddr],
    valid_for: Duration,
) -> Result<CertifiedKey, CertGenError> {
    let key_pair = api_key_pair(key)?;
    let params = leaf_params(subject, dns, ips, valid_for, true)?;
    let cert = params.self_signed(&key_pair)?;
    Ok(CertifiedKey::new(&cert, &key_pair))
}

/// A self-signed certificate with a fresh key, valid from now for `valid_for`, for server and
/// client authentication (`kes server --dev`, tests).
pub fn self_signed(
    subject: &str,
    dns: &[String],
    ips: &[IpAddr],
    valid_for: Duration,
    key_kind: KeyKind,
) -> Result<CertifiedKey, CertGenError> {
    let key_pair = KeyPair::generate_for(key_kind.algorithm())?;
    let params = leaf_params(subject, dns, ips, valid_for, true)?;
    let cert = params.self_signed(&key_pair)?;
    Ok(CertifiedKey::new(&cert, &key_pair))
}

/// The KES identity of a DER certificate: hex SHA-256 of its SubjectPublicKeyInfo.
pub fn certificate_identity(cert_der: &[u8]) -> Result<String, CertGenError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CertGenError::InvalidCertificate(e.to_string()))?;
    Ok(kes_crypto::identity_of_spki(
        cert.tbs_certificate.subject_pki.raw,
    ))
}

/// The KES identity of the first certificate in a PEM text.
pub fn pem_certificate_identity(pem: &str) -> Result<String, CertGenError> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| CertGenError::InvalidCertificate("no PEM certificate found".into()))?
        .map_err(|e| CertGenError::InvalidCertificate(e.to_string()))?;
    certificate_identity(der.as_ref())
}

/// A certificate authority generated per test run, so integration tests use real chains
/// without checked-in keys.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    validity: Duration,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new ECDSA P-256 root CA, valid for a day.
    pub fn new() -> Result<Self, CertGenError> {
        Self::with_validity("kes test CA", TEST_CERT_VALIDITY)
    }

    /// A new ECDSA P-256 root CA named `name`; it and the certificates it issues are valid for
    /// `valid_for` (a local cluster's CA, for example).
    pub fn with_validity(name: &str, valid_for: Duration) -> Result<Self, CertGenError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(name);
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, valid_for)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert,
            key,
            validity: valid_for,
        })
    }

    /// Issues a leaf certificate for server and client authentication with a fresh key.
    pub fn issue(
        &self,
        cn: &str,
        dns: &[String],
        ips: &[IpAddr],
        key_kind: KeyKind,
    ) -> Result<CertifiedKey, CertGenError> {
        let key_pair = KeyPair::generate_for(key_kind.algorithm())?;
        let mut params = leaf_params(cn, dns, ips, self.validity, true)?;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key_pair, &self.cert, &self.key)?;
        Ok(CertifiedKey::new(&cert, &key_pair))
    }

    /// Issues a leaf certificate for a caller-supplied PKCS#8 key (RSA keys, which rcgen cannot
    /// generate, come from elsewhere).
    pub fn issue_with_key_der(
        &self,
        cn: &str,
        pkcs8_der: &[u8],
    ) -> Result<CertifiedKey, CertGenError> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8_der.to_vec());
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
            .or_else(|_| KeyPair::try_from(pkcs8_der))?;
        let mut params = leaf_params(cn, &[], &[], self.validity, true)?;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key_pair, &self.cert, &self.key)?;
        Ok(CertifiedKey::new(&cert, &key_pair))
    }

    /// The CA certificate as PEM, for `tls.ca` files and client root stores.
    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate as DER.
    pub fn ca_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::*;

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    #[test]
    fn api_key_certificate_matches_identity() {
        let key = ApiKey::generate();
        let ck = api_key_certificate(&key).unwrap();
        let cert = parse(&ck.cert_der);

        let spki_identity = kes_crypto::identity_of_spki(cert.tbs_certificate.subject_pki.raw);
        assert_eq!(spki_identity, key.identity());
        assert_eq!(ck.identity().unwrap(), key.identity());
        assert_eq!(
            pem_certificate_identity(&ck.cert_pem).unwrap(),
            key.identity()
        );

        let cn: Vec<_> = cert.subject().iter_common_name().collect();
        assert_eq!(cn.len(), 1);
        assert_eq!(cn[0].as_str().unwrap(), key.identity());
        assert_eq!(cert.subject(), cert.issuer(), "self-signed");
        assert!(!cert.is_ca());
        assert_eq!(
            cert.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ED25519
        );

        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.value.digital_signature());
        assert!(!ku.value.key_cert_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.client_auth);
        assert!(!eku.value.server_auth);

        let v = cert.validity();
        let span = v.not_after.timestamp() - v.not_before.timestamp();
        assert_eq!(span, 90 * 24 * 3600);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((v.not_before.timestamp() - now).abs() < 120);

        // The key in the bundle is the API key's own key.
        assert_eq!(ck.key_der.as_slice(), key.pkcs8_der().as_slice());
        assert!(ck.key_pem.contains("BEGIN PRIVATE KEY"));
        assert!(ck.cert_pem.contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn api_key_certificates_differ_but_share_identity() {
        let key = ApiKey::generate();
        let a = api_key_certificate(&key).unwrap();
        let b = api_key_certificate(&key).unwrap();
        assert_ne!(
            parse(&a.cert_der).raw_serial(),
            parse(&b.cert_der).raw_serial()
        );
        assert_eq!(a.identity().unwrap(), b.identity().unwrap());
        assert!(parse(&a.cert_der).raw_serial().len() <= 17);
    }

    #[test]
    fn self_signed_has_sans_and_both_usages() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        for kind in [KeyKind::Ed25519, KeyKind::EcdsaP256, KeyKind::EcdsaP384] {
            let ck = self_signed(
                "localhost",
                &["localhost".into()],
                &ips,
                Duration::from_secs(3600),
                kind,
            )
            .unwrap();
            let cert = parse(&ck.cert_der);
            let eku = cert.extended_key_usage().unwrap().unwrap();
            assert!(eku.value.server_auth && eku.value.client_auth);
            let san = cert.subject_alternative_name().unwrap().unwrap();
            let names = &san.value.general_names;
            assert!(names.contains(&GeneralName::DNSName("localhost")));
            assert!(names
                .iter()
                .any(|n| matches!(n, GeneralName::IPAddress(b) if *b == [127, 0, 0, 1])));
            assert!(!cert.is_ca());
            let v = cert.validity();
            assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), 3600);
        }
    }

    #[test]
    fn api_key_server_certificate_keeps_identity() {
        let key = ApiKey::generate();
        let ck = api_key_server_certificate(
            &key,
            "client-1",
            &[],
            &["10.0.0.1".parse().unwrap()],
            Duration::from_secs(720 * 3600),
        )
        .unwrap();
        assert_eq!(ck.identity().unwrap(), key.identity());
        let cert = parse(&ck.cert_der);
        let cn: Vec<_> = cert.subject().iter_common_name().collect();
        assert_eq!(cn[0].as_str().unwrap(), "client-1");
    }

    #[test]
    fn invalid_dns_name_is_an_error() {
        let err = self_signed(
            "x",
            &["bad\u{e9}name".into()],
            &[],
            Duration::from_secs(60),
            KeyKind::Ed25519,
        )
        .unwrap_err();
        assert!(matches!(err, CertGenError::InvalidDnsName(_)));
    }

    #[test]
    fn test_ca_issues_chained_certificates() {
        let ca = TestCa::new().unwrap();
        let ca_cert_der = ca.ca_der();
        let ca_cert = parse(&ca_cert_der);
        assert!(ca_cert.is_ca());
        assert!(ca.ca_pem().contains("BEGIN CERTIFICATE"));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.ca_der())).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::provider(),
        )
        .build()
        .unwrap();

        for kind in [KeyKind::Ed25519, KeyKind::EcdsaP256, KeyKind::EcdsaP384] {
            let leaf = ca
                .issue("server", &["localhost".into()], &[], kind)
                .unwrap();
            let cert = parse(&leaf.cert_der);
            assert_eq!(cert.issuer(), ca_cert.subject());
            assert!(!cert.is_ca());
            verifier
                .verify_server_cert(
                    &CertificateDer::from(leaf.cert_der.clone()),
                    &[],
                    &ServerName::try_from("localhost").unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap();
            let has_aki = cert.extensions().iter().any(|e| {
                matches!(
                    e.parsed_extension(),
                    ParsedExtension::AuthorityKeyIdentifier(_)
                )
            });
            assert!(has_aki);
        }
    }
}
