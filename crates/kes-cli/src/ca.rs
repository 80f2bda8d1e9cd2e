//! `kes ca`: an internal certificate authority for a deployment. `kes ca new` writes the CA's
//! key and certificate; `kes ca issue server|client|node` writes certificates signed by it with
//! the usages each role needs (see `kes_tls::ca`).

use crate::identity::write_file;
use crate::output::{outln, print_json};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kes_tls::ca::{Ca, IssueRequest, KeyType, Profile, DEFAULT_CA_VALIDITY};
use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Create a CA: a private key (mode 0600) and a self-signed CA certificate
    New(NewArgs),
    /// Issue a certificate signed by the CA
    Issue {
        #[command(subcommand)]
        kind: IssueKind,
    },
}

#[derive(Subcommand, Debug)]
pub enum IssueKind {
    /// A KES API server certificate (serverAuth) for the host's DNS names and IPs
    Server(IssueArgs),
    /// A client certificate (clientAuth); prints its identity for `policy` or `admin.identity`
    Client(IssueArgs),
    /// A node-to-node certificate (serverAuth and clientAuth) with the DNS name kes-node-<ID>
    Node(NodeArgs),
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    KeyType::from_name(s).ok_or_else(|| {
        format!(
            "unknown key type '{s}': use one of {}",
            KeyType::NAMES.join(", ")
        )
    })
}

fn parse_validity(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}); examples: 8760h, 90d, 10y"))?;
    if d < Duration::from_secs(60) {
        return Err(format!("'{s}' is too short: at least one minute"));
    }
    Ok(d)
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// Where to write the CA certificate
    #[arg(long, value_name = "PATH", default_value = "ca.cert")]
    pub cert: PathBuf,
    /// Where to write the CA private key (mode 0600)
    #[arg(long, value_name = "PATH", default_value = "ca.key")]
    pub key: PathBuf,
    /// The CA's common name
    #[arg(long, value_name = "NAME", default_value = "kes CA")]
    pub name: String,
    /// How long the CA certificate is valid [default: 10y]
    #[arg(long, value_name = "DURATION", value_parser = parse_validity)]
    pub expiry: Option<Duration>,
    /// Key type: ed25519, ecdsa-p256, ecdsa-p384 or rsa-3072
    #[arg(long, value_name = "TYPE", value_parser = parse_key_type, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Overwrite existing files
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct IssueArgs {
    /// The CA certificate
    #[arg(
        long,
        value_name = "PATH",
        default_value = "ca.cert",
        env = "KES_CA_CERT"
    )]
    pub ca_cert: PathBuf,
    /// The CA private key
    #[arg(
        long,
        value_name = "PATH",
        default_value = "ca.key",
        env = "KES_CA_KEY"
    )]
    pub ca_key: PathBuf,
    /// Where to write the certificate [default: server.cert, client.cert, node<ID>.cert]
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// Where to write the private key, mode 0600 [default: server.key, client.key, node<ID>.key]
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// DNS name to include as subject alternative name (repeatable, comma-separated)
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// IP address to include as subject alternative name (repeatable, comma-separated)
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    pub ip: Vec<IpAddr>,
    /// Subject common name [default: the first DNS name or IP; `kes client`; kes-node-<ID>]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How long the certificate is valid (no longer than the CA) [default: 1y]
    #[arg(long, value_name = "DURATION", value_parser = parse_validity)]
    pub expiry: Option<Duration>,
    /// Key type: ed25519, ecdsa-p256, ecdsa-p384 or rsa-3072
    #[arg(long, value_name = "TYPE", value_parser = parse_key_type, default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Overwrite existing files
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The node's member id (cluster.node_id)
    #[arg(long, value_name = "ID")]
    pub id: u64,
    #[command(flatten)]
    pub common: IssueArgs,
}

/// What was written, for `--json`.
#[derive(Debug, Serialize)]
struct Written {
    cert: PathBuf,
    key: PathBuf,
    identity: String,
    not_after: String,
}

pub fn run(cmd: CaCmd) -> anyhow::Result<()> {
    match cmd {
        CaCmd::New(a) => new(a),
        CaCmd::Issue { kind } => match kind {
            IssueKind::Server(a) => issue(Profile::Server, a),
            IssueKind::Client(a) => issue(Profile::Client, a),
            IssueKind::Node(a) => {
                if a.id == 0 {
                    bail!("--id must be 1 or more (node ids start at 1)");
                }
                issue(Profile::Node { id: a.id }, a.common)
            }
        },
    }
}

/// Refuses to overwrite without --force and to write into a folder that does not exist, before
/// anything is generated.
fn check_targets(paths: &[&Path], force: bool) -> anyhow::Result<()> {
    for p in paths {
        if p.exists() && !force {
            bail!(
                "'{}' already exists: use --force to overwrite it",
                p.display()
            );
        }
        if p.is_dir() {
            bail!("'{}' is a directory: give a file name", p.display());
        }
        if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !parent.is_dir() {
                bail!(
                    "cannot write '{}': the folder '{}' does not exist",
                    p.display(),
                    parent.display()
                );
            }
        }
    }
    if paths.windows(2).any(|w| w[0] == w[1]) {
        bail!("the certificate and the key must be different files");
    }
    Ok(())
}

/// Writes the key (0600) and then the certificate (0644); a failure after the key removes it.
fn write_pair(
    key: &Path,
    key_pem: &str,
    cert: &Path,
    cert_pem: &str,
    force: bool,
) -> anyhow::Result<()> {
    write_file(key, key_pem.as_bytes(), 0o600, force)
        .with_context(|| format!("failed to write private key '{}'", key.display()))?;
    if let Err(e) = write_file(cert, cert_pem.as_bytes(), 0o644, force) {
        let _ = std::fs::remove_file(key);
        return Err(e).with_context(|| format!("failed to write certificate '{}'", cert.display()));
    }
    Ok(())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn new(a: NewArgs) -> anyhow::Result<()> {
    check_targets(&[&a.cert, &a.key], a.force)?;
    if a.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let ca = Ca::generate(&a.name, a.expiry.unwrap_or(DEFAULT_CA_VALIDITY), a.key_type)
        .context("failed to create the CA")?;
    write_pair(&a.key, &ca.key_pem(), &a.cert, ca.cert_pem(), a.force)?;
    let identity = kes_tls::certgen::pem_certificate_identity(ca.cert_pem())?;
    if a.json {
        return print_json(&Written {
            cert: a.cert,
            key: a.key,
            identity,
            not_after: rfc3339(ca.not_after()),
        });
    }
    outln!("CA certificate  {}", a.cert.display())?;
    outln!(
        "CA private key  {} (mode 0600; keep it offline if you can)",
        a.key.display()
    )?;
    outln!("Valid until     {}", rfc3339(ca.not_after()))?;
    outln!()?;
    outln!("Issue certificates with:")?;
    let flags = format!(
        "--ca-cert {} --ca-key {}",
        a.cert.display(),
        a.key.display()
    );
    outln!("  kes ca issue server {flags} --dns <host name> --ip <host IP>")?;
    outln!("  kes ca issue node   {flags} --id <node id> --dns <host name>")?;
    outln!("  kes ca issue client {flags} --name minio")
}

fn read(path: &Path, what: &str, flag: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "failed to read the {what} '{}' (create a CA with `kes ca new`, or point {flag} at it)",
            path.display()
        )
    })
}

fn issue(profile: Profile, a: IssueArgs) -> anyhow::Result<()> {
    let (cert, key) = match profile {
        Profile::Server => ("server.cert".to_owned(), "server.key".to_owned()),
        Profile::Client => ("client.cert".to_owned(), "client.key".to_owned()),
        Profile::Node { id } => (format!("node{id}.cert"), format!("node{id}.key")),
    };
    let cert = a.cert.clone().unwrap_or_else(|| PathBuf::from(cert));
    let key = a.key.clone().unwrap_or_else(|| PathBuf::from(key));
    check_targets(&[&cert, &key], a.force)?;
    if profile == Profile::Server && a.dns.is_empty() && a.ip.is_empty() {
        bail!("a server certificate needs the names clients connect to: set --dns and/or --ip");
    }
    let ca_cert = read(&a.ca_cert, "CA certificate", "--ca-cert")?;
    let ca_key = read(&a.ca_key, "CA private key", "--ca-key")?;
    let ca = Ca::from_pem(&ca_cert, &ca_key).with_context(|| {
        format!(
            "cannot use '{}' and '{}' as the CA",
            a.ca_cert.display(),
            a.ca_key.display()
        )
    })?;
    let mut req = IssueRequest::new(profile);
    req.common_name = a.name.clone();
    req.dns = a.dns.clone();
    req.ips = a.ip.clone();
    req.key_type = a.key_type;
    if let Some(e) = a.expiry {
        req.valid_for = e;
    }
    let issued = ca.issue(&req).context("failed to issue the certificate")?;
    write_pair(&key, &issued.key_pem, &cert, &issued.cert_pem, a.force)?;
    let identity = issued.identity()?;
    let not_after = x509_not_after(&issued.cert_der);
    if a.json {
        return print_json(&Written {
            cert,
            key,
            identity,
            not_after,
        });
    }
    outln!("Certificate  {}", cert.display())?;
    outln!("Private key  {} (mode 0600)", key.display())?;
    outln!("Valid until  {not_after}")?;
    outln!("Identity     {identity}")?;
    match profile {
        Profile::Client => {
            outln!()?;
            outln!("Grant it access with a policy (`policy: <name>: identities: [{identity}]`),")?;
            outln!(
                "`kes policy assign <name> {identity}`, or make it the admin (`admin.identity`)."
            )
        }
        Profile::Node { id } => outln!(
            "\nSet cluster.node_id: {id}, cluster.tls.cert and cluster.tls.key to these files and \
             cluster.tls.ca to the CA certificate."
        ),
        Profile::Server => Ok(()),
    }
}

fn x509_not_after(der: &[u8]) -> String {
    kes_tls::check::certificate_not_after(der)
        .map(rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        assert!(parse_key_type("rsa-3072").is_ok());
        let e = parse_key_type("dsa").unwrap_err();
        assert!(e.contains("ed25519, ecdsa-p256"), "{e}");
        assert_eq!(
            parse_validity("90d").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert!(parse_validity("10s").unwrap_err().contains("too short"));
        assert!(parse_validity("soon")
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn targets_are_checked_before_generating() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("a");
        std::fs::write(&existing, "x").unwrap();
        let e = check_targets(&[&existing], false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        check_targets(&[&existing], true).unwrap();
        let nested = dir.path().join("no/such/file");
        let e = check_targets(&[&nested], false).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let same = dir.path().join("b");
        assert!(check_targets(&[&same, &same], false).is_err());
    }
}
