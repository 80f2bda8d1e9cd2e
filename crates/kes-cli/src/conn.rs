//! How the client commands find and authenticate to the server: flags first, then the
//! environment variables KES and MinIO use, in KES's order of precedence.

use anyhow::{bail, Context};
use clap::Args;
use kes_client::Client;
use std::path::PathBuf;

/// Endpoint variables, first match wins.
pub const SERVER_ENV: &[&str] = &["MINIO_KES_SERVER", "KES_SERVER", "MINIO_KMS_KES_ENDPOINT"];
/// API key variables, first match wins.
pub const API_KEY_ENV: &[&str] = &["MINIO_KES_API_KEY", "KES_API_KEY", "MINIO_KMS_KES_API_KEY"];
/// Client private key file variables, first match wins.
pub const KEY_FILE_ENV: &[&str] = &[
    "MINIO_KES_KEY_FILE",
    "KES_CLIENT_KEY",
    "MINIO_KES_CLIENT_KEY",
];
/// Client certificate file variables, first match wins.
pub const CERT_FILE_ENV: &[&str] = &[
    "MINIO_KES_CERT_FILE",
    "KES_CLIENT_CERT",
    "MINIO_KES_CLIENT_CERT",
];
/// CA file variables (an addition to KES, which only trusts the system roots).
pub const CA_ENV: &[&str] = &["KES_CA", "MINIO_KMS_KES_CAPATH"];
/// Used when neither a flag nor a variable names a server.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7373";

/// `-s/--server`, separate from [`ConnArgs`] because `kes status` uses `-s` for `--short`.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArg {
    /// Server endpoint(s), comma-separated
    /// [env: MINIO_KES_SERVER, KES_SERVER, MINIO_KMS_KES_ENDPOINT] [default: 127.0.0.1:7373]
    #[arg(short = 's', long = "server", value_name = "HOST:PORT")]
    pub server: Option<String>,
}

/// Credentials and server verification, shared by every client command.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// API key to authenticate with [env: MINIO_KES_API_KEY, KES_API_KEY, MINIO_KMS_KES_API_KEY]
    #[arg(short = 'a', long = "api-key", value_name = "KEY")]
    pub api_key: Option<String>,
    /// Client certificate (PEM) [env: MINIO_KES_CERT_FILE, KES_CLIENT_CERT, MINIO_KES_CLIENT_CERT]
    #[arg(long = "client-cert", value_name = "PATH")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) [env: MINIO_KES_KEY_FILE, KES_CLIENT_KEY, MINIO_KES_CLIENT_KEY]
    #[arg(long = "client-key", value_name = "PATH")]
    pub client_key: Option<PathBuf>,
    /// CA certificate file or directory that verifies the server, in addition to the system
    /// roots [env: KES_CA, MINIO_KMS_KES_CAPATH]
    #[arg(long = "ca", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// Skip verification of the server's certificate
    #[arg(short = 'k', long = "insecure")]
    pub insecure: bool,
    /// Enclave name; accepted for compatibility, it has no effect
    #[arg(short = 'e', long = "enclave", value_name = "NAME", hide = true)]
    pub enclave: Option<String>,
}

/// A value and where it came from, so errors can name the flag or variable to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: String,
}

/// The first of `names` that is set to a non-empty value.
pub fn first_env(
    names: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<Sourced<String>> {
    names.iter().find_map(|name| {
        lookup(name)
            .filter(|v| !v.trim().is_empty())
            .map(|value| Sourced {
                value,
                source: (*name).to_owned(),
            })
    })
}

/// A flag's value if given, else the first set variable.
fn pick(
    flag: Option<String>,
    flag_name: &str,
    env: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<Sourced<String>> {
    match flag.filter(|v| !v.trim().is_empty()) {
        Some(value) => Some(Sourced {
            value,
            source: flag_name.to_owned(),
        }),
        None => first_env(env, lookup),
    }
}

/// How the client proves its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    ApiKey(Sourced<String>),
    Files { cert: PathBuf, key: PathBuf },
}

/// Everything needed to build a client, resolved from flags and environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub credentials: Credentials,
    pub ca: Option<PathBuf>,
    pub insecure: bool,
}

/// Resolves flags and variables into [`Settings`]; `lookup` reads the environment (a
/// parameter so the precedence rules can be tested).
pub fn resolve(
    server: Option<String>,
    conn: &ConnArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Settings> {
    let server = pick(server, "--server", SERVER_ENV, lookup);
    let (list, source) = match &server {
        Some(s) => (s.value.as_str(), s.source.as_str()),
        None => (DEFAULT_SERVER, "the default"),
    };
    let endpoints = kes_client::parse_endpoints(list);
    if endpoints.is_empty() {
        bail!("no server endpoint in {source} ('{list}')");
    }

    let api_key = pick(conn.api_key.clone(), "--api-key", API_KEY_ENV, lookup);
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
    let cert = pick(
        path(&conn.client_cert),
        "--client-cert",
        CERT_FILE_ENV,
        lookup,
    );
    let key = pick(path(&conn.client_key), "--client-key", KEY_FILE_ENV, lookup);

    let credentials = match (api_key, cert, key) {
        (Some(api), None, None) => Credentials::ApiKey(api),
        (Some(api), cert, key) => {
            let other = cert.or(key).map(|s| s.source).unwrap_or_default();
            bail!(
                "an API key ({}) cannot be combined with a client certificate or key ({other})",
                api.source
            );
        }
        (None, Some(cert), Some(key)) => Credentials::Files {
            cert: PathBuf::from(cert.value),
            key: PathBuf::from(key.value),
        },
        (None, Some(cert), None) => bail!(
            "a client certificate ({}) needs its private key: set --client-key or {}",
            cert.source,
            KEY_FILE_ENV.join(", ")
        ),
        (None, None, Some(key)) => bail!(
            "a client private key ({}) needs its certificate: set --client-cert or {}",
            key.source,
            CERT_FILE_ENV.join(", ")
        ),
        (None, None, None) => bail!(
            "no client credentials: set an API key (--api-key or KES_API_KEY) or a client \
             certificate and key (KES_CLIENT_CERT and KES_CLIENT_KEY)"
        ),
    };

    let ca = conn
        .ca
        .clone()
        .or_else(|| first_env(CA_ENV, lookup).map(|s| PathBuf::from(s.value)));

    Ok(Settings {
        endpoints,
        credentials,
        ca,
        insecure: conn.insecure,
    })
}

/// Reads the process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Builds a client from flags and the process environment.
pub fn client(server: Option<String>, conn: &ConnArgs) -> anyhow::Result<Client> {
    let settings = resolve(server, conn, &process_env)?;
    build(&settings)
}

pub fn build(settings: &Settings) -> anyhow::Result<Client> {
    let mut builder = Client::builder(&settings.endpoints).insecure(settings.insecure);
    match &settings.credentials {
        Credentials::ApiKey(text) => {
            let key = kes_crypto::ApiKey::parse(text.value.trim())
                .with_context(|| format!("invalid API key ({})", text.source))?;
            builder = builder.api_key(&key);
        }
        Credentials::Files { cert, key } => builder = builder.cert_files(cert, key),
    }
    if let Some(ca) = &settings.ca {
        builder = builder.ca_file(ca);
    }
    Ok(builder.build()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    // Resolution treats the key as opaque text; parsing happens when the client is built.
    const KEY: &str = "kes:v1:opaque";

    #[test]
    fn server_precedence() {
        let conn = ConnArgs {
            api_key: Some(KEY.into()),
            ..Default::default()
        };
        let s = resolve(None, &conn, &env(&[])).unwrap();
        assert_eq!(s.endpoints, vec!["https://127.0.0.1:7373"]);

        let vars = env(&[
            ("MINIO_KMS_KES_ENDPOINT", "c:3"),
            ("KES_SERVER", "b:2"),
            ("MINIO_KES_SERVER", ""),
        ]);
        let s = resolve(None, &conn, &vars).unwrap();
        assert_eq!(s.endpoints, vec!["https://b:2"]);

        let vars = env(&[
            ("MINIO_KES_SERVER", "http://a:1/, d:4"),
            ("KES_SERVER", "b:2"),
        ]);
        let s = resolve(None, &conn, &vars).unwrap();
        assert_eq!(s.endpoints, vec!["https://a:1", "https://d:4"]);

        let s = resolve(Some("x:9".into()), &conn, &vars).unwrap();
        assert_eq!(s.endpoints, vec!["https://x:9"]);

        let err = resolve(Some(" , ".into()), &conn, &vars).unwrap_err();
        assert!(err.to_string().contains("--server"));
    }

    #[test]
    fn credential_precedence_and_conflicts() {
        let none = ConnArgs::default();
        let vars = env(&[("MINIO_KMS_KES_API_KEY", "k3"), ("KES_API_KEY", "k2")]);
        let s = resolve(None, &none, &vars).unwrap();
        assert_eq!(
            s.credentials,
            Credentials::ApiKey(Sourced {
                value: "k2".into(),
                source: "KES_API_KEY".into()
            })
        );

        let flag = ConnArgs {
            api_key: Some("k1".into()),
            ..Default::default()
        };
        let s = resolve(None, &flag, &vars).unwrap();
        assert!(matches!(s.credentials, Credentials::ApiKey(ref k) if k.value == "k1"));

        let vars = env(&[
            ("KES_CLIENT_CERT", "c.pem"),
            ("MINIO_KES_CLIENT_KEY", "k.pem"),
            ("MINIO_KES_KEY_FILE", "first.key"),
        ]);
        let s = resolve(None, &none, &vars).unwrap();
        assert_eq!(
            s.credentials,
            Credentials::Files {
                cert: "c.pem".into(),
                key: "first.key".into()
            }
        );

        let err = resolve(None, &flag, &vars).unwrap_err().to_string();
        assert!(err.contains("--api-key"), "{err}");
        assert!(err.contains("cannot be combined"), "{err}");
        assert!(err.contains("KES_CLIENT_CERT"), "{err}");

        let err = resolve(None, &none, &env(&[("KES_CLIENT_CERT", "c.pem")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs its private key"), "{err}");

        let err = resolve(None, &none, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("no client credentials"), "{err}");
    }

    #[test]
    fn ca_from_flag_or_env() {
        let conn = ConnArgs {
            api_key: Some(KEY.into()),
            ..Default::default()
        };
        let vars = env(&[("MINIO_KMS_KES_CAPATH", "/etc/ca"), ("KES_CA", "/x/ca.pem")]);
        let s = resolve(None, &conn, &vars).unwrap();
        assert_eq!(s.ca, Some(PathBuf::from("/x/ca.pem")));
        let conn = ConnArgs {
            ca: Some("/flag/ca.pem".into()),
            ..conn
        };
        let s = resolve(None, &conn, &vars).unwrap();
        assert_eq!(s.ca, Some(PathBuf::from("/flag/ca.pem")));
    }

    #[test]
    fn invalid_api_key_is_named() {
        let conn = ConnArgs {
            api_key: Some("kes:v1:nope".into()),
            ..Default::default()
        };
        let s = resolve(None, &conn, &env(&[])).unwrap();
        let err = format!("{:#}", build(&s).unwrap_err());
        assert!(err.starts_with("invalid API key (--api-key)"), "{err}");
    }
}
