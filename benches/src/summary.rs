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
    pub baselines: Vec<Baseline>,
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

/// A label the others are compared with, and the throughput multiple they should reach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub label: String,
    /// Goal for every other label's throughput divided by this one's.
    pub ratio_goal: Option<f64>,
}

impl Baseline {
    /// `openbao` or `openbao=5` (the goal multiple).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s.split_once('=') {
            None => Ok(Self {
                label: s.trim().to_owned(),
                ratio_goal: None,
            }),
            Some((l, g)) => Ok(Self {
                label: l.trim().to_owned(),
                ratio_goal: Some(
                    g.trim()
                        .parse()
                        .map_err(|_| anyhow::anyhow!("invalid ratio goal in '{s}'"))?,
                ),
            }),
        }
    }
}

/// Groups the reports by label and operation, in the order labels and operations first appear.
/// Every label is compared with every baseline, except with baselines listed before it
/// (`--baseline openbao --baseline kes` compares kes with openbao and the rest with both).
/// Labels in `unrated` are compared with none. The absolute goals apply to `goal_labels`, or
/// to every label that is not a baseline.
pub fn summarize(
    runs: Vec<Report>,
    baselines: &[Baseline],
    unrated: &[String],
    goals: Goals,
    goal_labels: &[String],
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
    let is_baseline = |l: &str| baselines.iter().any(|b| b.label == l);
    for (bi, b) in baselines.iter().enumerate() {
        let earlier: Vec<&str> = baselines
            .iter()
            .take(bi)
            .map(|x| x.label.as_str())
            .collect();
        for g in &groups {
            if g.label == b.label
                || earlier.contains(&g.label.as_str())
                || unrated.contains(&g.label)
            {
                continue;
            }
            let Some(base) = groups.iter().find(|x| x.label == b.label && x.op == g.op) else {
                continue;
            };
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            let r = Ratio {
                label: g.label.clone(),
                baseline: base.label.clone(),
                op: g.op.clone(),
                throughput: div(g.throughput_median, base.throughput_median),
                p99: div(g.p99_ms_median, base.p99_ms_median),
            };
            if let Some(want) = b.ratio_goal.or(goals.ratio) {
                checks.push(GoalCheck {
                    label: g.label.clone(),
                    op: g.op.clone(),
                    goal: format!("≥ {want}× {} throughput", base.label),
                    measured: format!("{:.2}×", r.throughput),
                    met: r.throughput >= want,
                });
            }
            ratios.push(r);
        }
    }
    for g in &groups {
        let applies = if goal_labels.is_empty() {
            !is_baseline(&g.label)
        } else {
            goal_labels.contains(&g.label)
        };
        if !applies {
            continue;
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
        baselines: baselines.to_vec(),
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
            replayed: 0,
            reconnect: false,
            timeline: Vec::new(),
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
            &[Baseline::parse("openbao").unwrap()],
            &[],
            Goals {
                throughput: Some(12_600.0),
                p99_ms: Some(1.5),
                ratio: Some(4.0),
            },
            &[],
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

        // Two baselines: the cluster against both, the single node only against openbao; the
        // absolute goals only for the labels named.
        let runs = vec![
            report("kes", "generate", 10_000.0, 1.0),
            report("cluster", "generate", 9_500.0, 1.0),
            report("openbao", "generate", 2_000.0, 4.0),
            report("kes-rate", "generate", 5_000.0, 1.0),
        ];
        let s = summarize(
            runs,
            &[
                Baseline::parse("openbao=5").unwrap(),
                Baseline::parse("kes = 0.9").unwrap(),
            ],
            &["kes-rate".to_owned()],
            Goals {
                throughput: Some(9_000.0),
                ..Goals::default()
            },
            &["kes".to_owned()],
            BTreeMap::new(),
        );
        let got: Vec<(String, String, String)> = s
            .ratios
            .iter()
            .map(|r| {
                (
                    r.label.clone(),
                    r.baseline.clone(),
                    format!("{:.2}", r.throughput),
                )
            })
            .collect();
        let want = [
            ("kes", "openbao", "5.00"),
            ("cluster", "openbao", "4.75"),
            ("cluster", "kes", "0.95"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str()), w);
        }
        let met: Vec<(&str, bool)> = s.checks.iter().map(|c| (c.label.as_str(), c.met)).collect();
        assert_eq!(
            met,
            vec![
                ("kes", true),
                ("cluster", false),
                ("cluster", true),
                ("kes", true)
            ]
        );
        assert!(Baseline::parse("x=y").is_err());
        assert_eq!(median(&mut []), 0.0);
    }
}
