//! `kes ready`: whether a server can serve crypto operations now (`GET /v1/ready`), as the exit
//! code. Container health checks use it: a minimal image has no curl. The server must let
//! `/v1/ready` skip authentication (`api: /v1/ready: skip_auth: true`), since no client
//! certificate is sent.

use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ReadyArgs {
    /// Server endpoint
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:7373")]
    pub server: String,
    /// Trust this CA file for the server certificate
    #[arg(long, value_name = "PATH", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Do not verify the server certificate (a health check of the local process)
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Give up after this long
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(a: ReadyArgs) -> anyhow::Result<()> {
    let mut b = kes_client::Client::builder([a.server.as_str()])
        .insecure(a.insecure)
        .timeout(a.timeout)
        .connect_timeout(a.timeout);
    if let Some(ca) = &a.ca {
        b = b.ca_file(ca);
    }
    let client = b.build().context("invalid --server or --ca")?;
    match tokio::time::timeout(a.timeout, client.is_ready()).await {
        Ok(Ok(true)) => {
            println!("ready");
            Ok(())
        }
        Ok(Ok(false)) => bail!("{} is not ready", a.server),
        Ok(Err(e)) => Err(e).with_context(|| format!("{} is not ready", a.server)),
        Err(_) => bail!("{} did not answer within {:?}", a.server, a.timeout),
    }
}
