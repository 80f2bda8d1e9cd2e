//! `kes cluster`: operate a running cluster through any node's admin routes, and run a local
//! three-node cluster for trying the product out.

use crate::conn;
use crate::key::Common;
use crate::output::{outln, print_json};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kes_server::local::{LocalCluster, LocalOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Show members, leader, term, indexes, lag and whether the node is sealed
    Status(Common),
    /// Add a node: first as a learner, then (unless --learner) as a voter
    Add(AddArgs),
    /// Remove a node from the group
    Rm(NodeArg),
    /// Ask a voter to take over leadership
    Leader(NodeArg),
    /// Take a snapshot on the node answering
    Snapshot(Common),
    /// Print the cluster metrics (Prometheus text)
    Metrics(Common),
    /// Write a backup of the replicated state (policies, identity assignments, the sealed key
    /// cache; no plaintext key material) to a file
    Backup(BackupArgs),
    /// Seed a new node's empty data directory with a backup: the new cluster starts from it
    Restore(RestoreArgs),
    /// Run a local cluster on 127.0.0.1 with a filesystem keystore, until Ctrl-C
    Local(LocalArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The new node's id
    #[arg(value_name = "ID")]
    pub id: u64,
    /// The new node's node-to-node address (host:port)
    #[arg(value_name = "ADDRESS")]
    pub address: String,
    /// Keep the node a learner (no vote)
    #[arg(long)]
    pub learner: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The file to write (replaced if it exists)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The configuration of the node to seed; its cluster.data_dir must be empty or missing
    #[arg(long, value_name = "PATH")]
    pub config: PathBuf,
    /// The backup file (from kes cluster backup)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Largest backup file `restore` reads: the node port's snapshot bound.
const MAX_BACKUP_FILE: u64 = 1 << 30;

/// Largest state a restore carries with its cache entries. The state goes to every member in
/// one Raft entry, and the node port takes requests of at most 64 MiB; above this the entries
/// are left out, and the keys are read from the keystore again as they are used.
const MAX_RESTORE_ENTRY: usize = 32 << 20;

#[derive(Args, Debug)]
pub struct NodeArg {
    /// Node id
    #[arg(value_name = "ID")]
    pub id: u64,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Number of nodes
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// First API port; node i listens on PORT+i-1 and on PORT+100+i-1 for its peers
    #[arg(long, default_value_t = 7373)]
    pub port: u16,
    /// Folder for certificates, configurations, keys and data (kept between runs)
    #[arg(long, default_value = "target/local-cluster")]
    pub dir: PathBuf,
}

fn client(c: &Common) -> anyhow::Result<kes_client::Client> {
    conn::client(c.server.server.clone(), &c.conn)
}

pub async fn run(cmd: ClusterCmd) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Status(c) => {
            let st = client(&c)?
                .cluster_status()
                .await
                .context("failed to read the cluster status")?;
            if c.out.json {
                return print_json(&st);
            }
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            outln!("{:<12} {}", "Node", st.node_id)?;
            outln!("{:<12} {}", "Leader", opt(st.leader))?;
            outln!("{:<12} {}", "Term", st.term)?;
            outln!("{:<12} {}", "Last log", opt(st.last_log_index))?;
            outln!("{:<12} {}", "Applied", st.applied_index)?;
            outln!("{:<12} {}", "Sealed", st.sealed)?;
            outln!("{:<12} {}", "Serving", st.serving)?;
            outln!(
                "{:<12} {} cached, {} tombstones",
                "Keys",
                st.keys,
                st.tombstones
            )?;
            outln!("Members")?;
            for m in &st.members {
                let role = if m.voter { "voter" } else { "learner" };
                outln!(
                    "  {:<4} {:<24} {:<8} matched {:<8} lag {}",
                    m.id,
                    m.address,
                    role,
                    opt(m.matched),
                    opt(m.lag)
                )?;
            }
            Ok(())
        }
        ClusterCmd::Add(a) => client(&a.common)?
            .cluster_add(a.id, &a.address, !a.learner)
            .await
            .with_context(|| format!("failed to add node {}", a.id)),
        ClusterCmd::Rm(a) => client(&a.common)?
            .cluster_remove(a.id)
            .await
            .with_context(|| format!("failed to remove node {}", a.id)),
        ClusterCmd::Leader(a) => client(&a.common)?
            .cluster_transfer_leader(a.id)
            .await
            .with_context(|| format!("failed to move leadership to node {}", a.id)),
        ClusterCmd::Snapshot(c) => client(&c)?
            .cluster_snapshot()
            .await
            .context("failed to take a snapshot"),
        ClusterCmd::Metrics(c) => {
            let m = client(&c)?
                .cluster_metrics()
                .await
                .context("failed to read the cluster metrics")?;
            outln!("{}", m.trim_end())
        }
        ClusterCmd::Backup(a) => backup(a).await,
        ClusterCmd::Restore(a) => restore(&a),
        ClusterCmd::Local(a) => local(a).await,
    }
}

fn describe(b: &kes_state::Backup) -> String {
    format!(
        "{} policies, {} identity assignments, {} cached keys, {} tombstones",
        b.state.policies("").len(),
        b.state.identities("").len(),
        b.state.key_count(),
        b.state.tombstone_count()
    )
}

async fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let bytes = client(&a.common)?
        .cluster_backup()
        .await
        .context("failed to take a backup")?;
    // Checked before it is written, so a file that exists is a file that restores.
    let b = kes_state::Backup::decode(&bytes).context("the server sent an unusable backup")?;
    let tmp = a.file.with_extension("tmp");
    write_private(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, &a.file))
        .with_context(|| format!("failed to write '{}'", a.file.display()))?;
    if a.common.out.json {
        return print_json(&serde_json::json!({
            "file": a.file,
            "bytes": bytes.len(),
            "node_id": b.node_id,
            "read_index": b.read_index,
            "policies": b.state.policies("").len(),
            "assignments": b.state.identities("").len(),
            "keys": b.state.key_count(),
            "tombstones": b.state.tombstone_count(),
        }));
    }
    outln!(
        "Backup of {} (node {}, read index {}) written to {}",
        describe(&b),
        b.node_id,
        b.read_index,
        a.file.display()
    )
}

/// Writes a file readable by its owner only: a backup holds no plaintext key, but sealed keys,
/// the wrapped cache key and who may do what are nobody else's business.
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn restore(a: &RestoreArgs) -> anyhow::Result<()> {
    let parsed = kes_config::load(&a.config)
        .with_context(|| format!("failed to load '{}'", a.config.display()))?;
    let Some(cluster) = &parsed.config.cluster else {
        bail!(
            "'{}' has no cluster: section: a restore seeds the node's cluster.data_dir",
            a.config.display()
        );
    };
    let file = a.file.display();
    let len = std::fs::metadata(&a.file)
        .with_context(|| format!("cannot read '{file}'"))?
        .len();
    if len > MAX_BACKUP_FILE {
        bail!("'{file}' is not a kes backup file: {len} bytes, more than any backup");
    }
    let bytes = std::fs::read(&a.file).with_context(|| format!("cannot read '{file}'"))?;
    let mut b =
        kes_state::Backup::decode(&bytes).with_context(|| format!("cannot restore '{file}'"))?;
    let mut snapshot = b
        .state
        .encode_snapshot()
        .with_context(|| format!("cannot restore '{file}'"))?;
    let mut note = String::new();
    if snapshot.len() > MAX_RESTORE_ENTRY {
        b.state.drop_cache_entries();
        snapshot = b
            .state
            .encode_snapshot()
            .with_context(|| format!("cannot restore '{file}'"))?;
        note = "; the cached keys are left out (too many to restore at once) and are read from the keystore again as they are used".into();
    }
    kes_raft::SledStore::seed_restore(&cluster.data_dir, &snapshot)
        .with_context(|| format!("cannot restore '{file}'"))?;
    outln!(
        "Data directory {} seeded with the backup of {} (taken on node {} at read index {}){note}.\n\
         Start the node: the cluster starts from this state. Seed every node of the new cluster \
         the same way before starting any.",
        cluster.data_dir.display(),
        describe(&b),
        b.node_id,
        b.read_index,
    )
}

/// Kills the node processes when the launcher exits, however it exits.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn local(a: LocalArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    if a.port.checked_add(100 + a.nodes as u16).is_none() {
        bail!("--port {} is too high for {} nodes", a.port, a.nodes);
    }
    let opts = LocalOptions {
        nodes: a.nodes,
        base_port: a.port,
        ..Default::default()
    };
    let cluster = LocalCluster::generate(&a.dir, &opts)
        .with_context(|| format!("failed to prepare '{}'", a.dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the kes binary")?;
    let mut nodes = Nodes(Vec::new());
    for n in &cluster.nodes {
        let log = std::fs::File::create(n.config.with_file_name("node.log"))?;
        let child = Command::new(&exe)
            .args(["server", "--config"])
            .arg(&n.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start node {}", n.id))?;
        nodes.0.push(child);
    }
    let key = cluster.api_key.to_text();
    let ca = std::fs::canonicalize(&cluster.ca_file).unwrap_or(cluster.ca_file.clone());
    println!(
        "Local KES cluster: {} nodes, filesystem keystore in {}\n",
        a.nodes,
        cluster.keystore_dir.display()
    );
    for n in &cluster.nodes {
        println!(
            "  node {}  {}  (peers: 127.0.0.1:{}, log: {})",
            n.id,
            n.endpoint(),
            n.peer_port,
            n.config.with_file_name("node.log").display()
        );
    }
    println!("\n  API key    {key}");
    println!("  Identity   {}", cluster.api_key.identity());
    println!(
        "  CAs        {0}/ca.{{cert,key}} (API), {0}/cluster-ca.{{cert,key}} (nodes; kes ca issue node ...)\n",
        cluster.dir.display()
    );
    println!("For the kes CLI:");
    println!("  export KES_SERVER={}", cluster.endpoints());
    println!("  export KES_API_KEY={key}");
    println!("  export KES_CA={}\n", ca.display());
    println!("For MinIO:");
    println!("  export MINIO_KMS_KES_ENDPOINT={}", cluster.endpoints());
    println!("  export MINIO_KMS_KES_API_KEY={key}");
    println!("  export MINIO_KMS_KES_KEY_NAME=minio-default-key");
    println!("  export MINIO_KMS_KES_CAPATH={}\n", ca.display());
    println!("Stop with Ctrl-C.");

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut exited = vec![false; nodes.0.len()];
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                for (i, c) in nodes.0.iter_mut().enumerate() {
                    if let (false, Ok(Some(st))) = (exited[i], c.try_wait()) {
                        exited[i] = true;
                        eprintln!("node {} exited ({st}); see its log", i + 1);
                    }
                }
            }
        }
    }
    println!("stopping");
    drop(nodes);
    Ok(())
}
