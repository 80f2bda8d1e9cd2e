//! The hosts: one Linux network namespace per node and one for the KMS, joined by a bridge the
//! harness creates, with addresses in a private /24. Every name starts with [`PREFIX`], so a
//! set left behind by a killed run is found and removed by name.
//!
//! Faults on the network are iptables rules and tc qdiscs inside the namespaces; the host's
//! own tables are never touched.

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::process::Command;

/// Prefix of every interface and namespace the harness creates.
pub const PREFIX: &str = "kesj-";
pub const BRIDGE: &str = "kesj-br";
pub const KMS_NS: &str = "kesj-kms";
/// The bridge's own address; the harness talks to the nodes from here.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const KMS_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
/// Highest node id that has an address (10.77.0.11 to 10.77.0.70).
pub const MAX_NODE_ID: u64 = 60;

pub fn node_ns(id: u64) -> String {
    format!("{PREFIX}n{id}")
}

pub fn node_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + (id.min(MAX_NODE_ID) as u8))
}

/// Runs a command and returns its standard output; a non-zero exit is an error carrying its
/// standard error.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside a namespace.
pub fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Async variant of [`run_in`] for use during the run.
pub async fn run_in_async(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let ns = ns.to_owned();
    let program = program.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_in(&ns, &program, &refs)
    })
    .await?
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(program).is_file())
}

/// What the run needs from the machine, checked before anything is created.
pub fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    let uid = run("id", &["-u"]).map(|s| s.trim().to_owned());
    if uid.as_deref().ok() != Some("0") {
        missing.push(
            "root privileges (run as root: namespaces, bridges and iptables need them)".to_owned(),
        );
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("tc", "iproute2"),
        ("iptables", "iptables"),
    ] {
        if !on_path(tool) {
            missing.push(format!("the `{tool}` command (package {package})"));
        }
    }
    if !missing.is_empty() {
        bail!("kes-jepsen cannot run; missing: {}", missing.join("; "));
    }
    Ok(())
}

/// Removes every namespace and interface whose name starts with [`PREFIX`], killing the
/// processes still running in those namespaces first. Safe to call at any time, repeatedly.
pub fn sweep() -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for ns in list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(PREFIX))
        {
            if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    let _ = run("kill", &["-CONT", pid]);
                    let _ = run("kill", &["-KILL", pid]);
                }
            }
            if run("ip", &["netns", "del", ns]).is_ok() {
                removed.push(format!("namespace {ns}"));
            }
        }
    }
    if let Ok(links) = run("ip", &["-o", "link", "show"]) {
        for name in links.lines().filter_map(|l| {
            // "12: kesj-v1@if3: <...>"
            let name = l.split(':').nth(1)?.trim();
            Some(name.split('@').next()?.to_owned())
        }) {
            if name.starts_with(PREFIX) && run("ip", &["link", "del", &name]).is_ok() {
                removed.push(format!("link {name}"));
            }
        }
    }
    removed
}

/// Creates the bridge.
pub fn create_bridge() -> Result<()> {
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run(
        "ip",
        &["addr", "add", &format!("{HOST_IP}/24"), "dev", BRIDGE],
    )?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// Creates a namespace with a veth pair to the bridge and the given address.
pub fn create_host(ns: &str, tag: &str, ip: Ipv4Addr) -> Result<()> {
    let host_side = format!("{PREFIX}v{tag}");
    let inner = inner_if(tag);
    run("ip", &["netns", "add", ns])?;
    run(
        "ip",
        &[
            "link", "add", &host_side, "type", "veth", "peer", "name", &inner, "netns", ns,
        ],
    )?;
    run("ip", &["link", "set", &host_side, "master", BRIDGE, "up"])?;
    run(
        "ip",
        &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", &inner],
    )?;
    run("ip", &["-n", ns, "link", "set", &inner, "up"])?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes one host (a node taken out of the cluster).
pub fn remove_host(ns: &str, tag: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-CONT", pid]);
            let _ = run("kill", &["-KILL", pid]);
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
    let _ = run("ip", &["link", "del", &format!("{PREFIX}v{tag}")]);
}

/// The interface name inside a namespace.
pub fn inner_if(tag: &str) -> String {
    format!("{PREFIX}p{tag}")
}

/// Drops everything arriving from `from` (inside `ns`).
pub async fn drop_from(ns: &str, from: Ipv4Addr) -> Result<()> {
    run_in_async(
        ns,
        "iptables",
        &["-A", "INPUT", "-s", &from.to_string(), "-j", "DROP"],
    )
    .await
    .map(drop)
}

/// Drops a random share of the packets arriving in `ns`, except from the harness.
pub async fn random_loss(ns: &str, probability: f64) -> Result<()> {
    run_in_async(
        ns,
        "iptables",
        &[
            "-A",
            "INPUT",
            "!",
            "-s",
            &HOST_IP.to_string(),
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &format!("{probability}"),
            "-j",
            "DROP",
        ],
    )
    .await
    .map(drop)
}

/// Removes every iptables rule inside `ns`.
pub async fn flush_rules(ns: &str) -> Result<()> {
    run_in_async(ns, "iptables", &["-F"]).await.map(drop)
}

/// Whether the kernel offers the netem qdisc (many container kernels do not).
pub fn netem_available() -> bool {
    let ns = format!("{PREFIX}probe");
    if run("ip", &["netns", "add", &ns]).is_err() {
        return false;
    }
    let _ = run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
    let ok = run_in(
        &ns,
        "tc",
        &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
    )
    .is_ok();
    let _ = run("ip", &["netns", "del", &ns]);
    ok
}

/// Slows the node's link: netem delay and loss where the kernel has netem, otherwise a token
/// bucket (queueing delay) plus random loss by iptables.
pub async fn slow_link(ns: &str, tag: &str, netem: bool) -> Result<String> {
    let dev = inner_if(tag);
    if netem {
        run_in_async(
            ns,
            "tc",
            &[
                "qdisc", "replace", "dev", &dev, "root", "netem", "delay", "150ms", "50ms", "loss",
                "5%",
            ],
        )
        .await?;
        Ok("netem delay 150ms±50ms loss 5%".into())
    } else {
        run_in_async(
            ns,
            "tc",
            &[
                "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", "256kbit", "burst",
                "16kbit", "latency", "300ms",
            ],
        )
        .await?;
        random_loss(ns, 0.05).await?;
        Ok("tbf 256kbit latency 300ms + 5% loss (no netem in this kernel)".into())
    }
}

/// Removes the qdisc of a slowed link.
pub async fn clear_link(ns: &str, tag: &str) {
    let _ = run_in_async(ns, "tc", &["qdisc", "del", "dev", &inner_if(tag), "root"]).await;
}
