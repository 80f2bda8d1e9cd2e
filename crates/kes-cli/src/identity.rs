//! `kes identity`: new API keys and certificates, identities of keys and certificates, and the
//! server's view of identities.

use crate::conn::{self, ConnArgs, ServerArg};
use crate::output::{self, outln, print_json, OutputArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kes_crypto::ApiKey;
use serde::Serialize;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Certificate lifetime of `kes identity new` when `--expiry` is not given, as in KES.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(720 * 3600);
const DEFAULT_KEY_FILE: &str = "private.key";
const DEFAULT_CERT_FILE: &str = "public.crt";

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IdentityCmd {
    #[command(subcommand)]
    pub cmd: Option<IdentitySub>,
    /// API key or certificate/private-key file to compute the identity of (as `kes identity of`);
    /// without it, a new API key is generated
    #[arg(value_name = "API-KEY|FILE")]
    pub input: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum IdentitySub {
    /// Create a new API key and, with --key/--cert, a matching private key and certificate
    New(NewArgs),
    /// Compute the identity of an API key, a certificate or an Ed25519 private key
    Of(OfArgs),
    /// Describe an identity, or the caller's own identity
    Info(InfoArgs),
    /// List identities
    Ls(LsArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct NewArgs {
    /// Certificate subject (common name); with no --key/--cert, the files default to
    /// ./private.key and ./public.crt
    #[arg(value_name = "SUBJECT")]
    pub subject: Option<String>,
    /// Where to write the private key
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Where to write the certificate
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// Add an IP address as subject alternative name (repeatable, comma-separated)
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    pub ip: Vec<IpAddr>,
    /// Add a DNS name as subject alternative name (repeatable, comma-separated)
    #[arg(long, value_name = "DOMAIN", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// How long the certificate is valid [default: 720h]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expiry: Option<Duration>,
    /// Encrypt the private key with a password (not supported)
    #[arg(long)]
    pub encrypt: bool,
    /// Overwrite existing files
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct OfArgs {
    /// An API key (kes:v1:...), a PEM certificate file or a PEM Ed25519 private key file
    #[arg(value_name = "API-KEY|FILE")]
    pub input: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The identity to describe; the caller's own when omitted
    #[arg(value_name = "IDENTITY")]
    pub identity: Option<String>,
    #[command(flatten)]
    pub server: ServerArg,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only identities starting with this prefix (a trailing '*' is allowed)
    #[arg(value_name = "PATTERN", default_value = "*")]
    pub pattern: String,
    #[command(flatten)]
    pub server: ServerArg,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

pub async fn run(cmd: IdentityCmd) -> anyhow::Result<()> {
    match (cmd.cmd, cmd.input) {
        (Some(IdentitySub::New(args)), _) => new(args),
        (Some(IdentitySub::Of(args)), _) => of(&args.input, args.json),
        (Some(IdentitySub::Info(args)), _) => info(args).await,
        (Some(IdentitySub::Ls(args)), _) => ls(args).await,
        (None, Some(input)) => of(&input, false),
        (None, None) => new(NewArgs::default()),
    }
}

/// Which files `kes identity new` writes, decided before anything is generated.
#[derive(Debug, PartialEq, Eq)]
pub struct NewPlan {
    pub files: Option<(PathBuf, PathBuf)>,
    pub expiry: Duration,
}

/// Checks the flag combination of `kes identity new`, as KES does.
pub fn plan_new(args: &NewArgs) -> anyhow::Result<NewPlan> {
    if args.encrypt {
        bail!(
            "'--encrypt' is not supported: encrypted PEM keys use an obsolete format; the key \
             file is written readable by its owner only (mode 0600)"
        );
    }
    let files = match (&args.key, &args.cert) {
        (Some(k), Some(c)) => Some((k.clone(), c.clone())),
        (Some(_), None) => {
            bail!("private key file specified but no certificate file: set the '--cert' flag")
        }
        (None, Some(_)) => {
            bail!("certificate file specified but no private key file: set the '--key' flag")
        }
        (None, None) if args.subject.is_some() => Some((
            PathBuf::from(DEFAULT_KEY_FILE),
            PathBuf::from(DEFAULT_CERT_FILE),
        )),
        (None, None) => None,
    };
    if files.is_none() {
        let needs_files = [
            (args.force, "--force"),
            (args.expiry.is_some(), "--expiry"),
            (!args.ip.is_empty(), "--ip"),
            (!args.dns.is_empty(), "--dns"),
        ];
        if let Some((_, flag)) = needs_files.iter().find(|(set, _)| *set) {
            bail!("'{flag}' requires a private key and certificate file: set the '--key' and '--cert' flags");
        }
    }
    let expiry = args.expiry.unwrap_or(DEFAULT_EXPIRY);
    if expiry.is_zero() {
        bail!("'--expiry' must be longer than zero");
    }
    Ok(NewPlan { files, expiry })
}

fn new(args: NewArgs) -> anyhow::Result<()> {
    let plan = plan_new(&args)?;
    if let (Some((key, cert)), false) = (&plan.files, args.force) {
        if key.exists() {
            bail!(
                "private key '{}' already exists: use --force to overwrite it",
                key.display()
            );
        }
        if cert.exists() {
            bail!(
                "certificate '{}' already exists: use --force to overwrite it",
                cert.display()
            );
        }
    }

    let api_key = ApiKey::generate();
    if let Some((key_path, cert_path)) = &plan.files {
        let subject = args.subject.as_deref().unwrap_or_default();
        let ck = kes_tls::certgen::api_key_server_certificate(
            &api_key,
            subject,
            &args.dns,
            &args.ip,
            plan.expiry,
        )
        .context("failed to generate certificate")?;
        write_file(key_path, ck.key_pem.as_bytes(), 0o600, args.force)
            .with_context(|| format!("failed to write private key '{}'", key_path.display()))?;
        if let Err(e) = write_file(cert_path, ck.cert_pem.as_bytes(), 0o644, args.force) {
            // A key without its certificate is useless and a secret lying around.
            let _ = std::fs::remove_file(key_path);
            return Err(e)
                .with_context(|| format!("failed to write certificate '{}'", cert_path.display()));
        }
    }

    let key_text = api_key.to_text();
    let identity = api_key.identity();
    outln!("Your API key:")?;
    outln!()?;
    outln!("   {key_text}")?;
    outln!()?;
    outln!("This is the only time it is shown. Keep it secret and secure!")?;
    outln!()?;
    outln!("Your identity:")?;
    outln!()?;
    outln!("   {identity}")?;
    outln!()?;
    outln!("The identity is not a secret. It can be shared. Any peer")?;
    outln!("needs this identity in order to verify your API key.")?;
    if let Some((key_path, cert_path)) = &plan.files {
        outln!()?;
        outln!(
            "The generated TLS private key is stored at: {}",
            key_path.display()
        )?;
        outln!(
            "The generated TLS certificate is stored at: {}",
            cert_path.display()
        )?;
    }
    outln!()?;
    outln!("The identity can be computed again via:")?;
    outln!()?;
    outln!("    kes identity of {key_text}")?;
    if let Some((_, cert_path)) = &plan.files {
        outln!("    kes identity of {}", cert_path.display())?;
    }
    Ok(())
}

/// Writes `data` to `path` with `mode`. Without `force` the file must not exist, checked
/// atomically by the open so a concurrent writer cannot be overwritten.
pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32, force: bool) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(mode);
        let mut file = opts.open(path)?;
        // The mode only applies to new files; an overwritten file keeps its old permissions,
        // which may be too open for a private key.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = opts.open(path)?;
        file.write_all(data)?;
        file.sync_all()
    }
}

/// What `kes identity of` found.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct IdentityOf {
    pub identity: String,
    /// Set when the input was an Ed25519 private key: the API key with the same identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// Computes the identity of an API key, a certificate file or a private key file. `read`
/// reads a file (a parameter for tests).
pub fn identity_of(
    input: &str,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> anyhow::Result<IdentityOf> {
    let input = input.trim();
    if input.starts_with("kes:v1:") {
        let key = ApiKey::parse(input).context("invalid API key")?;
        return Ok(IdentityOf {
            identity: key.identity(),
            api_key: None,
        });
    }
    let text = match read(Path::new(input)) {
        Ok(text) => text,
        Err(e) => {
            // kms-go accepts API keys without their prefix; so do we, but only when there
            // is no such file.
            if let Ok(key) = ApiKey::parse(input) {
                return Ok(IdentityOf {
                    identity: key.identity(),
                    api_key: None,
                });
            }
            bail!("failed to read '{input}': {e}");
        }
    };
    if text.contains("-----BEGIN CERTIFICATE-----") {
        let identity = kes_tls::certgen::pem_certificate_identity(&text)
            .with_context(|| format!("failed to parse certificate in '{input}'"))?;
        return Ok(IdentityOf {
            identity,
            api_key: None,
        });
    }
    if text.contains("PRIVATE KEY-----") {
        let key = ApiKey::from_pkcs8_pem(&text).with_context(|| {
            format!("'{input}' is not an unencrypted Ed25519 PKCS#8 private key")
        })?;
        return Ok(IdentityOf {
            identity: key.identity(),
            api_key: Some(key.to_text()),
        });
    }
    bail!("'{input}' contains neither a PEM certificate nor a PEM private key")
}

fn of(input: &str, json: bool) -> anyhow::Result<()> {
    let found = identity_of(input, &|p| std::fs::read_to_string(p))?;
    if json {
        return print_json(&found);
    }
    match &found.api_key {
        Some(key) => {
            outln!("API key:  {key}")?;
            outln!("Identity: {}", found.identity)
        }
        None => outln!("{}", found.identity),
    }
}

async fn info(args: InfoArgs) -> anyhow::Result<()> {
    let client = conn::client(args.server.server, &args.conn)?;
    let Some(identity) = args.identity else {
        let me = client
            .describe_self()
            .await
            .context("failed to describe own identity")?;
        if args.out.json {
            return print_json(&me);
        }
        outln!("{:<11} {}", "Identity", me.identity)?;
        outln!("{:<11} {}", "Created At", output::date(&me.created_at))?;
        outln!("{:<11} {}", "Role", if me.admin { "Admin" } else { "User" })?;
        if !me.created_by.is_empty() {
            outln!("{:<11} {}", "Created By", me.created_by)?;
        }
        if !me.policy.is_empty() {
            outln!()?;
            outln!("{:<11} {}", "Policy", me.policy)?;
            if !me.allow.is_empty() {
                outln!("{:<11}", "Allow")?;
                for pattern in me.allow.keys() {
                    outln!("{:<11} · {pattern}", "")?;
                }
            }
            if !me.deny.is_empty() {
                outln!("{:<11}", "Deny")?;
                for pattern in me.deny.keys() {
                    outln!("{:<11} · {pattern}", "")?;
                }
            }
        }
        return Ok(());
    };
    let desc = client
        .describe_identity(&identity)
        .await
        .with_context(|| format!("failed to describe identity '{identity}'"))?;
    if args.out.json {
        return print_json(&desc);
    }
    outln!("{:<11} {}", "Identity", identity)?;
    if !desc.policy.is_empty() {
        outln!("{:<11} {}", "Policy", desc.policy)?;
    }
    outln!("{:<11} {}", "Created At", output::date(&desc.created_at))?;
    outln!(
        "{:<11} {}",
        "Role",
        if desc.admin { "Admin" } else { "User" }
    )?;
    if !desc.created_by.is_empty() {
        outln!("{:<11} {}", "Created By", desc.created_by)?;
    }
    Ok(())
}

async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let client = conn::client(args.server.server, &args.conn)?;
    let list = client
        .list_identities(&args.pattern)
        .await
        .context("failed to list identities")?;
    let mut ids = list.identities;
    ids.sort();
    output::print_names("Identity", &ids, args.out.json)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(map: HashMap<String, String>) -> impl Fn(&Path) -> std::io::Result<String> {
        move |p: &Path| {
            map.get(&p.to_string_lossy().into_owned())
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    #[test]
    fn identity_of_keys_certs_and_private_keys() {
        let key = ApiKey::generate();
        let ck = kes_tls::certgen::api_key_certificate(&key).unwrap();
        let mut map = HashMap::new();
        map.insert("cert.pem".to_owned(), ck.cert_pem.clone());
        map.insert("key.pem".to_owned(), ck.key_pem.to_string());
        map.insert("junk.txt".to_owned(), "hello".to_owned());
        let read = files(map);

        let by_key = identity_of(&key.to_text(), &read).unwrap();
        assert_eq!(by_key.identity, key.identity());
        assert_eq!(by_key.api_key, None);

        let bare = key.to_text().trim_start_matches("kes:v1:").to_owned();
        assert_eq!(identity_of(&bare, &read).unwrap().identity, key.identity());

        assert_eq!(
            identity_of("cert.pem", &read).unwrap().identity,
            key.identity()
        );

        let by_private = identity_of("key.pem", &read).unwrap();
        assert_eq!(by_private.identity, key.identity());
        assert_eq!(by_private.api_key, Some(key.to_text()));

        let err = identity_of("junk.txt", &read).unwrap_err().to_string();
        assert!(err.contains("neither a PEM certificate"), "{err}");
        let err = identity_of("missing.pem", &read).unwrap_err().to_string();
        assert!(err.starts_with("failed to read 'missing.pem'"), "{err}");
        let err = format!("{:#}", identity_of("kes:v1:AAAA", &read).unwrap_err());
        assert!(err.starts_with("invalid API key"), "{err}");
    }

    #[test]
    fn new_flag_rules() {
        let plan = plan_new(&NewArgs::default()).unwrap();
        assert_eq!(plan.files, None);
        assert_eq!(plan.expiry, DEFAULT_EXPIRY);

        let plan = plan_new(&NewArgs {
            subject: Some("client".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            plan.files,
            Some(("private.key".into(), "public.crt".into()))
        );

        let err = plan_new(&NewArgs {
            key: Some("k".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("'--cert'"));

        let err = plan_new(&NewArgs {
            ip: vec!["10.0.0.1".parse().unwrap()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("'--ip' requires"));

        let err = plan_new(&NewArgs {
            key: Some("k".into()),
            cert: Some("c".into()),
            encrypt: true,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("not supported"));
    }

    #[test]
    fn writes_private_key_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_file(&path, b"one", 0o600, false).unwrap();
        assert!(write_file(&path, b"two", 0o600, false).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            write_file(&path, b"three", 0o600, true).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three");
    }
}
