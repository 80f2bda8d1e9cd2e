//! The measurement loop: workers, pacing, recording and the progress line.
//!
//! Warm-up and measurement are one continuous run over the same connections; a request belongs
//! to the measurement when its intended send time falls in the measurement window. In
//! closed-loop mode the intended time is the actual send time. In open-loop mode request `i` is
//! due at `start + i / rate`; a pacer releases each request when it is due, a free worker takes
//! it and measures the latency from the due time, so time spent waiting for a free worker
//! (because the server is slow) is counted, as the client of a real open system would
//! experience it.
//!
//! The pacer is a plain thread rather than a tokio timer: tokio's timer wheel has millisecond
//! resolution, which would add up to a millisecond of the generator's own lateness to every
//! open-loop latency. The thread sleeps at most [`PACER_TICK`] at a time and hands out due
//! requests as semaphore permits, which wake waiting workers at once.

use crate::config::{limits, Config, Mode, Op, N_OPS};
use crate::report::{Latency, MixEntry, OpStats, Report, Tick};
use crate::target::{prepare, Plan};
use crate::transport::{Answer, Failure, Transport};
use anyhow::Context;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most requests one worker sends; far beyond any run's duration, it only guarantees the loop
/// ends even if the clock stopped.
const MAX_REQUESTS_PER_WORKER: u64 = 1 << 40;

/// Longest the pacer sleeps before looking at the clock again.
const PACER_TICK: Duration = Duration::from_micros(200);

/// Whether [`run`] prints a progress line once a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    None,
    Stderr,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, limits::MAX_LATENCY_US, 3).context("histogram")
}

/// What one worker measured.
struct WorkerStats {
    /// Per operation, microseconds, successful requests of the measurement window.
    hist: Vec<Histogram<u64>>,
    ok: [u64; N_OPS],
    errors: [u64; N_OPS],
    /// Creates and deletes a retry found already done (see [`replayed`]).
    replayed: u64,
    error_counts: BTreeMap<String, u64>,
    error_samples: BTreeMap<String, String>,
    /// Every successful request since the last progress line, warm-up included.
    interval: Histogram<u64>,
    last_done: Option<Instant>,
}

impl WorkerStats {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            hist: (0..Op::ALL.len())
                .map(|_| histogram())
                .collect::<anyhow::Result<_>>()?,
            ok: [0; N_OPS],
            errors: [0; N_OPS],
            replayed: 0,
            error_counts: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            interval: histogram()?,
            last_done: None,
        })
    }
}

enum Outcome {
    Ok,
    /// A success in which a retried create or delete found its earlier attempt's effect.
    Replayed,
    Status(u16, String),
    Failed(Failure),
}

struct Shared {
    transport: Transport,
    plan: Plan,
    /// Operations repeated by weight; a uniform pick from it follows the mix.
    wheel: Vec<Op>,
    keys: usize,
    seed: u64,
    rate: Option<f64>,
    start: Instant,
    measure_start: Instant,
    end: Instant,
    /// Open loop: no request due before `end` is started after this; what is left unsent
    /// shows up as the difference between scheduled and sent.
    drain_until: Instant,
    limit: Option<u64>,
    ticket: AtomicU64,
    /// Open loop: one permit per request that is due and not yet taken; closed when the
    /// schedule is over.
    due: tokio::sync::Semaphore,
    claimed: AtomicU64,
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    stats: Vec<Mutex<WorkerStats>>,
}

/// Runs the benchmark described by `cfg` and returns what it measured.
pub async fn run(cfg: &Config, progress: ProgressMode) -> anyhow::Result<Report> {
    cfg.validate()?;
    let started_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let transport = Transport::new(cfg)?;
    let plan = prepare(cfg, &transport).await?;
    let endpoints = transport.urls();

    let mut wheel = Vec::new();
    let total_weight: u64 = cfg.mix.iter().map(|(_, w)| u64::from(*w)).sum();
    for (op, w) in &cfg.mix {
        // Weights are scaled to shares of 1000 so the wheel stays small however large they are.
        let share = (u64::from(*w) * 1000 / total_weight.max(1)).max(1);
        wheel.extend(std::iter::repeat_n(*op, share as usize));
    }

    let start = Instant::now();
    let measure_start = start + cfg.warmup;
    let end = measure_start + cfg.duration;
    let shared = Arc::new(Shared {
        transport,
        plan,
        wheel,
        keys: cfg.keys,
        seed: cfg.seed,
        rate: match cfg.mode {
            Mode::Open { rate } => Some(rate),
            Mode::Closed => None,
        },
        start,
        measure_start,
        end,
        drain_until: end + cfg.timeout,
        limit: cfg.requests,
        ticket: AtomicU64::new(0),
        due: tokio::sync::Semaphore::new(0),
        claimed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stats: (0..cfg.concurrency)
            .map(|_| WorkerStats::new().map(Mutex::new))
            .collect::<anyhow::Result<_>>()?,
    });

    let mut workers = tokio::task::JoinSet::new();
    for id in 0..cfg.concurrency {
        workers.spawn(worker(Arc::clone(&shared), id));
    }
    let pacer = shared.rate.map(|rate| {
        let sh = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || pace(&sh, rate))
    });
    let finished = Arc::new(AtomicBool::new(false));
    // Always running: it also records the per-second timeline of the report.
    let ticker = tokio::spawn(progress_loop(
        Arc::clone(&shared),
        Arc::clone(&finished),
        cfg.timeout,
        progress == ProgressMode::Stderr,
    ));
    while let Some(r) = workers.join_next().await {
        r.context("a worker failed")?;
    }
    finished.store(true, Ordering::Relaxed);
    if let Some(p) = pacer {
        shared.stop.store(true, Ordering::Relaxed);
        let _ = p.await;
    }
    let timeline = ticker.await.unwrap_or_default();
    let mut report = build_report(cfg, &shared, endpoints, started_at);
    report.timeline = timeline;
    Ok(report)
}

async fn worker(sh: Arc<Shared>, id: usize) {
    let mut rng = StdRng::seed_from_u64(sh.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut temp_keys = 0u64;
    for _ in 0..MAX_REQUESTS_PER_WORKER {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let intended = match sh.rate {
            Some(rate) => {
                match sh.due.acquire().await {
                    Ok(permit) => permit.forget(),
                    // The schedule is over.
                    Err(_) => break,
                }
                let i = sh.ticket.fetch_add(1, Ordering::Relaxed);
                let due = sh.start + Duration::from_secs_f64(i as f64 / rate);
                if due >= sh.end || Instant::now() >= sh.drain_until {
                    break;
                }
                due
            }
            None => {
                let now = Instant::now();
                if now >= sh.end {
                    break;
                }
                now
            }
        };
        let measured = intended >= sh.measure_start;
        if measured {
            if let Some(limit) = sh.limit {
                if sh.claimed.fetch_add(1, Ordering::Relaxed) >= limit {
                    sh.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        let Some(&op) = sh.wheel.get(rng.gen_range(0..sh.wheel.len().max(1))) else {
            break;
        };
        let key = rng.gen_range(0..sh.keys.max(1));
        let outcome = execute(&sh, id, op, key, &mut temp_keys).await;
        let done = Instant::now();
        let us = (done.saturating_duration_since(intended).as_micros() as u64)
            .clamp(1, limits::MAX_LATENCY_US);
        let i = op.index();
        let Some(stats) = sh.stats.get(id) else { break };
        let mut st = stats.lock();
        match outcome {
            Outcome::Ok | Outcome::Replayed => {
                sh.ok.fetch_add(1, Ordering::Relaxed);
                st.interval.saturating_record(us);
                if measured {
                    st.hist[i].saturating_record(us);
                    st.ok[i] += 1;
                    if matches!(outcome, Outcome::Replayed) {
                        st.replayed += 1;
                    }
                }
            }
            Outcome::Status(status, body) => {
                sh.failed.fetch_add(1, Ordering::Relaxed);
                if measured {
                    st.errors[i] += 1;
                    note_error(&mut st, status.to_string(), body);
                }
            }
            Outcome::Failed(f) => {
                sh.failed.fetch_add(1, Ordering::Relaxed);
                if measured {
                    st.errors[i] += 1;
                    note_error(&mut st, f.kind.to_owned(), f.message);
                }
            }
        }
        if measured {
            st.last_done = Some(done);
        }
    }
}

/// Releases request `i` at `start + i / rate` until the schedule ends, then waits for the
/// workers to take what was released (at most until `drain_until`) and closes the schedule.
fn pace(sh: &Shared, rate: f64) {
    let total = ((sh.end - sh.start).as_secs_f64() * rate).ceil() as u64;
    let mut released = 0u64;
    // Bounded by the schedule's length; the count only guards against a clock that stalls.
    let max_rounds = (sh.drain_until - sh.start).as_micros() as u64 / 10 + 1000;
    for _ in 0..max_rounds {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if now >= sh.drain_until {
            break;
        }
        if released < total {
            let elapsed = now.saturating_duration_since(sh.start).as_secs_f64();
            let due = ((elapsed * rate).floor() as u64 + 1).min(total);
            if due > released {
                sh.due.add_permits((due - released) as usize);
                released = due;
            }
        }
        if released >= total && sh.ticket.load(Ordering::Relaxed) >= released {
            break;
        }
        let next = if released < total {
            (sh.start + Duration::from_secs_f64(released as f64 / rate))
                .saturating_duration_since(now)
        } else {
            // Everything is released: only waiting for the workers to take it.
            Duration::from_millis(1)
        };
        std::thread::sleep(next.min(PACER_TICK));
    }
    sh.due.close();
}

fn note_error(st: &mut WorkerStats, kind: String, message: String) {
    *st.error_counts.entry(kind.clone()).or_default() += 1;
    st.error_samples.entry(kind).or_insert_with(|| {
        let m = message.trim();
        m.chars().take(160).collect()
    });
}

/// The answer KES gives a create of a key that exists, and a delete of one that does not.
const KEY_EXISTS: (u16, &str) = (400, "key already exists");
const KEY_MISSING: (u16, &str) = (404, "key does not exist");

/// Whether `answer`, to a create or delete of a key name this run uses once, is that request's
/// own earlier attempt seen again: an attempt got no answer but may have been carried out
/// (`uncertain`, see [`Transport::send_tracked`]), and the retry is told the key already exists
/// (create) or no longer does (delete). Retries resend writes as kms-go does; this is the
/// write having succeeded, not a failure of the server.
fn replayed(answer: &Result<Answer, Failure>, uncertain: bool, done: (u16, &str)) -> bool {
    match answer {
        Ok(a) if uncertain && a.status == done.0 => {
            String::from_utf8_lossy(&a.body).contains(done.1)
        }
        _ => false,
    }
}

async fn execute(sh: &Shared, worker: usize, op: Op, key: usize, temp_keys: &mut u64) -> Outcome {
    let mut create_replayed = false;
    let answer = if op == Op::Create {
        *temp_keys += 1;
        let req = sh.plan.create(worker, *temp_keys);
        let (answer, uncertain) = sh.transport.send_tracked(worker, &req).await;
        if replayed(&answer, uncertain, KEY_EXISTS) {
            return Outcome::Replayed;
        }
        answer
    } else if op == Op::CreateDelete {
        *temp_keys += 1;
        let (create, delete) = sh.plan.create_delete(worker, *temp_keys);
        let (created, uncertain) = sh.transport.send_tracked(worker, &create).await;
        create_replayed = replayed(&created, uncertain, KEY_EXISTS);
        match created {
            Ok(a) if a.is_success() || create_replayed => {
                let (deleted, uncertain) = sh.transport.send_tracked(worker, &delete).await;
                if replayed(&deleted, uncertain, KEY_MISSING) {
                    return Outcome::Replayed;
                }
                deleted
            }
            other => other,
        }
    } else {
        match sh.plan.request(op, key) {
            Some(req) => sh.transport.send(worker, req).await,
            None => return Outcome::Status(0, format!("no prepared request for {}", op.as_str())),
        }
    };
    match answer {
        Ok(a) if a.is_success() && create_replayed => Outcome::Replayed,
        Ok(a) if a.is_success() => Outcome::Ok,
        Ok(a) => Outcome::Status(a.status, String::from_utf8_lossy(&a.body).into_owned()),
        Err(f) => Outcome::Failed(f),
    }
}

/// Prints the progress line once a second (if `print`) and returns what happened in each
/// second, warm-up included.
async fn progress_loop(
    sh: Arc<Shared>,
    finished: Arc<AtomicBool>,
    timeout: Duration,
    print: bool,
) -> Vec<Tick> {
    let mut timeline = Vec::new();
    let tty = print && std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let (mut last_ok, mut last_failed) = (0u64, 0u64);
    let mut last = Instant::now();
    // The run lasts warm-up + duration plus the last requests' timeout; a few ticks spare.
    let max_ticks = (sh.end - sh.start + timeout).as_secs() + 5;
    for _ in 0..max_ticks {
        tick.tick().await;
        if finished.load(Ordering::Relaxed) {
            break;
        }
        let Ok(mut merged) = histogram() else { break };
        for s in &sh.stats {
            let mut s = s.lock();
            let _ = merged.add(&s.interval);
            s.interval.reset();
        }
        let now = Instant::now();
        let secs = now.duration_since(last).as_secs_f64().max(1e-3);
        last = now;
        let ok = sh.ok.load(Ordering::Relaxed);
        let failed = sh.failed.load(Ordering::Relaxed);
        let phase = if now < sh.measure_start {
            "warm-up"
        } else {
            "measure"
        };
        let l = Latency::from_histogram(&merged);
        timeline.push(Tick {
            t_s: now.duration_since(sh.start).as_secs_f64(),
            ok: ok - last_ok,
            errors: failed - last_failed,
            p99_ms: l.p99_ms,
            max_ms: l.max_ms,
        });
        if !print {
            last_ok = ok;
            last_failed = failed;
            continue;
        }
        let line = format!(
            "{:>4.0}s {phase}  {:>9} ok/s  {:>7} err/s  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            now.duration_since(sh.start).as_secs_f64(),
            crate::report::thousands((ok - last_ok) as f64 / secs),
            crate::report::thousands((failed - last_failed) as f64 / secs),
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
        );
        last_ok = ok;
        last_failed = failed;
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if tty {
        let _ = writeln!(std::io::stderr());
    }
    timeline
}

fn build_report(cfg: &Config, sh: &Shared, endpoints: Vec<String>, started_at: u64) -> Report {
    let mut per_op: Vec<Histogram<u64>> = Vec::new();
    let mut ok = [0u64; N_OPS];
    let mut errors = [0u64; N_OPS];
    let mut error_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut error_samples: BTreeMap<String, String> = BTreeMap::new();
    let mut last_done: Option<Instant> = None;
    let mut replayed = 0u64;
    for s in &sh.stats {
        let s = s.lock();
        replayed += s.replayed;
        for (i, h) in s.hist.iter().enumerate() {
            match per_op.get_mut(i) {
                Some(m) => {
                    let _ = m.add(h);
                }
                None => per_op.push(h.clone()),
            }
        }
        for i in 0..N_OPS {
            ok[i] += s.ok[i];
            errors[i] += s.errors[i];
        }
        for (k, v) in &s.error_counts {
            *error_counts.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.error_samples {
            error_samples.entry(k.clone()).or_insert_with(|| v.clone());
        }
        last_done = last_done.max(s.last_done);
    }
    let elapsed = match last_done {
        Some(t) if t > sh.measure_start => t.duration_since(sh.measure_start),
        _ => cfg.duration,
    };
    let secs = elapsed.as_secs_f64().max(1e-9);

    let mut ops = Vec::new();
    let mut total_hist = histogram().ok();
    for (op, _) in &cfg.mix {
        let i = op.index();
        let Some(h) = per_op.get(i) else { continue };
        if let Some(t) = total_hist.as_mut() {
            let _ = t.add(h);
        }
        ops.push(OpStats {
            op: op.as_str().to_owned(),
            ok: ok[i],
            errors: errors[i],
            throughput: ok[i] as f64 / secs,
            latency: Latency::from_histogram(h),
        });
    }
    let total_ok: u64 = ops.iter().map(|o| o.ok).sum();
    let total = OpStats {
        op: "total".to_owned(),
        ok: total_ok,
        errors: ops.iter().map(|o| o.errors).sum(),
        throughput: total_ok as f64 / secs,
        latency: total_hist
            .as_ref()
            .map(Latency::from_histogram)
            .unwrap_or_default(),
    };
    let scheduled = match (sh.rate, sh.limit) {
        (Some(rate), None) => Some((rate * cfg.duration.as_secs_f64()).round() as u64),
        _ => None,
    };
    Report {
        tool: format!("kes-bench {}", env!("CARGO_PKG_VERSION")),
        label: cfg.target.as_str().to_owned(),
        target: cfg.target.as_str().to_owned(),
        endpoints,
        protocol: cfg.protocol.as_str().to_owned(),
        mode: if sh.rate.is_some() { "open" } else { "closed" }.to_owned(),
        rate: sh.rate,
        concurrency: cfg.concurrency,
        connections_per_endpoint: cfg.connections_per_endpoint(),
        keys: cfg.keys,
        plaintext_size: cfg.plaintext_size,
        mix: cfg
            .mix
            .iter()
            .map(|(op, w)| MixEntry {
                op: op.as_str().to_owned(),
                weight: *w,
            })
            .collect(),
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: elapsed.as_secs_f64(),
        started_at,
        scheduled,
        total,
        ops,
        errors: error_counts,
        error_samples,
        replayed,
        reconnect: cfg.reconnect,
        timeline: Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(status: u16, body: &str) -> Result<Answer, Failure> {
        Ok(Answer {
            status,
            body: Bytes::from(body.to_owned()),
        })
    }

    #[test]
    fn a_retried_write_meeting_its_own_effect_is_replayed() {
        let exists = answer(400, r#"{"message":"key already exists"}"#);
        let missing = answer(404, r#"{"message":"key does not exist"}"#);
        assert!(replayed(&exists, true, KEY_EXISTS));
        assert!(replayed(&missing, true, KEY_MISSING));
        // Without an attempt whose answer was lost, it is a real conflict.
        assert!(!replayed(&exists, false, KEY_EXISTS));
        assert!(!replayed(&missing, false, KEY_MISSING));
        // Other answers stay what they are.
        assert!(!replayed(&exists, true, KEY_MISSING));
        assert!(!replayed(&answer(200, ""), true, KEY_EXISTS));
        assert!(!replayed(
            &answer(400, "invalid key name"),
            true,
            KEY_EXISTS
        ));
        let failed: Result<Answer, Failure> = Err(Failure {
            kind: "connect",
            message: "refused".into(),
            retryable: true,
        });
        assert!(!replayed(&failed, true, KEY_EXISTS));
    }
}
