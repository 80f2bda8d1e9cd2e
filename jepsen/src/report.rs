//! results.json, summary.md and timeline.svg of a run.

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

/// Per second of a run: operations completed ok, operations failed or indeterminate (a definite
/// `exists`/`not-found` answer is a result, not a failure), and the p99 latency of the
/// successful ones in milliseconds.
#[derive(Debug, Default, PartialEq)]
pub struct Buckets {
    pub ok: Vec<u32>,
    pub bad: Vec<u32>,
    pub p99_ms: Vec<Option<f64>>,
}

/// Sorts the completions of `ops` into one-second buckets up to `end` (ns since the start).
pub fn buckets(ops: &[crate::history::Op], end: u64) -> Buckets {
    use crate::history::OpType;
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
    let p99_ms = lat
        .iter_mut()
        .map(|v| {
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            Some(v[((v.len() as f64 - 1.0) * 0.99).round() as usize])
        })
        .collect();
    Buckets { ok, bad, p99_ms }
}

/// The fault intervals of a run, in seconds: (name, from, to).
fn fault_intervals(phases: &[crate::nemesis::PhaseEvent], end: u64) -> Vec<(String, f64, f64)> {
    phases
        .iter()
        .enumerate()
        .filter(|(_, p)| !matches!(p.phase.as_str(), "setup" | "healthy" | "recovery" | "final"))
        .map(|(i, p)| {
            let to = phases.get(i + 1).map_or(end, |n| n.time);
            (p.phase.clone(), p.time as f64 / 1e9, to as f64 / 1e9)
        })
        .collect()
}

/// Rows for labels that start at `x` pixels and are `width` pixels wide, in order: each goes in
/// the first row where it clears the label before it, at most `max_rows` rows; when none is
/// free, in the row whose last label ends first.
fn label_rows(labels: &[(i32, i32)], max_rows: usize) -> Vec<usize> {
    const GAP: i32 = 8;
    let mut ends: Vec<i32> = Vec::new();
    labels
        .iter()
        .map(|&(x, width)| {
            let row = match ends.iter().position(|&end| end + GAP <= x) {
                Some(row) => row,
                None if ends.len() < max_rows.max(1) => {
                    ends.push(i32::MIN);
                    ends.len() - 1
                }
                None => (0..ends.len()).min_by_key(|&r| ends[r]).unwrap_or(0),
            };
            ends[row] = x + width;
            row
        })
        .collect()
}

/// The run as a picture: completed operations per second (ok, and failed or indeterminate)
/// and the p99 latency of successful ones on a log scale, with the fault intervals shaded and
/// named above the upper panel; an SVG document.
pub fn timeline_svg(
    ops: &[crate::history::Op],
    phases: &[crate::nemesis::PhaseEvent],
    end: u64,
) -> anyhow::Result<String> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    const OK: RGBColor = RGBColor(42, 157, 143);
    const BAD: RGBColor = RGBColor(230, 57, 70);
    const LATENCY: RGBColor = RGBColor(38, 70, 83);
    const FAULT: RGBColor = RGBColor(244, 162, 97);
    const FAULT_TEXT: RGBColor = RGBColor(122, 62, 0);
    const WIDTH: u32 = 1000;
    const PANEL: u32 = 260;
    const MARGIN: u32 = 10;
    const Y_LABELS: u32 = 55;
    const CAPTION: u32 = 22;
    const ROW: u32 = 14;
    const MAX_ROWS: usize = 6;
    let b = buckets(ops, end);
    let secs = b.ok.len() as f64;
    let faults = fault_intervals(phases, end);
    let top = f64::from(b.ok.iter().chain(&b.bad).copied().max().unwrap_or(1).max(1)) * 1.1;
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the timeline: {e}");
    let caption = ("sans-serif", 14).into_font();
    let label = ("sans-serif", 11)
        .into_font()
        .color(&FAULT_TEXT)
        .pos(Pos::new(HPos::Left, VPos::Bottom));
    let mut svg = String::new();
    {
        // The fault names go in rows between the caption and the upper panel; the rows are
        // laid out on the panels' x scale, which the charts below reproduce.
        let plot_x0 = (MARGIN + Y_LABELS) as f64;
        let plot_w = f64::from(WIDTH - 2 * MARGIN - Y_LABELS);
        let to_px = |s: f64| (plot_x0 + s / secs.max(1.0) * plot_w).round() as i32;
        // A name starts just right of its interval's start, but stays inside the picture.
        let text_x = |x: i32, w: i32| (x + 2).min((WIDTH - MARGIN) as i32 - w);
        let mut spans = Vec::new();
        {
            let mut unused = String::new();
            let scratch = SVGBackend::with_string(&mut unused, (WIDTH, PANEL)).into_drawing_area();
            for (name, from, _) in &faults {
                let (w, _) = scratch
                    .estimate_text_size(name, &label)
                    .map_err(|e| err(&e))?;
                // The estimate is rough (the viewer picks the font); leave some room.
                let w = (f64::from(w) * 1.12).ceil() as i32;
                spans.push((text_x(to_px(*from), w), w));
            }
        }
        let rows = label_rows(&spans, MAX_ROWS);
        let used = rows.iter().max().map_or(0, |r| r + 1) as u32;
        let strip = used * ROW + if used > 0 { 4 } else { 0 };

        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, 2 * PANEL + strip)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (upper, lower) = root.split_vertically(PANEL + strip);
        upper
            .draw_text(
                "operations per second: ok (green), failed or indeterminate (red)",
                &TextStyle::from(caption.clone()).pos(Pos::new(HPos::Center, VPos::Top)),
                ((WIDTH / 2) as i32, MARGIN as i32),
            )
            .map_err(|e| err(&e))?;
        let mut ops_chart = ChartBuilder::on(&upper)
            .margin(MARGIN)
            .margin_top(MARGIN + CAPTION + strip)
            .x_label_area_size(22)
            .y_label_area_size(Y_LABELS)
            .build_cartesian_2d(0f64..secs, 0f64..top)
            .map_err(|e| err(&e))?;
        ops_chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("ops/s")
            .draw()
            .map_err(|e| err(&e))?;
        for ((name, from, to), (row, (_, w))) in faults.iter().zip(rows.iter().zip(&spans)) {
            ops_chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(*from, 0.0), (*to, top)],
                    FAULT.mix(0.3).filled(),
                )))
                .map_err(|e| err(&e))?;
            // The name sits above the start of its interval, tied to it by a tick, and is kept
            // inside the picture at the right edge.
            let (x, plot_top) = ops_chart.backend_coord(&(*from, top));
            let baseline = plot_top - 3 - (*row as u32 * ROW) as i32;
            upper
                .draw(&PathElement::new(
                    vec![(x, baseline), (x, plot_top)],
                    FAULT.stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
            upper
                .draw_text(name, &label, (text_x(x, *w), baseline))
                .map_err(|e| err(&e))?;
        }
        for (series, color) in [(&b.ok, OK), (&b.bad, BAD)] {
            ops_chart
                .draw_series(LineSeries::new(
                    series
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64 + 0.5, f64::from(*v))),
                    color.stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }

        let mut lat_chart = ChartBuilder::on(&lower)
            .caption(
                "p99 latency of successful operations, per second (log scale)",
                caption.clone(),
            )
            .margin(MARGIN)
            .x_label_area_size(35)
            .y_label_area_size(Y_LABELS)
            .build_cartesian_2d(0f64..secs, (0.1f64..10_000f64).log_scale())
            .map_err(|e| err(&e))?;
        lat_chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v}"))
            .y_desc("ms")
            .x_desc("seconds since the start")
            .draw()
            .map_err(|e| err(&e))?;
        for (_, from, to) in &faults {
            lat_chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(*from, 0.1), (*to, 10_000.0)],
                    FAULT.mix(0.3).filled(),
                )))
                .map_err(|e| err(&e))?;
        }
        lat_chart
            .draw_series(LineSeries::new(
                b.p99_ms
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|ms| (i as f64 + 0.5, ms.clamp(0.1, 10_000.0)))),
                LATENCY.stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::history::{Op, OpType, Process};
    use crate::nemesis::PhaseEvent;

    fn op(process: u64, kind: OpType, time_ms: u64, error: Option<&str>) -> Op {
        Op {
            index: 0,
            process: Process::Client(process),
            kind,
            f: "generate".into(),
            value: serde_json::Value::Null,
            time: time_ms * 1_000_000,
            node: Some(1),
            workload: None,
            error: error.map(str::to_owned),
        }
    }

    /// Three seconds: two ok operations (10 ms and 30 ms) in the first, a definite
    /// "not-found" and an indeterminate one in the second, a refused one in the third.
    fn history() -> Vec<Op> {
        vec![
            op(1, OpType::Invoke, 100, None),
            op(1, OpType::Ok, 110, None),
            op(2, OpType::Invoke, 200, None),
            op(2, OpType::Ok, 230, None),
            op(1, OpType::Invoke, 1_100, None),
            op(1, OpType::Fail, 1_150, Some("not-found")),
            op(3, OpType::Invoke, 1_200, None),
            op(3, OpType::Info, 1_900, Some("timeout")),
            op(4, OpType::Invoke, 2_500, None),
            op(4, OpType::Fail, 2_501, Some("refused")),
        ]
    }

    #[test]
    fn buckets_count_per_second() {
        let b = buckets(&history(), 3_000_000_000);
        assert_eq!(b.ok, vec![2, 0, 0]);
        assert_eq!(
            b.bad,
            vec![0, 1, 1],
            "not-found is an answer, timeout and refusal are not"
        );
        assert_eq!(b.p99_ms, vec![Some(30.0), None, None]);
    }

    #[test]
    fn fault_names_that_would_overlap_go_in_further_rows() {
        // x and width in pixels; 8 pixels between names in one row.
        let labels = [(0, 50), (40, 50), (100, 20), (60, 10)];
        assert_eq!(label_rows(&labels, 3), vec![0, 1, 0, 2]);
        // With two rows at most, the last goes where the row ends first.
        assert_eq!(label_rows(&labels, 2), vec![0, 1, 0, 1]);
        assert!(label_rows(&[], 2).is_empty());
    }

    #[test]
    fn the_picture_shows_the_faults() {
        let phases = vec![
            PhaseEvent {
                time: 0,
                phase: "healthy".into(),
            },
            PhaseEvent {
                time: 1_000_000_000,
                phase: "partition-ring".into(),
            },
            PhaseEvent {
                time: 2_000_000_000,
                phase: "recovery".into(),
            },
        ];
        let svg = timeline_svg(&history(), &phases, 3_000_000_000).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("partition-ring"));
        assert!(!svg.contains(">healthy<") && !svg.contains(">recovery<"));
        assert!(svg.contains("<polyline"), "the series are drawn");
    }
}
