#!/usr/bin/env python3
"""Helper of benches/compare-builds.sh.

  run      turns one oha or kes-bench JSON report and the server CPU measured around it into
           one JSON line (ops/s, p50, p99, latency percentiles, CPU us per operation)
  summary  folds those lines into medians over the rounds, ratios to the floor and to the
           baseline, a markdown table, a JSON file and three SVG charts (throughput and CPU per
           operation side by side, latency percentile curves)
"""

import argparse
import html
import json
import math
import statistics
import sys

# Filled from the runs in their order of appearance (the scripts start with the floor).
TARGETS = []
PALETTE = ["#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
COLORS = {}
LOAD_NAMES = {
    "h1": "HTTP/1.1, 16 conns",
    "h2x8": "HTTP/2, 2 conns x 8 streams",
    "h2x16": "HTTP/2, 16 conns x 1 stream",
}
# Requests cut off by the end of a time-bounded oha run are not errors.
OHA_DEADLINE = "aborted due to deadline"


def run(a):
    with open(a.file) as f:
        r = json.load(f)
    if a.tool == "oha":
        codes = r.get("statusCodeDistribution") or {}
        ok = int(codes.get("200", 0))
        errors = sum(int(v) for k, v in codes.items() if k != "200")
        errors += sum(
            int(v) for k, v in (r.get("errorDistribution") or {}).items() if OHA_DEADLINE not in k
        )
        secs = float(r["summary"]["total"])
        pct = {
            k.lstrip("p"): v * 1000.0
            for k, v in (r.get("latencyPercentiles") or {}).items()
            if v is not None
        }
    else:
        total = r["total"]
        ok = int(total["ok"])
        errors = int(total["errors"])
        secs = float(r["duration_s"])
        lat = total["latency"]
        pct = {
            "50": lat["p50_ms"],
            "90": lat["p90_ms"],
            "99": lat["p99_ms"],
            "99.9": lat["p999_ms"],
        }
    out = {
        "round": a.round,
        "tool": a.tool,
        "load": a.load,
        "op": a.op,
        "target": a.target,
        "ok": ok,
        "errors": errors,
        "seconds": secs,
        "ops_per_s": ok / secs if secs > 0 else 0.0,
        "p50_ms": pct.get("50", 0.0),
        "p99_ms": pct.get("99", 0.0),
        "percentiles_ms": pct,
        "cpu_s": a.cpu_s,
        "cpu_us_per_op": a.cpu_s * 1e6 / ok if ok else 0.0,
        "ctxsw_per_op": a.ctxsw / ok if ok else 0.0,
    }
    print(json.dumps(out))


def median(xs):
    return statistics.median(xs) if xs else 0.0


def summary(a):
    runs = [json.loads(line) for line in open(a.runs) if line.strip()]
    meta = dict(m.split("=", 1) for m in a.meta)
    for r in runs:
        if r["target"] not in TARGETS:
            TARGETS.append(r["target"])
            COLORS[r["target"]] = PALETTE[(len(TARGETS) - 1) % len(PALETTE)]
    baseline = a.baseline
    groups = {}
    for r in runs:
        groups.setdefault((r["tool"], r["load"], r["op"], r["target"]), []).append(r)
    rows = []
    for (tool, load, op, target), rs in groups.items():
        by_rate = sorted(rs, key=lambda r: r["ops_per_s"])
        rows.append(
            {
                "tool": tool,
                "load": load,
                "op": op,
                "target": target,
                "rounds": len(rs),
                "ops_per_s": median([r["ops_per_s"] for r in rs]),
                "p50_ms": median([r["p50_ms"] for r in rs]),
                "p99_ms": median([r["p99_ms"] for r in rs]),
                "cpu_us_per_op": median([r["cpu_us_per_op"] for r in rs]),
                "ctxsw_per_op": median([r["ctxsw_per_op"] for r in rs]),
                "errors": sum(r["errors"] for r in rs),
                # The run with the median throughput, for the latency curves.
                "percentiles_ms": by_rate[len(by_rate) // 2]["percentiles_ms"],
            }
        )
    order = {t: i for i, t in enumerate(TARGETS)}
    loads = list(dict.fromkeys(r["load"] for r in runs))
    ops = list(dict.fromkeys(r["op"] for r in runs))
    tools = list(dict.fromkeys(r["tool"] for r in runs))
    rows.sort(
        key=lambda r: (tools.index(r["tool"]), loads.index(r["load"]), ops.index(r["op"]), order.get(r["target"], 9))
    )
    index = {(r["tool"], r["load"], r["op"], r["target"]): r for r in rows}
    for r in rows:
        floor = index.get((r["tool"], r["load"], r["op"], "floor"))
        base = index.get((r["tool"], r["load"], r["op"], baseline))
        r["cpu_vs_floor"] = r["cpu_us_per_op"] / floor["cpu_us_per_op"] if floor and floor["cpu_us_per_op"] else None
        r["ops_vs_baseline"] = r["ops_per_s"] / base["ops_per_s"] if base and base["ops_per_s"] else None
        r["p99_vs_baseline"] = r["p99_ms"] / base["p99_ms"] if base and base["p99_ms"] else None
        r["cpu_vs_baseline"] = r["cpu_us_per_op"] / base["cpu_us_per_op"] if base and base["cpu_us_per_op"] else None

    def x(v, fmt="{:.2f}x"):
        return fmt.format(v) if v is not None else "-"

    md = []
    md.append(f"| tool | load | op | target | ops/s | p50 ms | p99 ms | server CPU us/op | ctx switches/op | CPU/op vs floor | CPU/op vs {baseline} | ops/s vs {baseline} | p99 vs {baseline} | errors |")
    md.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        md.append(
            "| {tool} | {load} | {op} | {target} | {ops:,.0f} | {p50:.3f} | {p99:.3f} | {cpu:.1f} | {cs:.2f} | {vf} | {vbc} | {vb} | {vp} | {err} |".format(
                tool=r["tool"],
                load=r["load"],
                op=r["op"],
                target=r["target"],
                ops=r["ops_per_s"],
                p50=r["p50_ms"],
                p99=r["p99_ms"],
                cpu=r["cpu_us_per_op"],
                cs=r["ctxsw_per_op"],
                vf=x(r["cpu_vs_floor"]),
                vbc=x(r["cpu_vs_baseline"]) if r["target"] not in ("floor", baseline) else "-",
                vb=x(r["ops_vs_baseline"]) if r["target"] not in ("floor", baseline) else "-",
                vp=x(r["p99_vs_baseline"]) if r["target"] not in ("floor", baseline) else "-",
                err=r["errors"],
            )
        )
    md.append("")
    md.append("Loads: " + "; ".join(f"`{k}` {v}" for k, v in LOAD_NAMES.items() if k in loads) + ".")
    md.append("")
    for k, v in meta.items():
        md.append(f"- {k}: {v}")
    md.append("")
    prefix = a.out
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(md))
    with open(prefix + ".json", "w") as f:
        json.dump({"meta": meta, "summary": rows, "runs": runs}, f, indent=1)
    bars(prefix + "-throughput.svg", "Throughput (median ops/s, higher is better)", rows, tools, loads, ops, "ops_per_s", "{:,.0f}")
    bars(prefix + "-cpu.svg", "Server CPU per operation (median us, lower is better)", rows, tools, loads, ops, "cpu_us_per_op", "{:.1f}")
    curves(prefix + "-latency.svg", rows, tools, loads, ops)
    print("\n".join(md))


def esc(s):
    return html.escape(str(s))


def bars(path, title, rows, tools, loads, ops, field, fmt):
    groups = [(t, l, o) for t in tools for l in loads for o in ops]
    index = {(r["tool"], r["load"], r["op"], r["target"]): r for r in rows}
    bw, gap, left, top, h = 18, 22, 70, 50, 260
    width = left + len(groups) * (len(TARGETS) * bw + gap) + 20
    height = top + h + 110
    vmax = max([r[field] for r in rows] + [1e-9]) * 1.1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">']
    out.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    out.append(f'<text x="{left}" y="20" font-size="14">{esc(title)}</text>')
    for i, t in enumerate(TARGETS):
        out.append(f'<rect x="{left + i * 110}" y="30" width="10" height="10" fill="{COLORS[t]}"/><text x="{left + i * 110 + 14}" y="39">{t}</text>')
    for k in range(5):
        v = vmax * k / 4
        y = top + h - h * k / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{esc(fmt.format(v))}</text>')
    x = left + gap / 2
    for tool, load, op in groups:
        for i, t in enumerate(TARGETS):
            r = index.get((tool, load, op, t))
            if r is None:
                continue
            bh = h * r[field] / vmax
            out.append(f'<rect x="{x + i * bw:.1f}" y="{top + h - bh:.1f}" width="{bw - 2}" height="{bh:.1f}" fill="{COLORS[t]}"><title>{esc(fmt.format(r[field]))}</title></rect>')
        cx = x + len(TARGETS) * bw / 2
        out.append(f'<text transform="translate({cx:.1f},{top + h + 10}) rotate(40)" font-size="10">{esc(tool)} {esc(load)} {esc(op)}</text>')
        x += len(TARGETS) * bw + gap
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def curves(path, rows, tools, loads, ops):
    """Latency against percentile (x: 1/(1-p) on a log scale), one panel per tool/load/op."""
    panels = [(t, l, o) for t in tools for l in loads for o in ops]
    index = {(r["tool"], r["load"], r["op"], r["target"]): r for r in rows}
    pw, ph, cols = 300, 200, 3
    rows_n = math.ceil(len(panels) / cols)
    width, height = cols * (pw + 60) + 20, rows_n * (ph + 70) + 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">']
    out.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    out.append('<text x="10" y="18" font-size="14">Latency percentiles (ms, run with the median throughput)</text>')
    for i, t in enumerate(TARGETS):
        out.append(f'<rect x="{420 + i * 90}" y="8" width="10" height="10" fill="{COLORS[t]}"/><text x="{434 + i * 90}" y="17">{t}</text>')
    xmax = math.log10(1 / (1 - 0.9999))
    for n, (tool, load, op) in enumerate(panels):
        ox = 50 + (n % cols) * (pw + 60)
        oy = 40 + (n // cols) * (ph + 70)
        series = {}
        for t in TARGETS:
            r = index.get((tool, load, op, t))
            if not r:
                continue
            pts = []
            for k, v in r["percentiles_ms"].items():
                try:
                    p = float(k) / 100
                except ValueError:
                    continue
                if 0 < p < 1:
                    pts.append((math.log10(1 / (1 - p)), v))
            series[t] = sorted(pts)
        ymax = max([v for pts in series.values() for _, v in pts] + [1e-6]) * 1.1
        out.append(f'<rect x="{ox}" y="{oy}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{ox}" y="{oy - 4}">{esc(tool)} {esc(load)} {esc(op)}</text>')
        for k in range(5):
            v = ymax * k / 4
            y = oy + ph - ph * k / 4
            out.append(f'<text x="{ox - 3}" y="{y + 3:.1f}" text-anchor="end">{v:.2f}</text>')
        for p in (0.5, 0.9, 0.99, 0.999, 0.9999):
            xx = ox + pw * math.log10(1 / (1 - p)) / xmax
            out.append(f'<line x1="{xx:.1f}" y1="{oy}" x2="{xx:.1f}" y2="{oy + ph}" stroke="#eee"/>')
            out.append(f'<text x="{xx:.1f}" y="{oy + ph + 12}" text-anchor="middle">p{p * 100:g}</text>')
        for t, pts in series.items():
            if not pts:
                continue
            d = " ".join(f"{ox + pw * px / xmax:.1f},{oy + ph - ph * py / ymax:.1f}" for px, py in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{COLORS[t]}" stroke-width="1.5"/>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tool", required=True)
    r.add_argument("--file", required=True)
    r.add_argument("--round", type=int, required=True)
    r.add_argument("--load", required=True)
    r.add_argument("--op", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--cpu-s", type=float, required=True)
    r.add_argument("--ctxsw", type=int, default=0)
    s = sub.add_parser("summary")
    s.add_argument("--runs", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--meta", action="append", default=[])
    s.add_argument("--baseline", default="baseline", help="target the other kes targets are compared with")
    a = p.parse_args()
    if a.cmd == "run":
        run(a)
    else:
        summary(a)


if __name__ == "__main__":
    sys.exit(main())
