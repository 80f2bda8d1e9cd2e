//! summary.json and summary.md of a run.

use crate::check::{LifecycleResult, PhaseStats, VisibilityResult};
use crate::nemesis::{Action, Step};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug, Serialize)]
pub struct DataKeyResult {
    pub valid: bool,
    pub generated: usize,
    /// Decryptions tried after the cluster healed (data keys x nodes).
    pub checked: u64,
    pub verified: u64,
    /// Wrong plaintext or "not found": data loss.
    pub lost: u64,
    /// Still failing with an indeterminate error after the retries.
    pub unavailable: u64,
    /// Anomalies seen while the faults ran (wrong plaintext, refusals).
    pub during_run: u64,
    pub examples: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub name: String,
    pub valid: bool,
    pub seed: u64,
    pub nodes: usize,
    pub kms: String,
    pub duration_s: f64,
    pub nemeses: Vec<String>,
    pub command: String,
    pub schedule: Vec<Step>,
    pub actions: Vec<Action>,
    pub phases: Vec<crate::nemesis::PhaseEvent>,
    pub lifecycle: LifecycleResult,
    pub datakeys: DataKeyResult,
    pub availability: BTreeMap<String, PhaseStats>,
    pub visibility: VisibilityResult,
    pub final_members: Vec<u64>,
    pub cluster_healed: bool,
    pub notes: Vec<String>,
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "valid"
    } else {
        "**INVALID**"
    }
}

pub fn markdown(s: &Summary) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# kes-jepsen run `{}`\n", s.name);
    let _ = writeln!(
        m,
        "**Verdict: {}** — {} nodes, KMS `{}`, {:.0} s, seed `{}`\n",
        if s.valid {
            "valid, no anomalies"
        } else {
            "ANOMALIES FOUND"
        },
        s.nodes,
        s.kms,
        s.duration_s,
        s.seed
    );
    let _ = writeln!(m, "Repeat with: `{}`\n", s.command);
    let _ = writeln!(m, "Nemeses: {}\n", s.nemeses.join(", "));
    let _ = writeln!(
        m,
        "![throughput and latency over time, faults shaded](timeline.svg)\n"
    );
    let _ = writeln!(m, "## Verdicts\n");
    let _ = writeln!(m, "| workload | verdict | figures |\n|---|---|---|");
    let lc = &s.lifecycle;
    let _ =
        writeln!(
        m,
        "| key lifecycle (linearizability per key) | {} | {} ok, {} fail, {} indeterminate; {} |",
        verdict(lc.valid),
        lc.counts.ok,
        lc.counts.fail,
        lc.counts.info,
        lc.keys
            .iter()
            .map(|(k, r)| format!("`{k}`: {} ({} ops, {} unknown)", r.verdict, r.calls, r.unknown))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let d = &s.datakeys;
    let _ = writeln!(
        m,
        "| data keys (every acknowledged data key decrypts on every node) | {} | {} generated, {} of {} decryptions verified after healing, {} lost, {} unavailable, {} anomalies during the run |",
        verdict(d.valid),
        d.generated,
        d.verified,
        d.checked,
        d.lost,
        d.unavailable,
        d.during_run
    );
    let v = &s.visibility;
    let _ = writeln!(
        m,
        "| delete visibility (no use > 1 s after the acknowledged delete on a connected node) | {} | {} rounds, {} deletes acknowledged, {} anomalies |",
        verdict(v.valid),
        v.rounds,
        v.acknowledged,
        v.anomalies.len()
    );
    let _ = writeln!(
        m,
        "| cluster healed after the faults | {} | final members {:?} |",
        verdict(s.cluster_healed),
        s.final_members
    );

    let _ = writeln!(m, "\n## Availability of crypto operations on cached keys\n");
    let _ = writeln!(
        m,
        "Success rate of generate/decrypt per phase; *connected* counts only operations on nodes that were running and connected to the majority for the whole operation. Latency of successful operations.\n"
    );
    let _ = writeln!(
        m,
        "| phase | seconds | all | connected | per node | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|"
    );
    for (phase, p) in &s.availability {
        let _ = writeln!(
            m,
            "| {phase} | {:.0} | {:.1}% of {} | {:.1}% of {} | {} | {:.1} | {:.1} | {:.0} |",
            p.seconds,
            p.all.percent(),
            p.all.total,
            p.connected.percent(),
            p.connected.total,
            p.per_node
                .iter()
                .map(|(n, r)| format!("n{n} {:.0}%", r.percent()))
                .collect::<Vec<_>>()
                .join(", "),
            p.p50_ms,
            p.p99_ms,
            p.max_ms
        );
    }

    let _ = writeln!(m, "\n## Delete visibility\n");
    let _ = writeln!(
        m,
        "Time from the acknowledged delete until the node answers `key does not exist`.\n"
    );
    let _ = writeln!(
        m,
        "| node | rounds | stopped | p50 ms | p99 ms | max ms | late uses (> 1 s) | anomalies |\n|---|---|---|---|---|---|---|---|"
    );
    for (n, r) in &v.per_node {
        let _ = writeln!(
            m,
            "| n{n} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} |",
            r.rounds, r.stopped, r.p50_ms, r.p99_ms, r.max_ms, r.late_uses, r.anomalies
        );
    }

    let _ = writeln!(m, "\n## Nemesis schedule\n");
    let _ = writeln!(m, "| start s | fault | duration s |\n|---|---|---|");
    for st in &s.schedule {
        let _ = writeln!(
            m,
            "| {:.1} | {} | {:.1} |",
            st.at_s,
            st.fault.name(),
            st.duration_s
        );
    }
    let _ = writeln!(m, "\n<details><summary>What the nemesis did</summary>\n");
    for a in &s.actions {
        let _ = writeln!(m, "- {:.1} s {}: {}", a.time as f64 / 1e9, a.fault, a.what);
    }
    let _ = writeln!(m, "\n</details>");

    let anomalies: Vec<String> = s
        .lifecycle
        .keys
        .iter()
        .filter(|(_, r)| !r.involved.is_empty())
        .map(|(k, r)| {
            let ops: Vec<String> = r
                .involved
                .iter()
                .map(|o| {
                    format!(
                        "  - {:.3} s process {:?} {:?} {} on node {}{}",
                        o.time as f64 / 1e9,
                        o.process,
                        o.kind,
                        o.f,
                        o.node.unwrap_or(0),
                        o.error
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            format!("- key `{k}`: {}\n{}", r.verdict, ops.join("\n"))
        })
        .chain(d.examples.iter().map(|e| format!("- data key: {e}")))
        .chain(
            v.anomalies
                .iter()
                .map(|e| format!("- delete visibility: {e}")),
        )
        .collect();
    if !anomalies.is_empty() {
        let _ = writeln!(m, "\n## Anomalies\n");
        for a in anomalies.iter().take(60) {
            let _ = writeln!(m, "{a}");
        }
    }
    if !s.notes.is_empty() {
        let _ = writeln!(m, "\n## Notes\n");
        for n in &s.notes {
            let _ = writeln!(m, "- {n}");
        }
    }
    m
}

/// The run as a picture: completed operations per second (ok, and failed or indeterminate)
/// and the p99 latency of successful ones, with the fault intervals shaded and named.
pub fn timeline_svg(
    ops: &[crate::history::Op],
    phases: &[crate::nemesis::PhaseEvent],
    end: u64,
) -> String {
    use crate::history::OpType;
    const W: f64 = 1000.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 20.0;
    let secs = ((end as f64 / 1e9).ceil() as usize).clamp(1, 100_000);
    let mut ok = vec![0u32; secs];
    let mut bad = vec![0u32; secs];
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); secs];
    let mut invoked: std::collections::HashMap<&crate::history::Process, u64> =
        std::collections::HashMap::new();
    for op in ops {
        if op.kind == OpType::Invoke {
            invoked.insert(&op.process, op.time);
            continue;
        }
        let b = ((op.time / 1_000_000_000) as usize).min(secs - 1);
        let start = invoked.remove(&op.process);
        if op.kind == OpType::Ok {
            ok[b] += 1;
            if let Some(s) = start {
                lat[b].push(op.time.saturating_sub(s) as f64 / 1e6);
            }
        } else if !(op.kind == OpType::Fail
            && matches!(op.error.as_deref(), Some("exists" | "not-found")))
        {
            bad[b] += 1;
        }
    }
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / secs as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="440" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Fault intervals.
    for (i, p) in phases.iter().enumerate() {
        if matches!(p.phase.as_str(), "setup" | "healthy" | "recovery" | "final") {
            continue;
        }
        let to = phases.get(i + 1).map_or(end, |n| n.time);
        let (x0, x1) = (x(p.time as f64 / 1e9), x(to as f64 / 1e9));
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="20" width="{:.1}" height="390" fill="#f4a261" fill-opacity="0.25"/><text x="{:.1}" y="30" transform="rotate(90 {:.1} 30)" fill="#7a3e00">{}</text>"##,
            (x1 - x0).max(1.0),
            x0 + 2.0,
            x0 + 2.0,
            p.phase
        );
    }
    // Throughput panel, y 20..200.
    let top = ok
        .iter()
        .zip(&bad)
        .map(|(a, b)| a.max(b))
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y1 = |v: f64| 200.0 - 170.0 * v / top;
    for (series, color) in [(&ok, "#2a9d8f"), (&bad, "#e63946")] {
        let pts: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i as f64 + 0.5), y1(f64::from(*v))))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{}"/>"#,
            pts.join(" ")
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="14">operations per second: <tspan fill="#2a9d8f">ok</tspan>, <tspan fill="#e63946">failed or indeterminate</tspan> (max {top:.0}/s)</text>"##
    );
    // Latency panel, log scale 0.1 ms .. 10 s, y 230..410.
    let y2 = |ms: f64| {
        let l = ms.clamp(0.1, 10_000.0).log10(); // -1 .. 4
        410.0 - 180.0 * (l + 1.0) / 5.0
    };
    for (ms, label) in [
        (0.1, "0.1 ms"),
        (1.0, "1 ms"),
        (10.0, "10 ms"),
        (100.0, "100 ms"),
        (1000.0, "1 s"),
        (10_000.0, "10 s"),
    ] {
        let y = y2(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="4" y="{:.1}">{label}</text>"##,
            W - RIGHT,
            y + 4.0
        );
    }
    let pts: Vec<String> = lat
        .iter_mut()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(i, v)| {
            v.sort_by(f64::total_cmp);
            let p99 = v[((v.len() as f64 - 1.0) * 0.99).round() as usize];
            format!("{:.1},{:.1}", x(i as f64 + 0.5), y2(p99))
        })
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#264653" stroke-width="1.2" points="{}"/><text x="{LEFT}" y="225">p99 latency of successful operations per second (log scale)</text>"##,
        pts.join(" ")
    );
    // Time axis.
    let step = [10usize, 30, 60, 120, 300, 600]
        .into_iter()
        .find(|s| secs / s <= 12)
        .unwrap_or(1200);
    for t in (0..=secs).step_by(step) {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="410" y2="414" stroke="#333"/><text x="{0:.1}" y="428" text-anchor="middle">{t} s</text>"##,
            x(t as f64)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="410" y2="410" stroke="#333"/><line x1="{LEFT}" x2="{:.1}" y1="200" y2="200" stroke="#333"/></svg>"##,
        W - RIGHT,
        W - RIGHT
    );
    svg
}
