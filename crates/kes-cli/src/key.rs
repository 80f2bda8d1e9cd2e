//! `kes key`: create, import, describe, list, delete, and use keys.

use crate::conn::{self, ConnArgs, ServerArg};
use crate::output::{self, outln, print_json, OutputArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kes_types::b64;
use std::io::{IsTerminal, Read};

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create one or more keys
    Create(CreateArgs),
    /// Import a key from its raw bytes
    Import(ImportArgs),
    /// Describe a key
    Info(NameArgs),
    /// List keys
    Ls(PatternArgs),
    /// Delete one or more keys
    Rm(CreateArgs),
    /// Encrypt a message
    Encrypt(EncryptArgs),
    /// Decrypt a ciphertext
    Decrypt(DecryptArgs),
    /// Generate a data encryption key
    Dek(DekArgs),
}

/// The connection flags every key command takes.
#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    #[command(flatten)]
    pub server: ServerArg,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Key names
    #[arg(value_name = "NAME", required = true, num_args = 1..)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Key name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The 32-byte key, base64-encoded; read from standard input when omitted, which keeps it
    /// out of the process list
    #[arg(value_name = "KEY")]
    pub key: Option<String>,
    /// The key's algorithm: AES256 or ChaCha20
    #[arg(long, value_name = "ALGORITHM", default_value = "AES256")]
    pub cipher: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    /// Key name
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct PatternArgs {
    /// Only keys starting with this prefix (a trailing '*' is allowed)
    #[arg(value_name = "PATTERN", default_value = "*")]
    pub pattern: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct EncryptArgs {
    /// Key name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The message to encrypt
    #[arg(value_name = "MESSAGE")]
    pub message: String,
    /// Associated data bound to the ciphertext, base64-encoded
    #[arg(value_name = "CONTEXT")]
    pub context: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// Key name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The ciphertext, base64-encoded
    #[arg(value_name = "CIPHERTEXT")]
    pub ciphertext: String,
    /// The associated data given when encrypting, base64-encoded
    #[arg(value_name = "CONTEXT")]
    pub context: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct DekArgs {
    /// Key name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Associated data bound to the ciphertext, base64-encoded
    #[arg(value_name = "CONTEXT")]
    pub context: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

fn client(c: &Common) -> anyhow::Result<kes_client::Client> {
    conn::client(c.server.server.clone(), &c.conn)
}

/// Context arguments are base64, as in KES's CLI, so binary contexts (and the canonical JSON
/// contexts MinIO uses) can be passed exactly.
fn context_bytes(context: &Option<String>) -> anyhow::Result<Vec<u8>> {
    match context.as_deref() {
        None | Some("") => Ok(Vec::new()),
        Some(c) => kes_types::b64::decode(c)
            .map_err(|e| anyhow::anyhow!("invalid context '{c}': not base64 ({e})")),
    }
}

pub async fn run(cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Create(a) => {
            let c = client(&a.common)?;
            for name in &a.names {
                c.create_key(name)
                    .await
                    .with_context(|| format!("failed to create key '{name}'"))?;
            }
            Ok(())
        }
        KeyCmd::Rm(a) => {
            let c = client(&a.common)?;
            for name in &a.names {
                c.delete_key(name)
                    .await
                    .with_context(|| format!("failed to remove key '{name}'"))?;
            }
            Ok(())
        }
        KeyCmd::Import(a) => {
            let text = match &a.key {
                Some(k) => k.clone(),
                None => read_stdin_key()?,
            };
            let key = b64::decode(text.trim())
                .map_err(|e| anyhow::anyhow!("invalid key: not base64: {e}"))?;
            let c = client(&a.common)?;
            c.import_key(&a.name, &key, &a.cipher)
                .await
                .with_context(|| format!("failed to import key '{}'", a.name))
        }
        KeyCmd::Info(a) => {
            let c = client(&a.common)?;
            let info = c
                .describe_key(&a.name)
                .await
                .with_context(|| format!("failed to describe key '{}'", a.name))?;
            if a.common.out.json {
                return print_json(&info);
            }
            outln!("{:<11} {}", "Name", info.name)?;
            outln!("{:<11} {}", "Algorithm", info.algorithm)?;
            outln!("{:<11} {}", "Date", output::date(&info.created_at))?;
            outln!("{:<11} {}", "Owner", info.created_by)
        }
        KeyCmd::Ls(a) => {
            let c = client(&a.common)?;
            let prefix = kes_types::list_prefix(&a.pattern);
            let mut names = c
                .list_keys_all(prefix)
                .await
                .context("failed to list keys")?;
            names.sort();
            output::print_names("Key", &names, a.common.out.json)
        }
        KeyCmd::Encrypt(a) => {
            let c = client(&a.common)?;
            let ciphertext = c
                .encrypt(&a.name, a.message.as_bytes(), &context_bytes(&a.context)?)
                .await
                .with_context(|| format!("failed to encrypt message with key '{}'", a.name))?;
            let ciphertext = b64::encode(&ciphertext);
            if a.common.out.json {
                return print_json(&serde_json::json!({ "ciphertext": ciphertext }));
            }
            outln!("{ciphertext}")
        }
        KeyCmd::Decrypt(a) => {
            let ciphertext = b64::decode(a.ciphertext.trim())
                .map_err(|e| anyhow::anyhow!("invalid ciphertext: not base64: {e}"))?;
            let c = client(&a.common)?;
            let plaintext = c
                .decrypt(&a.name, &ciphertext, &context_bytes(&a.context)?)
                .await
                .with_context(|| format!("failed to decrypt ciphertext with key '{}'", a.name))?;
            let plaintext = b64::encode(&plaintext);
            if a.common.out.json {
                return print_json(&serde_json::json!({ "plaintext": plaintext }));
            }
            outln!("{plaintext}")
        }
        KeyCmd::Dek(a) => {
            let c = client(&a.common)?;
            let dek = c
                .generate_key(&a.name, &context_bytes(&a.context)?)
                .await
                .with_context(|| {
                    format!(
                        "failed to generate data encryption key with key '{}'",
                        a.name
                    )
                })?;
            let plaintext = b64::encode(&dek.plaintext.0);
            let ciphertext = b64::encode(&dek.ciphertext.0);
            if a.common.out.json {
                // A struct, not a map, so the fields keep KES's order.
                #[derive(serde::Serialize)]
                struct Dek<'a> {
                    plaintext: &'a str,
                    ciphertext: &'a str,
                }
                return print_json(&Dek {
                    plaintext: &plaintext,
                    ciphertext: &ciphertext,
                });
            }
            outln!("plaintext:  {plaintext}")?;
            outln!("ciphertext: {ciphertext}")
        }
    }
}

/// A key is at most a few dozen characters; anything much longer on stdin is a mistake.
const MAX_STDIN_KEY: u64 = 4096;

fn read_stdin_key() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("no key given: pass it base64-encoded as an argument or on standard input");
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(MAX_STDIN_KEY)
        .read_to_string(&mut text)
        .context("failed to read the key from standard input")?;
    if text.trim().is_empty() {
        bail!("no key given: standard input is empty");
    }
    Ok(text)
}
