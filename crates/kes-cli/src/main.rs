//! `kes`: runs the KES-compatible server (`kes server`) and talks to it (every other command).
//!
//! The client commands, flags and environment variables follow MinIO KES's CLI so scripts
//! written for it keep working. Errors are printed as one line, `Error: <what failed>: <why>`,
//! with exit code 1; usage errors are reported by the argument parser with exit code 2.

mod ca;
mod cluster;
mod conn;
mod identity;
mod key;
mod output;
mod policy;
mod ready;
mod server;
mod status;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// jemalloc with its background purging thread rather than the system allocator. After a burst
/// of Raft writes (100,000 key creations, say) glibc's malloc kept the freed log entries and
/// their encoded copies in its per-thread arenas: 220–310 MiB resident per node, against
/// 137–172 MiB with jemalloc, which hands freed pages back to the system on its own
/// (benches/README.md, "Memory").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "kes",
    about = "A KES-compatible key encryption service: server and command-line client",
    version,
    disable_version_flag = true,
    arg_required_else_help = true
)]
struct Cli {
    /// Print version
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a KES server
    Server(server::ServerArgs),
    /// Run an internal CA: create it, issue server, client and node certificates
    Ca {
        #[command(subcommand)]
        cmd: ca::CaCmd,
    },
    /// Create API keys and certificates, compute and look up identities
    Identity(identity::IdentityCmd),
    /// Manage and use cryptographic keys
    Key {
        #[command(subcommand)]
        cmd: key::KeyCmd,
    },
    /// List keys, identities (-i) or policies (-p)
    Ls(policy::LsArgs),
    /// Operate the cluster: status, membership, leadership, snapshots; run a local cluster
    Cluster {
        #[command(subcommand)]
        cmd: cluster::ClusterCmd,
    },
    /// Inspect and change policies
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Show the status of each server
    Status(status::StatusArgs),
    /// Exit 0 if the server can serve crypto operations now (GET /v1/ready); for health checks
    Ready(ready::ReadyArgs),
    /// Follow the server's audit or error log
    Log(status::LogArgs),
    /// Sample the server's metrics periodically
    Metric(status::MetricArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => server::run(args).await,
        Command::Ca { cmd } => ca::run(cmd),
        Command::Identity(cmd) => identity::run(cmd).await,
        Command::Key { cmd } => key::run(cmd).await,
        Command::Ls(args) => policy::ls(args).await,
        Command::Policy { cmd } => policy::run(cmd).await,
        Command::Cluster { cmd } => cluster::run(cmd).await,
        Command::Status(args) => status::status(args).await,
        Command::Ready(args) => ready::run(args).await,
        Command::Log(args) => status::log(args).await,
        Command::Metric(args) => status::metric(args).await,
    }
}

/// Whether the error is stdout being closed by the reader (`kes key ls | head`), which is not
/// worth a message.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, with a hint where the fix is a flag away.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = format!("{e:#}").replace(['\n', '\r'], " ");
    if line.contains("the server certificate is not trusted") {
        line.push_str(" (trust its CA with --ca, or skip verification with --insecure)");
    }
    line
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kes").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_flags() {
        for flag in ["-v", "--version"] {
            let err = parse(&[flag]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        }
    }

    #[test]
    fn status_short_flag_is_not_server() {
        let cli = parse(&["status", "-s", "--server", "a:1", "-k"]).unwrap();
        let Command::Status(s) = cli.command else {
            panic!("not status")
        };
        assert!(s.short);
        assert_eq!(s.server.as_deref(), Some("a:1"));
        assert!(s.conn.insecure);
    }

    #[test]
    fn key_commands_take_client_flags() {
        let cli = parse(&[
            "key", "ls", "my*", "-k", "-s", "h:1", "--json", "-a", "kes:v1:x",
        ])
        .unwrap();
        let Command::Key {
            cmd: key::KeyCmd::Ls(a),
        } = cli.command
        else {
            panic!("not key ls")
        };
        assert_eq!(a.pattern, "my*");
        assert!(a.common.conn.insecure && a.common.out.json);
        assert_eq!(a.common.server.server.as_deref(), Some("h:1"));
        assert_eq!(a.common.conn.api_key.as_deref(), Some("kes:v1:x"));

        assert!(parse(&["key", "create"]).is_err(), "a name is required");
        let cli = parse(&["key", "create", "a", "b"]).unwrap();
        let Command::Key {
            cmd: key::KeyCmd::Create(a),
        } = cli.command
        else {
            panic!("not key create")
        };
        assert_eq!(a.names, vec!["a", "b"]);

        let cli = parse(&["key", "ls"]).unwrap();
        let Command::Key {
            cmd: key::KeyCmd::Ls(a),
        } = cli.command
        else {
            panic!("not key ls")
        };
        assert_eq!(a.pattern, "*");
    }

    #[test]
    fn identity_forms() {
        let cli = parse(&["identity"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Identity(identity::IdentityCmd {
                cmd: None,
                input: None
            })
        ));
        let cli = parse(&["identity", "cert.pem"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Identity(identity::IdentityCmd { cmd: None, input: Some(ref i) }) if i == "cert.pem"
        ));
        let cli = parse(&[
            "identity",
            "new",
            "client",
            "--key",
            "k.pem",
            "--cert",
            "c.pem",
            "--ip",
            "10.0.0.1,::1",
            "--dns",
            "a.example",
            "--expiry",
            "8760h",
            "-f",
        ])
        .unwrap();
        let Command::Identity(identity::IdentityCmd {
            cmd: Some(identity::IdentitySub::New(n)),
            ..
        }) = cli.command
        else {
            panic!("not identity new")
        };
        assert_eq!(n.subject.as_deref(), Some("client"));
        assert_eq!(n.ip.len(), 2);
        assert_eq!(n.expiry, Some(std::time::Duration::from_secs(8760 * 3600)));
        assert!(n.force);
        assert!(parse(&["identity", "new", "--ip", "not-an-ip"]).is_err());
    }

    #[test]
    fn ls_selectors_conflict() {
        assert!(parse(&["ls", "-i", "-p"]).is_err());
        let cli = parse(&["ls", "-p", "adm*"]).unwrap();
        let Command::Ls(a) = cli.command else {
            panic!("not ls")
        };
        assert!(a.policy && !a.identity);
        assert_eq!(a.prefix, "adm*");
        assert!(parse(&["log", "--audit", "--error"]).is_err());
    }

    #[test]
    fn errors_print_on_one_line() {
        let e = anyhow::anyhow!("key already exists").context("failed to create key 'x'");
        assert_eq!(one_line(&e), "failed to create key 'x': key already exists");
        let e = anyhow::anyhow!("a\nb");
        assert_eq!(one_line(&e), "a b");
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&e));
    }
}
