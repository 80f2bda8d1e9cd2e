//! Support for the project's tests: loopback ports that stay free, server processes that die
//! with the test, the external keystores (OpenBao, moto, drongo for GCP) started from the
//! virtualenv that `tests/services.sh install` creates, and fake KMS servers written from the
//! services' published API references where no emulator exists.

// Test support: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod azure;
pub mod bao;
pub mod bitwarden;
pub mod fake;
pub mod fortanix;
pub mod gcp;
pub mod keycontrol;
pub mod keysecure;
pub mod moto;

pub use azure::AzureFake;
pub use bao::{Bao, ROOT_TOKEN};
pub use bitwarden::BitwardenFake;
pub use fake::FakeServer;
pub use fortanix::FortanixFake;
pub use gcp::Gcp;
pub use keycontrol::KeyControlFake;
pub use keysecure::KeySecureFake;
pub use moto::{Moto, REGION};

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports are handed out from this range, below Linux's default ephemeral range
/// (32768-60999), so that a port a test picked and released is not taken meanwhile by some
/// outgoing connection; a server restarted on its old port then finds it free.
const PORT_RANGE: std::ops::Range<u32> = 20_000..32_000;

/// A loopback port that is free now and that no other call in this process returns again.
/// Each process starts at an offset derived from its pid, so test binaries running side by
/// side rarely probe the same ports.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = (PORT_RANGE.start + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORT_RANGE:?}");
}

/// The services virtualenv: `$KES_SERVICES_VENV`, else `<workspace>/target/services-venv`.
fn venv() -> PathBuf {
    std::env::var_os("KES_SERVICES_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/services-venv"))
}

/// The path of a program from the virtualenv, or `None` when the test should be skipped.
/// With `KES_REQUIRE_SERVICES` set (to anything but `0`), a missing program fails the test.
pub fn service_bin(name: &str) -> Option<PathBuf> {
    let path = venv().join("bin").join(name);
    if path.is_file() {
        return Some(path);
    }
    let required = std::env::var("KES_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!(
            "{} is missing and KES_REQUIRE_SERVICES is set: run `tests/services.sh install`",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: {} not found; run `tests/services.sh install` to test against a real server",
        path.display()
    );
    None
}

/// A server process under a tiny shell watchdog: the shell starts the server in the
/// background, prints its pid, and kills it once its own stdin closes, which happens when this
/// handle is dropped or when the test process exits for any reason.
pub struct Proc {
    watchdog: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(log: &Path, program: &Path, args: &[String]) -> Result<Proc> {
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!; read _; kill -9 $! 2>/dev/null; wait"#)
            .arg("sh")
            .arg(log)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        let stdout = watchdog.stdout.take().context("watchdog stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("pid from {line:?}"))?;
        Ok(Proc {
            watchdog,
            pid,
            log: log.to_owned(),
        })
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(None))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills the server (SIGKILL, so nothing is flushed that a crash would not flush) and
    /// waits until it is gone.
    pub fn kill(&mut self) {
        if self.watchdog.stdin.is_none() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_outside_the_ephemeral_range() {
        let ports: std::collections::BTreeSet<u16> = (0..200).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 200);
        assert!(ports.iter().all(|p| PORT_RANGE.contains(&u32::from(*p))));
    }
}
