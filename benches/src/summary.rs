//! Folds the reports of several rounds into one comparison: per label and operation the median
//! throughput and latency over the rounds, the ratio of every label to a baseline, and whether
//! the goals were met. Written as JSON and as a markdown table.

use crate::report::{thousands, Report};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a result is measured against; none of it is asserted anywhere.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Goals {
    /// Successful operations per second each non-baseline label should reach.
    pub throughput: Option<f64>,
    /// p99 latency (ms) each non-baseline label should stay under.
    pub p99_ms: Option<f64>,
    /// Throughput multiple of the baseline each non-baseline label should reach.
    pub ratio: Option<f64>,
}

/// One label and operation over all rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub label: String,
    pub op: String,
    pub rounds: usize,
    pub throughput_median: f64,
    pub throughput_min: f64,
    pub throughput_max: f64,
    pub p50_ms_median: f64,
    pub p99_ms_median: f64,
    pub p99_ms_max: f64,
    pub p999_ms_median: f64,
    pub max_ms: f64,
    pub errors: u64,
}

/// A label against the baseline for one operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub label: String,
    pub baseline: String,
    pub op: String,
    /// Median throughput divided by the baseline's.
    pub throughput: f64,
    /// Median p99 divided by the baseline's (below 1 is better).
    pub p99: f64,
}

/// A goal checked against one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoalCheck {
    pub label: String,
    pub op: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How the numbers were obtained: machine, versions, command lines.
    pub meta: BTreeMap<String, String>,
    pub baseline: Option<String>,
    pub goals: Goals,
    pub groups: Vec<Group>,
    pub ratios: Vec<Ratio>,
    pub checks: Vec<GoalCheck>,
    pub runs: Vec<Report>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v.get(mid).copied().unwrap_or_default()
    } else {
        let a = v.get(mid - 1).copied().unwrap_or_default();
        let b = v.get(mid).copied().unwrap_or_default();
        (a + b) / 2.0
    }
}

/// Groups the reports by label and operation, in the order labels and operations first appear.
pub fn summarize(
    runs: Vec<Report>,
    baseline: Option<&str>,
    goals: Goals,
    meta: BTreeMap<String, String>,
) -> Summary {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut samples: BTreeMap<(String, String), Vec<&crate::report::OpStats>> = BTreeMap::new();
    for r in &runs {
        for s in &r.ops {
            let key = (r.label.clone(), s.op.clone());
            if !order.contains(&key) {
                order.push(key.clone());
            }
            samples.entry(key).or_default().push(s);
        }
    }
    let mut groups = Vec::new();
    for key in &order {
        let Some(list) = samples.get(key) else {
            continue;
        };
        let col = |f: &dyn Fn(&crate::report::OpStats) -> f64| -> Vec<f64> {
            list.iter().map(|s| f(s)).collect()
        };
        let mut tp = col(&|s| s.throughput);
        let mut p50 = col(&|s| s.latency.p50_ms);
        let mut p99 = col(&|s| s.latency.p99_ms);
        let mut p999 = col(&|s| s.latency.p999_ms);
        let fold_max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        groups.push(Group {
            label: key.0.clone(),
            op: key.1.clone(),
            rounds: list.len(),
            throughput_min: tp.iter().copied().fold(f64::INFINITY, f64::min),
            throughput_max: fold_max(&tp),
            throughput_median: median(&mut tp),
            p50_ms_median: median(&mut p50),
            p99_ms_max: fold_max(&p99),
            p99_ms_median: median(&mut p99),
            p999_ms_median: median(&mut p999),
            max_ms: fold_max(&col(&|s| s.latency.max_ms)),
            errors: list.iter().map(|s| s.errors).sum(),
        });
    }

    let mut ratios = Vec::new();
    let mut checks = Vec::new();
    for g in &groups {
        if Some(g.label.as_str()) == baseline {
            continue;
        }
        let base = baseline.and_then(|b| groups.iter().find(|x| x.label == b && x.op == g.op));
        if let Some(b) = base {
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            let r = Ratio {
                label: g.label.clone(),
                baseline: b.label.clone(),
                op: g.op.clone(),
                throughput: div(g.throughput_median, b.throughput_median),
                p99: div(g.p99_ms_median, b.p99_ms_median),
            };
            if let Some(want) = goals.ratio {
                checks.push(GoalCheck {
                    label: g.label.clone(),
                    op: g.op.clone(),
                    goal: format!("≥ {want}× {} throughput", b.label),
                    measured: format!("{:.2}×", r.throughput),
                    met: r.throughput >= want,
                });
            }
            ratios.push(r);
        }
        if let Some(want) = goals.throughput {
            checks.push(GoalCheck {
                label: g.label.clone(),
                op: g.op.clone(),
                goal: format!("≥ {} ops/s", thousands(want)),
                measured: format!("{} ops/s", thousands(g.throughput_median)),
                met: g.throughput_median >= want,
            });
        }
        if let Some(want) = goals.p99_ms {
            checks.push(GoalCheck {
                label: g.label.clone(),
                op: g.op.clone(),
                goal: format!("p99 < {want} ms"),
                measured: format!("{:.3} ms", g.p99_ms_median),
                met: g.p99_ms_median < want,
            });
        }
    }
    Summary {
        meta,
        baseline: baseline.map(str::to_owned),
        goals,
        groups,
        ratios,
        checks,
        runs,
    }
}

impl Summary {
    /// The markdown that goes into `benches/results/latest.md` and the README.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| target | op | rounds | ops/s (median) | ops/s (min – max) | p50 ms | p99 ms (median / worst) | p99.9 ms | errors |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for g in &self.groups {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} – {} | {:.3} | {:.3} / {:.3} | {:.3} | {} |",
                g.label,
                g.op,
                g.rounds,
                thousands(g.throughput_median),
                thousands(g.throughput_min),
                thousands(g.throughput_max),
                g.p50_ms_median,
                g.p99_ms_median,
                g.p99_ms_max,
                g.p999_ms_median,
                g.errors
            );
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "| comparison | op | throughput ratio | p99 ratio (lower is better) |"
            );
            let _ = writeln!(out, "|---|---|---:|---:|");
            for r in &self.ratios {
                let _ = writeln!(
                    out,
                    "| {} / {} | {} | {:.2}× | {:.2}× |",
                    r.label, r.baseline, r.op, r.throughput, r.p99
                );
            }
        }
        if !self.checks.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "| target | op | goal | measured | met |");
            let _ = writeln!(out, "|---|---|---|---:|---|");
            for c in &self.checks {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    c.label,
                    c.op,
                    c.goal,
                    c.measured,
                    if c.met { "yes" } else { "no" }
                );
            }
        }
        if !self.meta.is_empty() {
            let _ = writeln!(out);
            for (k, v) in &self.meta {
                let _ = writeln!(out, "- {k}: {v}");
            }
        }
        out
    }

    /// A few lines for the terminal: the ratios and the goals.
    pub fn brief(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            let _ = writeln!(
                out,
                "{:<12} {:<10} {:>10} ops/s  p99 {:.3} ms  ({} rounds, {} errors)",
                g.label,
                g.op,
                thousands(g.throughput_median),
                g.p99_ms_median,
                g.rounds,
                g.errors
            );
        }
        for r in &self.ratios {
            let _ = writeln!(
                out,
                "{} / {} {}: {:.2}x throughput, {:.2}x p99",
                r.label, r.baseline, r.op, r.throughput, r.p99
            );
        }
        for c in &self.checks {
            let _ = writeln!(
                out,
                "goal {} {} {}: {} ({})",
                c.label,
                c.op,
                c.goal,
                if c.met { "met" } else { "missed" },
                c.measured
            );
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::report::{Latency, OpStats};

    fn report(label: &str, op: &str, tp: f64, p99: f64) -> Report {
        let stats = OpStats {
            op: op.into(),
            ok: tp as u64 * 10,
            errors: 0,
            throughput: tp,
            latency: Latency {
                p99_ms: p99,
                ..Latency::default()
            },
        };
        Report {
            tool: "t".into(),
            label: label.into(),
            target: label.into(),
            endpoints: vec![],
            protocol: "http/1.1".into(),
            mode: "closed".into(),
            rate: None,
            concurrency: 16,
            connections_per_endpoint: 16,
            keys: 1,
            plaintext_size: 32,
            mix: vec![],
            warmup_s: 0.0,
            duration_s: 10.0,
            started_at: 0,
            scheduled: None,
            total: stats.clone(),
            ops: vec![stats],
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
        }
    }

    #[test]
    fn medians_ratios_and_goals() {
        let runs = vec![
            report("kes", "generate", 10_000.0, 1.0),
            report("openbao", "generate", 2_000.0, 4.0),
            report("kes", "generate", 12_000.0, 2.0),
            report("openbao", "generate", 3_000.0, 5.0),
            report("kes", "generate", 11_000.0, 1.2),
            report("openbao", "generate", 2_500.0, 4.5),
        ];
        let s = summarize(
            runs,
            Some("openbao"),
            Goals {
                throughput: Some(12_600.0),
                p99_ms: Some(1.5),
                ratio: Some(4.0),
            },
            BTreeMap::from([("cores".to_owned(), "2".to_owned())]),
        );
        assert_eq!(s.groups.len(), 2);
        let kes = &s.groups[0];
        assert_eq!((kes.label.as_str(), kes.rounds), ("kes", 3));
        assert_eq!(kes.throughput_median, 11_000.0);
        assert_eq!(
            (kes.throughput_min, kes.throughput_max),
            (10_000.0, 12_000.0)
        );
        assert_eq!(kes.p99_ms_median, 1.2);
        assert_eq!(kes.p99_ms_max, 2.0);
        assert_eq!(s.ratios.len(), 1);
        assert!((s.ratios[0].throughput - 4.4).abs() < 1e-9);
        let met: Vec<bool> = s.checks.iter().map(|c| c.met).collect();
        assert_eq!(met, vec![true, false, true]);
        let md = s.markdown();
        assert!(
            md.contains("| kes | generate | 3 | 11,000 | 10,000 – 12,000 |"),
            "{md}"
        );
        assert!(md.contains("| kes / openbao | generate | 4.40× |"), "{md}");
        assert!(md.contains("- cores: 2"), "{md}");
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
