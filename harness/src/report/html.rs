//! `report.html`: one self-contained page (inline CSS and SVG; no script, font or other fetch)
//! with the summary table and, per scenario, the figures of every comparison: per input and
//! step, one chart per stage of each metric's worst value over positions against the layer (log
//! scale, tolerances dashed, the first divergence marked), the logits per position, headroom,
//! the receipt, and bench figures per thread count against the bandwidth bound. Everything that
//! comes from the user or a child process is escaped.

use std::fmt::Write;

use super::svg::{self, esc, Bar, BarGroup, LineChart, Mark, Series};
use super::{
    status_word, BenchEntry, DivergenceFigure, InputFigures, LogitFigures, MetricsFigure,
    PointFigure, Report, Row, StageCurve, StepFigures,
};
use crate::run::Status;

mod runs;
use runs::{bench_section, receipt_section};

const CSS: &str = r#"
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 16px 40px;color:#222}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:14px;margin:12px 0 4px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:2px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.pass td.v{color:#080}tr.fail td.v{color:#c00;font-weight:600}tr.ignored td.v{color:#777}
tr.diverged td{background:#fde8e8}
pre{background:#f6f6f6;padding:6px;overflow-x:auto;white-space:pre-wrap;max-height:400px}
.counts{font-size:15px}.counts .fail{color:#c00;font-weight:600}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:8px}
figure{margin:0;border:1px solid #eee;padding:2px}figure.violated{border-color:#d00}
svg.chart{width:100%;height:auto;display:block}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
.wide{overflow-x:auto}.note{color:#555}.divergence-info{border-left:4px solid #d00;padding:2px 10px;background:#fff6f6}
details{margin:4px 0}summary{cursor:pointer}
.ct{font:600 11px sans-serif;fill:#222}.yt{font:9px sans-serif;text-anchor:end;fill:#444}
.xt{font:9px sans-serif;text-anchor:middle;fill:#444}.xl{font:10px sans-serif;text-anchor:middle;fill:#444}
.frame{fill:none;stroke:#999}.grid{stroke:#eee}.tick{stroke:#999}
svg polyline{fill:none;stroke-width:1.5}svg .tol polyline,svg .tol line{stroke-dasharray:4 3;stroke-width:1}
.m0{stroke:#1f77b4;fill:#1f77b4}.m1{stroke:#ff7f0e;fill:#ff7f0e}.m2{stroke:#2ca02c;fill:#2ca02c}.m3{stroke:#9467bd;fill:#9467bd}
i.m0{background:#1f77b4}i.m1{background:#ff7f0e}i.m2{background:#2ca02c}i.m3{background:#9467bd}
circle.zero{fill:#fff;stroke-width:1}.nonfinite{stroke:#d00;stroke-width:1.5;fill:none}
.divergence line{stroke:#d00;stroke-width:1.5}.divergence circle{fill:#d00}
.engine{fill:#1f77b4;stroke:#1f77b4}.llama{fill:#ff7f0e;stroke:#ff7f0e}.whisker{stroke:#222;stroke-width:1.2}
.bound line{stroke:#d00;stroke-width:1.5;stroke-dasharray:5 3}
i.engine{background:#1f77b4}i.llama{background:#ff7f0e}i.bound{background:#d00}
"#;

/// The four metrics plotted per stage: label, CSS class, value of a point, its tolerance.
const METRICS: [(&str, &str); 4] = [
    ("1 − cosine", "m0"),
    ("rel L2", "m1"),
    ("NMSE", "m2"),
    ("max |a−b|", "m3"),
];

fn metric_value(p: &PointFigure, m: usize) -> f64 {
    match m {
        0 => 1.0 - p.cosine,
        1 => p.rel_l2,
        2 => p.nmse,
        _ => p.max_abs,
    }
}

fn metric_bound(p: &PointFigure, m: usize) -> Option<f64> {
    if p.exact {
        return None;
    }
    let t = &p.tolerance;
    match m {
        0 => t.cosine_min.map(|c| 1.0 - c),
        1 => t.rel_l2_max,
        2 => t.nmse_max,
        _ => t.max_abs,
    }
}

/// A number for a table cell.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "∞" } else { "−∞" }.into()
    } else if v == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// A cosine for a table cell: near 1 as `1 − ε`, so the digits that matter show.
fn cos(v: f64) -> String {
    if v > 0.999 && v < 1.0 {
        format!("1 − {:.2e}", 1.0 - v)
    } else {
        num(v)
    }
}

/// A headroom factor: how many times the error fits in its bound.
fn factor(f: f64) -> String {
    if f.is_infinite() {
        "exact".into()
    } else if f >= 1e4 {
        format!("{f:.1e}×")
    } else {
        format!("{f:.1}×")
    }
}

/// A rate (tokens/s, GB/s, a ratio) for a table cell: no more digits than it has meaning.
fn rate(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        num(v)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// An `id` made of the name's ASCII letters, digits and `-`, every other character written as
/// `_<hex>_`: one name, one id (`a.b`, `a_b` and `a b` each get their own).
fn anchor(prefix: &str, name: &str) -> String {
    let mut clean = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            clean.push(c);
        } else {
            clean.push_str(&format!("_{:x}_", c as u32));
        }
    }
    format!("{prefix}-{clean}")
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>harness report</title><style>{CSS}</style></head><body>"
    );
    let _ = writeln!(
        h,
        "<header><h1>harness report</h1><p class=\"counts\" id=\"counts\">{} passed, <span class=\"{}\">{} failed</span>, {} ignored in {:.1} s</p></header>",
        r.passed,
        if r.failed > 0 { "fail" } else { "" },
        r.failed,
        r.ignored,
        r.seconds
    );
    summary_table(&mut h, r);
    // Rows and receipts by scenario, in the rows' order: one pass each, so a report of many
    // scenarios renders in time linear in its size.
    let mut order: Vec<&str> = Vec::new();
    let mut rows: std::collections::HashMap<&str, Vec<&Row>> = std::collections::HashMap::new();
    for row in &r.rows {
        rows.entry(row.scenario.as_str())
            .or_insert_with(|| {
                order.push(&row.scenario);
                Vec::new()
            })
            .push(row);
    }
    let mut receipts: std::collections::HashMap<&str, Vec<&serde_json::Value>> =
        std::collections::HashMap::new();
    for rec in &r.receipts {
        if let Some(s) = rec.get("scenario").and_then(|s| s.as_str()) {
            receipts.entry(s).or_default().push(rec);
        }
    }
    for s in order {
        let recs = receipts.remove(s).unwrap_or_default();
        scenario_section(&mut h, s, &rows[s], &recs);
    }
    if !r.benches.is_empty() {
        h.push_str("<section id=\"bench\"><h2>Bench</h2>\n");
        for b in &r.benches {
            bench_section(&mut h, b);
        }
        h.push_str("</section>\n");
    }
    h.push_str("<footer><p class=\"note\">Written by <code>harness run</code>; <code>harness report target/harness/report.json</code> renders it again.</p></footer>\n</body></html>\n");
    h
}

fn summary_table(h: &mut String, r: &Report) {
    h.push_str("<section id=\"summary\"><h2>Summary</h2><table id=\"summary-table\"><thead><tr><th>scenario</th><th>check</th><th>verdict</th><th>time</th><th>worst metric / first divergence</th></tr></thead><tbody>\n");
    for row in &r.rows {
        let v = &row.verdict;
        let class = match v.status {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Ignored => "ignored",
        };
        let detail = Report::detail(row);
        let _ = write!(
            h,
            "<tr class=\"{class}\" data-scenario=\"{}\" data-check=\"{}\"><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"v\">{}</td><td class=\"num\">{:.2} s</td><td>{}",
            esc(&row.scenario),
            esc(&row.check),
            anchor("scenario", &row.scenario),
            esc(&row.scenario),
            esc(&row.check),
            status_word(v.status),
            v.seconds,
            esc(&detail)
        );
        if v.status == Status::Fail {
            let _ = write!(
                h,
                "<details><summary>message</summary><pre>{}</pre></details>",
                esc(&super::strip_ansi(&v.message))
            );
        }
        h.push_str("</td></tr>\n");
    }
    h.push_str("</tbody></table>\n");
    if !r.references.is_empty() {
        h.push_str("<table id=\"reference-times\"><thead><tr><th>scenario</th><th>reference</th><th>time (not in the checks' times)</th></tr></thead><tbody>\n");
        for t in &r.references {
            let _ = writeln!(
                h,
                "<tr data-scenario=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{:.2} s</td></tr>",
                esc(&t.scenario),
                esc(&t.scenario),
                esc(&t.reference),
                t.seconds
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n");
}

fn scenario_section(
    h: &mut String,
    scenario: &str,
    rows: &[&Row],
    receipts: &[&serde_json::Value],
) {
    let _ = writeln!(
        h,
        "<section class=\"scenario\" id=\"{}\" data-scenario=\"{}\"><h2>{}</h2>",
        anchor("scenario", scenario),
        esc(scenario),
        esc(scenario)
    );
    // Headroom: per compared input, every metric against its bound.
    let with_figs: Vec<(&Row, &InputFigures)> = rows
        .iter()
        .flat_map(|row| row.verdict.figures.iter().map(move |f| (*row, f)))
        .collect();
    let headroom: Vec<_> = with_figs
        .iter()
        .flat_map(|(row, f)| f.headroom.iter().map(move |x| (*row, *f, x)))
        .collect();
    if !headroom.is_empty() {
        h.push_str("<h3>Headroom</h3><table class=\"headroom\"><thead><tr><th>check</th><th>input</th><th>metric</th><th>worst</th><th>bound</th><th>headroom</th><th>at</th></tr></thead><tbody>\n");
        for (row, f, x) in headroom {
            let worst = if x.metric == "cosine" {
                cos(x.worst)
            } else {
                num(x.worst)
            };
            let _ = writeln!(
                h,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                if x.factor < 1.0 { " class=\"diverged\"" } else { "" },
                esc(&row.check),
                esc(&f.label),
                esc(&x.metric),
                worst,
                num(x.bound),
                factor(x.factor),
                esc(&x.at)
            );
        }
        h.push_str("</tbody></table>\n");
    } else {
        let worst: Vec<_> = rows
            .iter()
            .filter_map(|row| row.verdict.worst.as_ref().map(|w| (row, w)))
            .collect();
        if !worst.is_empty() {
            h.push_str("<h3>Headroom</h3><ul>");
            for (row, w) in worst {
                let _ = write!(
                    h,
                    "<li>{}: {} {} vs {} at {}</li>",
                    esc(&row.check),
                    esc(&w.metric),
                    num(w.worst),
                    num(w.bound),
                    esc(&w.at)
                );
            }
            h.push_str("</ul>\n");
        }
    }
    for (row, f) in &with_figs {
        input_section(h, row, f);
    }
    for rec in receipts {
        receipt_section(h, rec);
    }
    h.push_str("</section>\n");
}

fn metrics_cells(m: &MetricsFigure) -> String {
    format!(
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
        cos(m.cosine),
        num(m.rel_l2),
        num(m.nmse),
        num(m.max_abs)
    )
}

fn divergence_block(h: &mut String, d: &DivergenceFigure) {
    let _ = write!(
        h,
        "<div class=\"divergence-info\" data-step=\"{}\" data-point=\"{}\"><p><strong>First divergence</strong>: {}</p>",
        d.step,
        esc(&d.name),
        esc(&d.text)
    );
    h.push_str("<table class=\"before\"><thead><tr><th>point (same step and position)</th><th>cosine</th><th>rel L2</th><th>NMSE</th><th>max |a−b|</th><th>violations</th></tr></thead><tbody>\n");
    for b in &d.before {
        let _ = writeln!(
            h,
            "<tr><td>{}</td>{}<td>{}</td></tr>",
            esc(&b.name),
            metrics_cells(&b.metrics),
            esc(&b.violations.join(", "))
        );
    }
    let _ = writeln!(
        h,
        "<tr class=\"diverged\"><td>{}</td>{}<td>first divergence</td></tr>\n</tbody></table></div>",
        esc(&d.name),
        metrics_cells(&d.metrics)
    );
}

fn input_section(h: &mut String, row: &Row, f: &InputFigures) {
    let _ = writeln!(
        h,
        "<div class=\"input\" data-check=\"{}\" data-input=\"{}\"><h3>{} · {}</h3>",
        esc(&row.check),
        f.input,
        esc(&row.check),
        esc(&f.label)
    );
    let _ = write!(
        h,
        "<p>{} points × positions compared, {} held to bit-exactness, {} bit-identical.",
        f.compared, f.exact, f.zero
    );
    if !f.engine_generated.is_empty() || !f.reference_generated.is_empty() {
        let _ = write!(
            h,
            " Generated tokens: engine <code>{:?}</code>, reference <code>{:?}</code>.",
            f.engine_generated, f.reference_generated
        );
    }
    h.push_str("</p>\n");
    if let Some(d) = &f.divergence {
        divergence_block(h, d);
    }
    if !f.unmatched.is_empty() {
        h.push_str("<p><strong>Not comparable</strong>:</p><ul>");
        for u in &f.unmatched {
            let _ = write!(h, "<li>{}</li>", esc(u));
        }
        h.push_str("</ul>\n");
    }
    if let Some(l) = &f.logits {
        logits_block(h, l);
    }
    for s in &f.steps {
        step_block(h, f, s);
    }
    h.push_str("</div>\n");
}

fn legend(h: &mut String) {
    h.push_str("<p class=\"legend\">");
    for (label, class) in METRICS {
        let _ = write!(h, "<span><i class=\"{class}\"></i>{label}</span>");
    }
    h.push_str("<span>dashed: tolerance</span><span>hollow dot on the floor: 0 (bit-identical)</span><span style=\"color:#d00\">red line: first divergence</span></p>\n");
}

fn step_block(h: &mut String, f: &InputFigures, s: &StepFigures) {
    let points: Vec<&PointFigure> = s
        .stages
        .iter()
        .flat_map(|c| c.points.iter())
        .chain(&s.outside)
        .collect();
    let violations: u32 = points.iter().map(|p| p.violations).sum();
    let all_zero = points.iter().all(|p| p.is_zero());
    let diverges_here = f.divergence_step() == Some(s.step);
    let open = s.step == 0 || diverges_here;
    let kind = if s.step == 0 { "prefill" } else { "decode" };
    let worst_rel = points.iter().map(|p| p.rel_l2).fold(0f64, |a, b| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    });
    let _ = writeln!(
        h,
        "<details class=\"step\" data-step=\"{}\"{}><summary>step {} ({kind}): {} points, worst rel L2 {}{}</summary>",
        s.step,
        if open { " open" } else { "" },
        s.step,
        points.len(),
        num(worst_rel),
        if violations > 0 {
            format!(", <strong>{violations} positions out of tolerance</strong>")
        } else {
            String::new()
        }
    );
    if all_zero {
        h.push_str("<p class=\"note exact-note\">Every point equals the reference bit for bit at every position: every metric is 0, nothing to plot.</p>\n");
    } else {
        legend(h);
        h.push_str("<div class=\"charts\">\n");
        for c in &s.stages {
            stage_figure(h, f, s, c);
        }
        h.push_str("</div>\n");
    }
    if !s.outside.is_empty() {
        h.push_str("<table class=\"outside\"><thead><tr><th>point</th><th>positions</th><th>cosine</th><th>rel L2</th><th>NMSE</th><th>max |a−b|</th><th>tolerance</th></tr></thead><tbody>\n");
        for p in &s.outside {
            let diverged = f
                .divergence
                .as_ref()
                .is_some_and(|d| d.step == s.step && d.name == p.name);
            let _ = writeln!(
                h,
                "<tr{}><td>{}</td><td class=\"num\">{}</td>{}<td>{}</td></tr>",
                if diverged || p.violations > 0 {
                    " class=\"diverged\""
                } else {
                    ""
                },
                esc(&p.name),
                p.positions,
                metrics_cells(&MetricsFigure {
                    cosine: p.cosine,
                    rel_l2: p.rel_l2,
                    max_abs: p.max_abs,
                    nmse: p.nmse
                }),
                esc(&tolerance_text(p))
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</details>\n");
}

fn tolerance_text(p: &PointFigure) -> String {
    if p.exact {
        return "bit-exact".into();
    }
    let t = &p.tolerance;
    let mut parts = Vec::new();
    if let Some(v) = t.cosine_min {
        parts.push(format!("cosine ≥ {v}"));
    }
    if let Some(v) = t.rel_l2_max {
        parts.push(format!("rel L2 ≤ {v:e}"));
    }
    if let Some(v) = t.nmse_max {
        parts.push(format!("NMSE ≤ {v:e}"));
    }
    if let Some(v) = t.max_abs {
        parts.push(format!("max abs ≤ {v:e}"));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn stage_figure(h: &mut String, f: &InputFigures, s: &StepFigures, c: &StageCurve) {
    let x = |p: &PointFigure| p.layer.unwrap_or(0) as f64;
    let mut series = Vec::new();
    for (m, (label, class)) in METRICS.iter().enumerate() {
        series.push(Series {
            label: (*label).to_string(),
            class: (*class).to_string(),
            points: c
                .points
                .iter()
                .map(|p| (x(p), metric_value(p, m)))
                .collect(),
            dashed: false,
        });
        let bounds: Vec<(f64, f64)> = c
            .points
            .iter()
            .filter_map(|p| metric_bound(p, m).map(|b| (x(p), b)))
            .collect();
        if !bounds.is_empty() {
            series.push(Series {
                label: format!("{label} tolerance"),
                class: (*class).to_string(),
                points: bounds,
                dashed: true,
            });
        }
    }
    let marks = f
        .divergence
        .as_ref()
        .filter(|d| d.step == s.step && d.stage == c.stage)
        .and_then(|d| {
            d.layer.map(|l| Mark {
                x: l as f64,
                class: "divergence".into(),
                title: format!("first divergence: {}", d.text),
            })
        })
        .into_iter()
        .collect::<Vec<_>>();
    let exact = c.points.iter().all(|p| p.exact);
    let chart = LineChart {
        title: format!(
            "blk.*.{} · step {}{}",
            c.stage,
            s.step,
            if exact { " · bit-exact" } else { "" }
        ),
        x_label: "layer".into(),
        x_ticks: c
            .points
            .iter()
            .map(|p| (x(p), p.layer.unwrap_or(0).to_string()))
            .collect(),
        log: true,
        y_range: None,
        series,
        marks,
    };
    let violated = c.points.iter().any(|p| p.violations > 0);
    let _ = writeln!(
        h,
        "<figure class=\"stage{}\" data-stage=\"{}\" data-step=\"{}\">{}</figure>",
        if violated { " violated" } else { "" },
        esc(&c.stage),
        s.step,
        chart.render()
    );
}

fn logits_block(h: &mut String, l: &LogitFigures) {
    let t = &l.tolerance;
    let bound = |v: Option<f64>| v.map_or("—".to_string(), num);
    let _ = writeln!(
        h,
        "<h4>Prefill logits ({} positions)</h4><table class=\"logits\"><thead><tr><th></th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>mean</th><th>top-1 agreement</th><th>top-{} overlap</th></tr></thead><tbody>\
<tr><td>KL(P_ref ‖ P_eng), nats</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\
<tr><td>tolerance</td><td></td><td></td><td></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></tbody></table>",
        l.kl.len(),
        l.k,
        num(l.kl_p50),
        num(l.kl_p90),
        num(l.kl_p99),
        num(l.kl_max),
        num(l.kl_mean),
        num(l.top1_agreement),
        num(l.topk_overlap_mean),
        bound(t.kl_max),
        bound(t.kl_mean_max),
        bound(t.top1_agreement_min),
        bound(t.topk_overlap_min),
    );
    if !l.violations.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"divergence-info\">logits out of tolerance: {}</p>",
            esc(&l.violations.join(", "))
        );
    }
    let ticks: Vec<(f64, String)> = (0..l.kl.len()).map(|i| (i as f64, i.to_string())).collect();
    let xs = |v: &[f64]| -> Vec<(f64, f64)> {
        v.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect()
    };
    let mut kl_series = vec![Series {
        label: "KL".into(),
        class: "m0".into(),
        points: xs(&l.kl),
        dashed: false,
    }];
    if let Some(b) = t.kl_max {
        kl_series.push(Series {
            label: "kl_max".into(),
            class: "m0".into(),
            points: ticks.iter().map(|t| (t.0, b)).collect(),
            dashed: true,
        });
    }
    let kl = LineChart {
        title: "KL per position".into(),
        x_label: "position".into(),
        x_ticks: ticks.clone(),
        log: true,
        y_range: None,
        series: kl_series,
        marks: Vec::new(),
    };
    let top1: Vec<f64> = l
        .top1_agree
        .iter()
        .map(|&a| if a { 1.0 } else { 0.0 })
        .collect();
    let mut agree_series = vec![
        Series {
            label: "top-1 agrees".into(),
            class: "m1".into(),
            points: xs(&top1),
            dashed: false,
        },
        Series {
            label: format!("top-{} overlap", l.k),
            class: "m2".into(),
            points: xs(&l.topk_overlap),
            dashed: false,
        },
    ];
    if let Some(b) = t.topk_overlap_min {
        agree_series.push(Series {
            label: "topk_overlap_min".into(),
            class: "m2".into(),
            points: ticks.iter().map(|t| (t.0, b)).collect(),
            dashed: true,
        });
    }
    let agree = LineChart {
        title: format!("top-1 agreement and top-{} overlap", l.k),
        x_label: "position".into(),
        x_ticks: ticks,
        log: false,
        y_range: Some((0.0, 1.0)),
        series: agree_series,
        marks: Vec::new(),
    };
    let _ = writeln!(
        h,
        "<div class=\"charts\"><figure class=\"logits-kl\">{}</figure><figure class=\"logits-topk\">{}</figure></div>",
        kl.render(),
        agree.render()
    );
}

#[cfg(test)]
mod tests {
    use super::anchor;

    #[test]
    fn names_that_differ_get_different_anchors() {
        let ids: Vec<String> = ["a.b", "a_b", "a b", "a-b", "ab"]
            .iter()
            .map(|n| anchor("scenario", n))
            .collect();
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        assert_eq!(ids[0], "scenario-a_2e_b");
        assert!(ids.iter().all(|i| i
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')));
    }
}
