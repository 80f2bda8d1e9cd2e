//! An internal certificate authority for a deployment: `kes ca new` creates it, `kes ca issue`
//! signs the three kinds of certificates a deployment needs, and `kes cluster local` uses the
//! same code for its throwaway cluster.
//!
//! - **server**: the KES API's certificate (EKU serverAuth, the host's DNS names and IPs);
//! - **client**: a client identity such as MinIO's (EKU clientAuth); its KES identity goes into
//!   `policy` or `admin.identity`;
//! - **node**: the node-to-node certificate (EKU serverAuth and clientAuth, because every node
//!   both calls and answers its peers), with the DNS name `kes-node-<id>` that binds it to its
//!   member id, plus the host's names.
//!
//! Keys are Ed25519, ECDSA P-256/P-384 or RSA 3072. rcgen cannot generate RSA keys with the
//! ring backend, so the `rsa` crate generates them and rcgen signs with them.

use crate::certgen::CertifiedKey;
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

/// Default lifetime of a CA made by `kes ca new`: ten years, so that rotating it is a planned
/// event rather than an outage.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Default lifetime of a certificate issued by `kes ca issue`: one year.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Certificates start this long before they are made, so that a host whose clock is a little
/// behind the issuer's accepts them at once.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The RSA modulus size offered: 3072 bits is what current guidance asks for through 2030.
const RSA_BITS: usize = 3072;

/// The DNS name a node certificate carries for member `id`.
pub fn node_dns_name(id: u64) -> String {
    format!("kes-node-{id}")
}

/// Failure to create, load or use a CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("RSA key generation failed: {0}")]
    Rsa(String),
    #[error("invalid DNS name '{0}'")]
    InvalidDnsName(String),
    #[error("invalid validity: {0}")]
    InvalidValidity(String),
    #[error(
        "the certificate would be valid until {requested}, but the CA certificate expires on \
         {ca_not_after}: choose a shorter validity or create a new CA"
    )]
    OutlivesCa {
        requested: String,
        ca_not_after: String,
    },
    #[error("the CA certificate expired on {0}: create a new CA with `kes ca new`")]
    CaExpired(String),
    #[error("not a CA certificate: {0}")]
    NotACa(String),
    #[error("invalid CA certificate: {0}")]
    InvalidCertificate(String),
    #[error("invalid CA private key: {0}")]
    InvalidKey(String),
    #[error("the CA private key does not belong to the CA certificate")]
    KeyMismatch,
    #[error("a server certificate needs at least one DNS name or IP address (--dns, --ip)")]
    NoServerNames,
    #[error("node ids start at 1")]
    InvalidNodeId,
}

/// The kind of key to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyType {
    Ed25519,
    /// The default: accepted by every TLS stack a deployment meets (Go, OpenSSL, rustls).
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa3072,
}

impl KeyType {
    /// The names `--key-type` accepts.
    pub const NAMES: [&'static str; 4] = ["ed25519", "ecdsa-p256", "ecdsa-p384", "rsa-3072"];

    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa3072 => "rsa-3072",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "ed25519" => Some(KeyType::Ed25519),
            "ecdsa-p256" | "p256" | "ecdsa" => Some(KeyType::EcdsaP256),
            "ecdsa-p384" | "p384" => Some(KeyType::EcdsaP384),
            "rsa-3072" | "rsa" | "rsa3072" => Some(KeyType::Rsa3072),
            _ => None,
        }
    }

    /// A fresh key pair of this type.
    pub fn generate(self) -> Result<KeyPair, CaError> {
        let alg: &'static SignatureAlgorithm = match self {
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa3072 => return generate_rsa(),
        };
        Ok(KeyPair::generate_for(alg)?)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn generate_rsa() -> Result<KeyPair, CaError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)
        .map_err(|e| CaError::Rsa(e.to_string()))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| CaError::Rsa(e.to_string()))?;
    let pkcs8 = PrivatePkcs8KeyDer::from(der.as_bytes());
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &pkcs8,
        &rcgen::PKCS_RSA_SHA256,
    )?)
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Server,
    Client,
    Node { id: u64 },
}

/// A certificate to issue.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub profile: Profile,
    /// The subject's common name; a default per profile when `None`.
    pub common_name: Option<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub valid_for: Duration,
    pub key_type: KeyType,
}

impl IssueRequest {
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            common_name: None,
            dns: Vec::new(),
            ips: Vec::new(),
            valid_for: DEFAULT_CERT_VALIDITY,
            key_type: KeyType::default(),
        }
    }
}

/// A CA: its certificate and private key.
pub struct Ca {
    /// rcgen's issuer; its own DER is a re-signed copy and never leaves this struct.
    issuer: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
    not_after: OffsetDateTime,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive (the high bit clear) and never zero, as RFC 5280 wants.
    bytes[0] &= 0x7f;
    bytes[15] |= 1;
    SerialNumber::from_slice(&bytes)
}

fn truncate(t: OffsetDateTime) -> Result<OffsetDateTime, CaError> {
    // X.509 times have whole seconds.
    t.replace_nanosecond(0)
        .map_err(|e| CaError::InvalidValidity(e.to_string()))
}

/// NotBefore and NotAfter for a certificate made now and valid for `valid_for`.
fn validity(valid_for: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
    if valid_for < Duration::from_secs(60) {
        return Err(CaError::InvalidValidity(format!(
            "{} is too short (one minute at least)",
            humanize(valid_for)
        )));
    }
    let now = truncate(OffsetDateTime::now_utc())?;
    let span =
        time::Duration::try_from(valid_for).map_err(|e| CaError::InvalidValidity(e.to_string()))?;
    let not_after = now
        .checked_add(span)
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| CaError::InvalidValidity(format!("{} is too long", humanize(valid_for))))?;
    let back =
        time::Duration::try_from(BACKDATE).map_err(|e| CaError::InvalidValidity(e.to_string()))?;
    Ok((now - back, not_after))
}

fn date(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn humanize(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn sans(dns: &[String], ips: &[IpAddr]) -> Result<Vec<SanType>, CaError> {
    let mut out = Vec::with_capacity(dns.len() + ips.len());
    for name in dns {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').enumerate().all(|(i, label)| {
                // A leading `*.` is a wildcard; other labels are letters, digits and hyphens.
                (i == 0 && label == "*")
                    || (!label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            });
        if !valid {
            return Err(CaError::InvalidDnsName(name.clone()));
        }
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|_| CaError::InvalidDnsName(name.clone()))?;
        out.push(SanType::DnsName(ia5));
    }
    out.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(out)
}

fn certified(cert: &rcgen::Certificate, key: &KeyPair) -> CertifiedKey {
    CertifiedKey {
        cert_der: cert.der().to_vec(),
        key_der: Zeroizing::new(key.serialize_der()),
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    }
}

impl Ca {
    /// A new self-signed root: CA:TRUE (critical, no path length limit), key usage keyCertSign
    /// and cRLSign, subject CN `name`.
    pub fn generate(name: &str, valid_for: Duration, key_type: KeyType) -> Result<Self, CaError> {
        let key = key_type.generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let (not_before, not_after) = validity(valid_for)?;
        params.not_before = not_before;
        params.not_after = not_after;
        let issuer = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: issuer.pem(),
            issuer,
            key,
            not_after,
        })
    }

    /// Loads a CA from its PEM certificate and PEM (PKCS#8) private key, checking that the
    /// certificate is a CA that may sign certificates and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let der: CertificateDer<'static> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or_else(|| CaError::InvalidCertificate("no PEM certificate found".into()))?
            .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
        let is_ca = x509
            .basic_constraints()
            .map_err(|e| CaError::InvalidCertificate(e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(CaError::NotACa(
                "its basic constraints do not say CA:TRUE".into(),
            ));
        }
        if let Ok(Some(ku)) = x509.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(CaError::NotACa(
                    "its key usage does not allow signing certificates (keyCertSign)".into(),
                ));
            }
        }
        let not_after = OffsetDateTime::from_unix_timestamp(x509.validity().not_after.timestamp())
            .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
        if not_after <= OffsetDateTime::now_utc() {
            return Err(CaError::CaExpired(date(not_after)));
        }
        if key_pem.contains("ENCRYPTED") {
            return Err(CaError::InvalidKey(
                "the key is encrypted; decrypt it with `openssl pkey`".into(),
            ));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            CaError::InvalidKey(format!(
                "{e} (a PKCS#8 PEM key of type Ed25519, ECDSA P-256/P-384 or RSA is expected)"
            ))
        })?;
        if key.public_key_der() != x509.tbs_certificate.subject_pki.raw {
            return Err(CaError::KeyMismatch);
        }
        let params = CertificateParams::from_ca_cert_der(&der)?;
        // Only the issuer's name, key identifier and key are used when signing; the copy made
        // here is never written out.
        let issuer = params.self_signed(&key)?;
        Ok(Self {
            issuer,
            key,
            cert_pem: cert_pem.to_owned(),
            not_after,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues a certificate with a fresh key for `req`.
    pub fn issue(&self, req: &IssueRequest) -> Result<CertifiedKey, CaError> {
        let mut dns = req.dns.clone();
        let (cn, ekus) = match req.profile {
            Profile::Server => {
                if req.dns.is_empty() && req.ips.is_empty() {
                    return Err(CaError::NoServerNames);
                }
                let cn = req
                    .dns
                    .first()
                    .cloned()
                    .or_else(|| req.ips.first().map(IpAddr::to_string))
                    .unwrap_or_default();
                (cn, vec![ExtendedKeyUsagePurpose::ServerAuth])
            }
            Profile::Client => (
                "kes client".to_owned(),
                vec![ExtendedKeyUsagePurpose::ClientAuth],
            ),
            Profile::Node { id } => {
                if id == 0 {
                    return Err(CaError::InvalidNodeId);
                }
                let name = node_dns_name(id);
                dns.retain(|d| *d != name);
                dns.insert(0, name.clone());
                (
                    name,
                    vec![
                        ExtendedKeyUsagePurpose::ServerAuth,
                        ExtendedKeyUsagePurpose::ClientAuth,
                    ],
                )
            }
        };
        let (not_before, not_after) = validity(req.valid_for)?;
        if not_after > self.not_after {
            return Err(CaError::OutlivesCa {
                requested: date(not_after),
                ca_not_after: date(self.not_after),
            });
        }
        let key = req.key_type.generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(req.common_name.as_deref().unwrap_or(&cn));
        params.serial_number = Some(random_serial());
        params.subject_alt_names = sans(&dns, &req.ips)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if req.key_type == KeyType::Rsa3072 && req.profile != Profile::Client {
            // TLS 1.2 RSA key exchange, which some older clients still offer, encrypts to the
            // server's key.
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = ekus;
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(certified(&cert, &key))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::*;

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    fn ca_der(ca: &Ca) -> Vec<u8> {
        CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn ca_is_a_ca_and_round_trips_through_pem() {
        let ca = Ca::generate("test CA", DEFAULT_CA_VALIDITY, KeyType::EcdsaP256).unwrap();
        let der = ca_der(&ca);
        let cert = parse(&der);
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint.is_none());
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.digital_signature());
        assert!(cert.extended_key_usage().unwrap().is_none());

        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let leaf = again
            .issue(&IssueRequest {
                dns: vec!["kes.example".into()],
                ..IssueRequest::new(Profile::Server)
            })
            .unwrap();
        let leaf = parse(&leaf.cert_der);
        assert_eq!(leaf.issuer(), cert.subject());
        assert!(leaf.verify_signature(Some(cert.public_key())).is_ok());
        // The AKI of the leaf is the CA's SKI, so chain builders find the issuer.
        let ski = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap();
        let aki = leaf
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(ski, aki);
    }

    #[test]
    fn every_key_type_issues_verifiable_certificates() {
        for kt in [
            KeyType::Ed25519,
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Rsa3072,
        ] {
            let ca = Ca::generate("ca", Duration::from_secs(3600 * 24), kt).unwrap();
            let der = ca_der(&ca);
            let ca_cert = parse(&der);
            let leaf = ca
                .issue(&IssueRequest {
                    key_type: kt,
                    valid_for: Duration::from_secs(3600),
                    ..IssueRequest::new(Profile::Node { id: 3 })
                })
                .unwrap();
            let cert = parse(&leaf.cert_der);
            assert!(
                cert.verify_signature(Some(ca_cert.public_key())).is_ok(),
                "{kt}"
            );
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            let san = cert.subject_alternative_name().unwrap().unwrap();
            assert_eq!(
                san.value.general_names[0],
                GeneralName::DNSName("kes-node-3")
            );
            if kt == KeyType::Rsa3072 {
                assert_eq!(cert.public_key().parsed().unwrap().key_size(), 3072);
            }
            // The key reloads with the algorithm it was made for.
            let ca2 = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
            ca2.issue(&IssueRequest {
                valid_for: Duration::from_secs(60),
                ..IssueRequest::new(Profile::Client)
            })
            .unwrap();
        }
    }

    #[test]
    fn profiles_set_usages_and_names() {
        let ca = Ca::generate("ca", DEFAULT_CA_VALIDITY, KeyType::Ed25519).unwrap();
        let server = ca
            .issue(&IssueRequest {
                dns: vec!["kes.example".into(), "*.kes.example".into()],
                ips: vec!["10.0.0.1".parse().unwrap()],
                ..IssueRequest::new(Profile::Server)
            })
            .unwrap();
        let c = parse(&server.cert_der);
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(!c.is_ca());
        let cn: Vec<_> = c.subject().iter_common_name().collect();
        assert_eq!(cn[0].as_str().unwrap(), "kes.example");

        let client = ca.issue(&IssueRequest::new(Profile::Client)).unwrap();
        let c = parse(&client.cert_der);
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(!eku.server_auth && eku.client_auth);
        assert_eq!(client.identity().unwrap().len(), 64);
        let v = c.validity();
        assert_eq!(
            v.not_after.timestamp() - v.not_before.timestamp(),
            (DEFAULT_CERT_VALIDITY + BACKDATE).as_secs() as i64
        );
    }

    #[test]
    fn bad_requests_are_refused_with_reasons() {
        let ca = Ca::generate("ca", Duration::from_secs(3600), KeyType::EcdsaP256).unwrap();
        let e = ca.issue(&IssueRequest::new(Profile::Server)).unwrap_err();
        assert!(matches!(e, CaError::NoServerNames));
        let e = ca
            .issue(&IssueRequest::new(Profile::Node { id: 0 }))
            .unwrap_err();
        assert!(matches!(e, CaError::InvalidNodeId));
        let e = ca.issue(&IssueRequest::new(Profile::Client)).unwrap_err();
        assert!(matches!(e, CaError::OutlivesCa { .. }), "{e}");
        for bad in ["", "a..b", "-a.b", "a b", "caf\u{e9}.example"] {
            let e = ca
                .issue(&IssueRequest {
                    dns: vec![bad.into()],
                    valid_for: Duration::from_secs(120),
                    ..IssueRequest::new(Profile::Server)
                })
                .unwrap_err();
            assert!(matches!(e, CaError::InvalidDnsName(_)), "{bad}: {e}");
        }
        let other = Ca::generate("other", Duration::from_secs(3600), KeyType::EcdsaP256).unwrap();
        let e = Ca::from_pem(ca.cert_pem(), &other.key_pem()).unwrap_err();
        assert!(matches!(e, CaError::KeyMismatch));
        let leaf = ca
            .issue(&IssueRequest {
                valid_for: Duration::from_secs(120),
                ..IssueRequest::new(Profile::Client)
            })
            .unwrap();
        let e = Ca::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
        assert!(matches!(e, CaError::NotACa(_)), "{e}");
        let e = Ca::generate("x", Duration::from_secs(1), KeyType::EcdsaP256).unwrap_err();
        assert!(matches!(e, CaError::InvalidValidity(_)));
    }
}
