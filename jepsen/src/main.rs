//! kes-jepsen: runs a kes cluster in network namespaces, breaks it on a seeded schedule while
//! concurrent clients use it, and checks what the clients saw. See `jepsen/README.md`.

mod check;
mod client;
mod db;
mod history;
mod hosts;
mod lin;
mod nemesis;
mod report;
mod scenario;
mod workload;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use client::{Api, Outcome};
use history::{lock, OpType, Process, Recorder};
use nemesis::{Cond, Fault, Nemesis, Timeline};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use workload::Ctx;

#[derive(Parser)]
#[command(
    name = "kes-jepsen",
    about = "Fault-injection testing of a kes cluster"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a cluster under faults and checks the history.
    Run(RunArgs),
    /// Removes every namespace, interface and process a run left behind.
    Cleanup,
    /// Checks the key-lifecycle linearizability of a recorded history.jsonl again.
    Check { history: PathBuf },
    /// Draws timeline.svg for a results folder from its history.jsonl and results.json.
    Plot { dir: PathBuf },
    /// Runs every nemesis alone, for each node count and several seeds, one run after the
    /// other, and writes a table of the verdicts to `<results>/matrix/summary.md`.
    Matrix(MatrixArgs),
    /// Runs a deterministic scenario for one of the findings in `jepsen/README.md`:
    /// `rejoin-after-partition` (finding 1).
    Scenario {
        name: String,
        /// Where the scenario's folder (node logs) goes.
        #[arg(long, default_value_os_t = scenario::default_results())]
        results: PathBuf,
        /// The `kes` binary (default: next to this binary).
        #[arg(long)]
        kes_bin: Option<PathBuf>,
    },
}

#[derive(clap::Args, Clone)]
struct MatrixArgs {
    /// Node counts, comma-separated.
    #[arg(long, default_value = "3,5")]
    nodes: String,
    /// Nemeses to run one at a time (names or groups, as for `run`).
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Seeds per configuration: `seed`, `seed + 1`, ...
    #[arg(long, default_value_t = 2)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Length of each run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    time: Duration,
    #[command(flatten)]
    opts: RunOpts,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    what: RunWhat,
    #[command(flatten)]
    opts: RunOpts,
}

/// How runs are done, for `run` and `matrix` alike.
#[derive(clap::Args, Clone)]
struct RunOpts {
    /// Name of the results folder (default: `n<nodes>-seed<seed>`).
    #[arg(long)]
    name: Option<String>,
    /// Where results folders go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results: PathBuf,
    /// The `kes` binary (default: next to this binary).
    #[arg(long)]
    kes_bin: Option<PathBuf>,
    /// Concurrent clients per workload.
    #[arg(long, default_value_t = 3)]
    concurrency: u64,
    /// `cache.expiry.offline` of the nodes.
    #[arg(long, default_value = "1h")]
    offline: String,
    /// The KMS: `fs` (one filesystem keystore shared by the nodes) or `openbao`.
    #[arg(long, default_value = "fs")]
    kms: String,
    /// The OpenBao binary (installed by `tests/services.sh install`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/services-venv/bin/bao"))]
    bao_bin: PathBuf,
    /// Print the nemesis schedule and exit.
    #[arg(long)]
    dry_run: bool,
    /// Keep the node state (sled data, certificates) after the run.
    #[arg(long)]
    keep_work: bool,
}

/// What `run` runs; `matrix` sets these itself.
#[derive(clap::Args, Clone)]
struct RunWhat {
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Length of the faulty part of the run, e.g. 60s, 5m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    time: Duration,
    /// Seed of the nemesis schedule and the workloads' choices; random if not given.
    #[arg(long)]
    seed: Option<u64>,
    /// Faults to use: `all`, `none`, groups (`kill`, `pause`, `partition`, `kms`) or names,
    /// comma-separated.
    #[arg(long, default_value = "all")]
    nemesis: String,
}

/// Set by SIGINT/SIGTERM: the current run stops and cleans up, and a matrix starts no further
/// run.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kes-jepsen: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.cmd {
        Cmd::Cleanup => cleanup(),
        Cmd::Check { history } => recheck(&history),
        Cmd::Plot { dir } => plot(&dir),
        Cmd::Matrix(args) => rt.block_on(matrix(args)),
        Cmd::Run(args) => rt.block_on(run(args)),
        Cmd::Scenario {
            name,
            results,
            kes_bin,
        } => match name.as_str() {
            "rejoin-after-partition" => rt.block_on(scenario::rejoin_after_partition(
                &results,
                kes_bin.as_deref(),
            )),
            other => Err(anyhow::anyhow!(
                "unknown scenario '{other}': want rejoin-after-partition"
            )),
        },
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("kes-jepsen: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn cleanup() -> Result<bool> {
    hosts::preflight()?;
    let removed = hosts::sweep();
    if removed.is_empty() {
        println!("nothing to clean up");
    }
    for r in removed {
        println!("removed {r}");
    }
    Ok(true)
}

fn recheck(path: &Path) -> Result<bool> {
    let ops = history::read_jsonl(path)?;
    let r = check::lifecycle(&ops);
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(r.valid)
}

async fn matrix(m: MatrixArgs) -> Result<bool> {
    let mut faults = Fault::parse_list(&m.nemesis)?;
    if m.opts.kms != "openbao" {
        // They need a network KMS; alone with the filesystem one they would run no fault.
        faults.retain(|f| !matches!(f, Fault::KmsPause | Fault::KmsCut));
    }
    let nodes: Vec<u64> = m
        .nodes
        .split(',')
        .map(|n| n.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .context("--nodes: want a comma-separated list of numbers")?;
    let root = m.opts.results.join("matrix");
    std::fs::create_dir_all(&root)?;
    let mut rows = Vec::new();
    let mut all_valid = true;
    'outer: for n in &nodes {
        for f in &faults {
            for i in 0..m.seeds {
                let seed = m.seed + i;
                let name = format!("n{n}-{}-s{seed}", f.name());
                let mut opts = m.opts.clone();
                opts.results = root.clone();
                opts.name = Some(name.clone());
                let args = RunArgs {
                    what: RunWhat {
                        nodes: *n,
                        time: m.time,
                        seed: Some(seed),
                        nemesis: f.name().to_owned(),
                    },
                    opts,
                };
                println!("\n=== matrix: {name}");
                let outcome = run(args).await;
                let summary: Option<serde_json::Value> = read_results(&root.join(&name))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
                let row = match (&outcome, summary) {
                    (Ok(_), Some(s)) => {
                        let v = |p: &str| s.pointer(p).and_then(serde_json::Value::as_bool);
                        let mark = |b: Option<bool>| match b {
                            Some(true) => "ok",
                            Some(false) => "**ANOMALY**",
                            None => "?",
                        };
                        let min_connected = s["availability"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter_map(|(_, p)| {
                                let ok = p.pointer("/connected/ok")?.as_f64()?;
                                let total = p.pointer("/connected/total")?.as_f64()?;
                                (total > 0.0).then(|| 100.0 * ok / total)
                            })
                            .fold(100.0_f64, f64::min);
                        format!(
                            "| {n} | {} | {seed} | {} | {} | {} | {} | {min_connected:.1}% | [summary]({name}/summary.md) |",
                            f.name(),
                            mark(v("/lifecycle/valid")),
                            mark(v("/datakeys/valid")),
                            mark(v("/visibility/valid")),
                            mark(v("/cluster_healed")),
                        )
                    }
                    (Err(e), _) => format!(
                        "| {n} | {} | {seed} | run failed: {e} | | | | | |",
                        f.name()
                    ),
                    (Ok(_), None) => {
                        format!("| {n} | {} | {seed} | no summary | | | | | |", f.name())
                    }
                };
                all_valid &= matches!(outcome, Ok(true));
                rows.push(row);
                if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                    println!("matrix interrupted: the remaining configurations are skipped");
                    break 'outer;
                }
                if outcome.is_err() && rows.len() == 1 {
                    // The first run could not even start: the rest would fail alike.
                    break 'outer;
                }
            }
        }
    }
    let mut md = String::from(
        "# kes-jepsen matrix\n\nEach nemesis alone, per node count and seed. Columns: key-lifecycle linearizability, data keys, delete visibility, healing, and the lowest availability on connected nodes over the phases.\n\n| nodes | nemesis | seed | lifecycle | data keys | delete visibility | healed | connected availability | details |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(r);
        md.push('\n');
    }
    std::fs::write(root.join("summary.md"), &md)?;
    println!("\n{md}");
    Ok(all_valid)
}

/// A run's `results.json` (named `summary.json` in folders written by earlier versions).
fn read_results(dir: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(dir.join("results.json"))
        .or_else(|_| std::fs::read_to_string(dir.join("summary.json")))
}

fn plot(dir: &Path) -> Result<bool> {
    let ops = history::read_jsonl(&dir.join("history.jsonl"))?;
    let summary: serde_json::Value = serde_json::from_str(&read_results(dir)?)?;
    let mut phases: Vec<nemesis::PhaseEvent> =
        serde_json::from_value(summary["phases"].clone()).unwrap_or_default();
    if phases.is_empty() {
        // Older summaries: the scheduled intervals.
        for step in summary["schedule"].as_array().into_iter().flatten() {
            let at = step["at_s"].as_f64().unwrap_or(0.0);
            let d = step["duration_s"].as_f64().unwrap_or(0.0);
            phases.push(nemesis::PhaseEvent {
                time: (at * 1e9) as u64,
                phase: step["fault"].as_str().unwrap_or("fault").to_owned(),
            });
            phases.push(nemesis::PhaseEvent {
                time: ((at + d) * 1e9) as u64,
                phase: "recovery".into(),
            });
        }
    }
    let end = ops.iter().map(|o| o.time).max().unwrap_or(0);
    std::fs::write(
        dir.join("timeline.svg"),
        report::timeline_svg(&ops, &phases, end)?,
    )?;
    println!("wrote {}", dir.join("timeline.svg").display());
    Ok(true)
}

/// Removes the hosts when dropped: at the end of a run, on an error, and while a panic
/// unwinds.
struct Sweep;

impl Drop for Sweep {
    fn drop(&mut self) {
        for r in hosts::sweep() {
            println!("cleanup: removed {r}");
        }
    }
}

fn kes_binary(arg: Option<&Path>) -> Result<PathBuf> {
    let path = match arg {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("kes"))
            .context("no directory for the kes binary")?,
    };
    if !path.is_file() {
        bail!(
            "the kes binary is not at {} (build it with `cargo build -p kes-cli`, or pass --kes-bin)",
            path.display()
        );
    }
    Ok(path.canonicalize()?)
}

async fn run(args: RunArgs) -> Result<bool> {
    if !(1..=9).contains(&args.what.nodes) {
        bail!("--nodes must be between 1 and 9");
    }
    let mut faults = Fault::parse_list(&args.what.nemesis)?;
    let mut notes = Vec::new();
    match args.opts.kms.as_str() {
        "fs" => {
            let network_only = [Fault::KmsPause, Fault::KmsCut];
            if faults.iter().any(|f| network_only.contains(f)) {
                notes.push("kms-pause and kms-cut need a network KMS (--kms openbao); left out of this run".to_owned());
            }
            faults.retain(|f| !network_only.contains(f));
        }
        "openbao" => {}
        other => bail!("unknown --kms '{other}': want fs or openbao"),
    }
    let seed = args.what.seed.unwrap_or_else(rand::random);
    if args.opts.dry_run {
        println!("seed {seed}");
        for s in nemesis::schedule(
            seed,
            &faults,
            args.what.time,
            Duration::from_secs(5),
            Duration::from_secs(5),
        ) {
            println!(
                "  {:>6.1}  {:<18} {:>4.1}s",
                s.at_s,
                s.fault.name(),
                s.duration_s
            );
        }
        return Ok(true);
    }
    hosts::preflight()?;
    let kes_bin = kes_binary(args.opts.kes_bin.as_deref())?;
    let name = args
        .opts
        .name
        .clone()
        .unwrap_or_else(|| format!("n{}-seed{seed}", args.what.nodes));
    let dir = args.opts.results.join(&name);
    let work = dir.join("work");
    let logs = dir.join("logs");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    if logs.exists() {
        std::fs::remove_dir_all(&logs)?;
    }
    std::fs::create_dir_all(&dir)?;
    let command = format!(
        "kes-jepsen run --nodes {} --kms {} --time {} --seed {seed} --nemesis {} --concurrency {} --name {name}",
        args.what.nodes,
        args.opts.kms,
        humantime::format_duration(args.what.time),
        faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
        args.opts.concurrency,
    );
    println!("seed {seed}");
    println!("{command}");

    let stale = hosts::sweep();
    if !stale.is_empty() {
        println!(
            "removed what an earlier run left behind: {}",
            stale.join(", ")
        );
    }
    let _sweep = Sweep;
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("interrupted: stopping the run and cleaning up");
            INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
            stop.cancel();
        });
    }

    let netem = hosts::netem_available();
    if !netem && faults.contains(&Fault::SlowLink) {
        notes.push("this kernel has no netem qdisc: slow-link uses a token bucket filter (256 kbit/s, queueing delay up to 300 ms) plus 5% random loss by iptables instead of netem delay".to_owned());
    }
    hosts::create_bridge()?;
    let kms = if args.opts.kms == "openbao" {
        println!("starting OpenBao");
        let bin = args
            .opts
            .bao_bin
            .canonicalize()
            .unwrap_or_else(|_| args.opts.bao_bin.clone());
        std::fs::create_dir_all(&logs)?;
        db::Kms::OpenBao(db::Bao::setup(&bin, &work.join("kms"), &logs.join("kms.log")).await?)
    } else {
        notes.push("KMS: one filesystem keystore shared by every node; a KMS outage replaces its directory by a plain file, so every keystore call fails as unavailable.".to_owned());
        std::fs::create_dir_all(work.join("keys"))?;
        db::Kms::Fs {
            dir: work.join("keys"),
        }
    };
    let db = db::Db::new(&work, &logs, &kes_bin, kms, &args.opts.offline)?;
    let api = Api::new(db.api_key(), &db.ca_pem())?;
    let initial: Vec<u64> = (1..=args.what.nodes).collect();
    for id in &initial {
        db.prepare(*id, Some(&initial))?;
    }
    for id in &initial {
        db.start(*id)?;
    }
    let start = Instant::now();
    let rec = Recorder::new(start);
    let timeline = Timeline::default();
    for id in &initial {
        timeline.cond(0, *id, Cond::Up);
    }
    timeline.phase(0, "setup");
    let members = Arc::new(Mutex::new(initial.clone()));
    let nem = Nemesis {
        db: db.clone(),
        api: api.clone(),
        members: members.clone(),
        timeline: timeline.clone(),
        start,
        netem,
        next_id: Arc::new(Mutex::new(args.what.nodes + 1)),
    };

    // Setup: a leader, every node ready, the data keys created and cached everywhere.
    println!("starting {} nodes", args.what.nodes);
    if nem.await_leader(Duration::from_secs(60)).await.is_none() {
        bail!(
            "no leader within 60 s; see the node logs in {}",
            logs.display()
        );
    }
    for id in &initial {
        wait_ready(&api, *id, Duration::from_secs(30)).await?;
    }
    for key in workload::DATA_KEYS {
        let mut made = false;
        for attempt in 0..20 {
            let node = initial[attempt % initial.len()];
            match api
                .create(&db::endpoint(node), key, workload::WRITE_TIMEOUT)
                .await
            {
                Outcome::Ok(()) => made = true,
                Outcome::Fail(e) if e == "exists" => made = true,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
            if made {
                break;
            }
        }
        if !made {
            bail!("could not create the data key {key}");
        }
        for id in &initial {
            let _ = api
                .generate(&db::endpoint(*id), key, b"warm", workload::CRYPTO_TIMEOUT)
                .await;
        }
    }
    if stop.is_cancelled() {
        return Ok(false);
    }

    // The run.
    let run_start = start.elapsed();
    let total = args.what.time;
    let steps = nemesis::schedule(
        seed,
        &faults,
        total,
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let offset = run_start.as_secs_f64();
    let steps: Vec<nemesis::Step> = steps
        .into_iter()
        .map(|mut s| {
            s.at_s += offset;
            s
        })
        .collect();
    println!("nemesis schedule (seconds from start):");
    for s in &steps {
        println!(
            "  {:>6.1}  {:<18} {:>4.1}s",
            s.at_s,
            s.fault.name(),
            s.duration_s
        );
    }
    let deadline = Instant::now() + total;
    timeline.phase(rec.now(), "healthy");
    let ctx = Ctx {
        api: api.clone(),
        rec: rec.clone(),
        members: members.clone(),
        stop: stop.clone(),
        deadline,
        seed,
        next_process: Arc::new(AtomicU64::new(0)),
        datakeys: Arc::default(),
        rounds: Arc::default(),
        anomalies: Arc::default(),
    };
    let max_ops = 20 * total.as_secs().max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.opts.concurrency {
        tasks.spawn(workload::lifecycle(ctx.clone(), w, max_ops));
        tasks.spawn(workload::datakeys(ctx.clone(), w, max_ops * 2));
    }
    tasks.spawn(workload::visibility(ctx.clone()));
    let nemesis_task = {
        let nem = nem.clone();
        let stop = stop.clone();
        tokio::spawn(async move { nem.run(steps, stop).await })
    };
    let progress = {
        let (rec, stop) = (rec.clone(), stop.clone());
        tokio::spawn(async move {
            for _ in 0..100_000 {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                if Instant::now() > deadline {
                    break;
                }
                let ops = rec.snapshot();
                let ok = ops.iter().filter(|o| o.kind == OpType::Ok).count();
                let info = ops.iter().filter(|o| o.kind == OpType::Info).count();
                println!(
                    "[{:>7.1}s] {} operations completed ok, {} indeterminate",
                    rec.now() as f64 / 1e9,
                    ok,
                    info
                );
            }
        })
    };
    // Workloads stop at the deadline by themselves; bound the wait anyway.
    let _ = tokio::time::timeout(total + Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(60), nemesis_task).await;
    progress.abort();
    nem.heal_all("final").await;
    let end_of_faults = rec.now();
    timeline.phase(end_of_faults, "final");
    let interrupted = stop.is_cancelled();

    // Healing and the final checks.
    let final_members = nem.members();
    let healed = if interrupted {
        false
    } else {
        wait_healed(&api, &final_members, Duration::from_secs(60)).await
    };
    if !healed && !interrupted {
        notes.push("the cluster did not report one leader and every member serving within 60 s after the faults".into());
    }
    if !interrupted {
        final_reads(&api, &rec, &final_members).await;
    }
    let datakeys = if interrupted {
        None
    } else {
        Some(verify_datakeys(&api, &ctx, &final_members).await)
    };
    for id in db.prepared() {
        if let Some(status) = db.exited(id) {
            notes.push(format!(
                "node {id} exited by itself ({status}); see logs/n{id}.log"
            ));
        }
    }
    db.kill_all().await;
    db.kms().shutdown().await;
    let end = rec.now();

    // Verdicts.
    let ops = rec.snapshot();
    history::write_jsonl(&dir.join("history.jsonl"), &ops)?;
    let phases = timeline.phases();
    let conds = timeline.conds();
    let lifecycle = check::lifecycle(&ops);
    let availability = check::availability(&ops, &phases, &conds, end_of_faults);
    let rounds = lock(&ctx.rounds).clone();
    let visibility = check::visibility(&rounds, &conds);
    let datakeys = datakeys.unwrap_or_else(|| report::DataKeyResult {
        valid: true,
        generated: lock(&ctx.datakeys).len(),
        checked: 0,
        verified: 0,
        lost: 0,
        unavailable: 0,
        during_run: 0,
        examples: vec![],
    });
    let valid = lifecycle.valid && datakeys.valid && visibility.valid && healed;
    let mut schedule: Vec<nemesis::Step> = nemesis::schedule(
        seed,
        &faults,
        total,
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    for s in &mut schedule {
        s.at_s += offset;
    }
    let summary = report::Summary {
        name: name.clone(),
        valid,
        seed,
        nodes: args.what.nodes as usize,
        kms: db.kms().name().into(),
        duration_s: end as f64 / 1e9,
        nemeses: faults.iter().map(|f| f.name().to_owned()).collect(),
        command,
        schedule,
        actions: timeline.actions(),
        phases: phases.clone(),
        lifecycle,
        datakeys,
        availability,
        visibility,
        final_members,
        cluster_healed: healed,
        notes,
    };
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    // The picture is a view of the history; a run whose picture cannot be drawn still counts.
    match report::timeline_svg(&ops, &phases, end_of_faults) {
        Ok(svg) => std::fs::write(dir.join("timeline.svg"), svg)?,
        Err(e) => eprintln!("no timeline.svg: {e:#}"),
    }
    let md = report::markdown(&summary);
    std::fs::write(dir.join("summary.md"), &md)?;
    if !args.opts.keep_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    println!("\nresults in {}", dir.display());
    let lc = &summary.lifecycle;
    println!(
        "key lifecycle: {} ({} ok, {} fail, {} indeterminate)",
        if lc.valid {
            "linearizable"
        } else {
            "NOT LINEARIZABLE"
        },
        lc.counts.ok,
        lc.counts.fail,
        lc.counts.info
    );
    let d = &summary.datakeys;
    println!(
        "data keys: {} generated, {}/{} decryptions verified, {} lost, {} unavailable, {} anomalies during the run",
        d.generated, d.verified, d.checked, d.lost, d.unavailable, d.during_run
    );
    println!(
        "delete visibility: {} rounds, {} anomalies",
        summary.visibility.rounds,
        summary.visibility.anomalies.len()
    );
    if interrupted {
        println!("verdict: INTERRUPTED (no final checks)");
        return Ok(false);
    }
    println!(
        "verdict: {}",
        if valid {
            "VALID, no anomalies"
        } else {
            "INVALID: anomalies found (see summary.md)"
        }
    );
    Ok(valid)
}

async fn wait_ready(api: &Api, id: u64, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if api.ready(&db::endpoint(id), Duration::from_secs(2)).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("node {id} not ready within {limit:?}")
}

/// Whether every member agrees on one leader, is serving and has applied the leader's log.
async fn wait_healed(api: &Api, members: &[u64], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let mut leaders = std::collections::BTreeSet::new();
        let mut applied = Vec::new();
        let mut all = true;
        for id in members {
            match api
                .cluster_status(&db::endpoint(*id), Duration::from_secs(2))
                .await
            {
                Outcome::Ok(v) => {
                    let serving = v.get("serving").and_then(serde_json::Value::as_bool);
                    let leader = v.get("leader").and_then(serde_json::Value::as_u64);
                    if serving != Some(true) || leader.is_none() {
                        all = false;
                    }
                    leaders.insert(leader);
                    applied.push(
                        v.get("applied_index")
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or(0),
                    );
                }
                _ => all = false,
            }
        }
        let spread = applied.iter().max().unwrap_or(&0) - applied.iter().min().unwrap_or(&0);
        if all && leaders.len() == 1 && spread <= 2 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// One describe of every lifecycle key on every member after healing: these reads close the
/// history, so a lost or resurrected key shows up in the linearizability check.
async fn final_reads(api: &Api, rec: &Recorder, members: &[u64]) {
    let mut process = 1_000_000;
    for key in workload::LIFECYCLE_KEYS {
        for id in members {
            process += 1;
            let value = serde_json::json!({ "key": key });
            rec.record(
                Process::Client(process),
                OpType::Invoke,
                "describe",
                value.clone(),
                Some(*id),
                "lifecycle",
                None,
            );
            let out = api
                .describe(&db::endpoint(*id), key, workload::READ_TIMEOUT)
                .await;
            let (kind, error) = match out {
                Outcome::Ok(()) => (OpType::Ok, None),
                Outcome::Fail(e) => (OpType::Fail, Some(e)),
                Outcome::Info(e) => (OpType::Info, Some(e)),
            };
            rec.record(
                Process::Client(process),
                kind,
                "describe",
                value,
                Some(*id),
                "lifecycle",
                error,
            );
        }
    }
}

/// Decrypts every acknowledged data key on every member.
async fn verify_datakeys(api: &Api, ctx: &Ctx, members: &[u64]) -> report::DataKeyResult {
    let records = lock(&ctx.datakeys).clone();
    let during: Vec<serde_json::Value> = lock(&ctx.anomalies).clone();
    let jobs: Vec<(usize, u64)> = (0..records.len())
        .flat_map(|i| members.iter().map(move |m| (i, *m)))
        .collect();
    let records = Arc::new(records);
    let results = Arc::new(Mutex::new(Vec::new()));
    let jobs = Arc::new(Mutex::new(jobs));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (api, records, results, jobs) =
            (api.clone(), records.clone(), results.clone(), jobs.clone());
        workers.spawn(async move {
            loop {
                let Some((i, node)) = lock(&jobs).pop() else {
                    break;
                };
                let Some(dk) = records.get(i) else { continue };
                let mut last = Outcome::Info("not tried".into());
                for attempt in 0..4 {
                    last = api
                        .decrypt(
                            &db::endpoint(node),
                            &dk.key,
                            &dk.ciphertext,
                            &dk.context,
                            Duration::from_secs(3),
                        )
                        .await;
                    if !matches!(last, Outcome::Info(_)) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(300 * (attempt + 1))).await;
                }
                lock(&results).push((i, node, last));
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let results = std::mem::take(&mut *lock(&results));
    let mut r = report::DataKeyResult {
        valid: true,
        generated: records.len(),
        checked: results.len() as u64,
        verified: 0,
        lost: 0,
        unavailable: 0,
        during_run: during.len() as u64,
        examples: during.iter().take(10).cloned().collect(),
    };
    for (i, node, out) in results {
        let Some(dk) = records.get(i) else { continue };
        let problem = match out {
            Outcome::Ok(p) if p == dk.plaintext => {
                r.verified += 1;
                None
            }
            Outcome::Ok(_) => {
                r.lost += 1;
                Some("wrong plaintext".to_owned())
            }
            Outcome::Fail(e) if e.starts_with("refused") => {
                r.unavailable += 1;
                Some(e)
            }
            Outcome::Fail(e) => {
                r.lost += 1;
                Some(e)
            }
            Outcome::Info(e) => {
                r.unavailable += 1;
                Some(e)
            }
        };
        if let Some(e) = problem {
            if r.examples.len() < 20 {
                r.examples.push(serde_json::json!({
                    "kind": "decrypt-after-heal",
                    "key": dk.key,
                    "node": node,
                    "generated_on": dk.node,
                    "generated_at_ns": dk.time,
                    "error": e,
                }));
            }
        }
    }
    r.valid = r.lost == 0 && r.unavailable == 0 && r.during_run == 0;
    r
}
