//! A small SVG writer for the HTML report's charts: line charts over layers or positions (log or
//! linear y axis, dashed tolerance lines, vertical marks) and grouped bar charts with whiskers
//! and a bound (bench figures). The SVG is inline in the page: colours and line styles come from
//! the page's CSS classes, so a chart is a few kilobytes of plain elements, with no script, font
//! or external reference.

use std::fmt::Write;

/// Escape text for HTML and XML (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters (an ANSI escape in an error message) are shown, not passed on.
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

const W: f64 = 320.0;
const H: f64 = 190.0;
const LEFT: f64 = 50.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 32.0;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// The CSS class that colours it (`m0`..`m3`).
    pub class: String,
    pub points: Vec<(f64, f64)>,
    /// A tolerance: dashed, no dots.
    pub dashed: bool,
}

/// A vertical mark at `x` (the first divergence).
#[derive(Debug, Clone)]
pub struct Mark {
    pub x: f64,
    pub class: String,
    pub title: String,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// The chart's accessible title (also its caption above the plot).
    pub title: String,
    pub x_label: String,
    /// `(x, label)` ticks; their range is the x axis's.
    pub x_ticks: Vec<(f64, String)>,
    /// Log y axis (values ≤ 0 are drawn on the bottom edge, non-finite ones on the top edge);
    /// otherwise linear over `y_range`.
    pub log: bool,
    pub y_range: Option<(f64, f64)>,
    pub series: Vec<Series>,
    pub marks: Vec<Mark>,
}

fn fmt_log_tick(e: i32) -> String {
    match e {
        0 => "1".into(),
        1 => "10".into(),
        _ => format!("1e{e}"),
    }
}

fn fmt_lin_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e6 || v.abs() < 1e-2 {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A "nice" step (1, 2 or 5 × 10^k) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

impl LineChart {
    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let (x0, x1) = {
            let xs = self.x_ticks.iter().map(|t| t.0).chain(
                self.series
                    .iter()
                    .flat_map(|s| s.points.iter().map(|p| p.0)),
            );
            let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(x), b.max(x))
            });
            if !lo.is_finite() {
                (0.0, 1.0)
            } else if lo == hi {
                (lo - 0.5, hi + 0.5)
            } else {
                // A little room so the end points do not sit on the frame.
                let pad = (hi - lo) * 0.04;
                (lo - pad, hi + pad)
            }
        };
        // Y range: decades for a log axis, the given (or data) range otherwise.
        let values = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let (y0, y1) = if self.log {
            let pos = values
                .filter(|v| v.is_finite() && *v > 0.0)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                });
            if pos.0.is_finite() {
                let lo = pos.0.log10().floor();
                let hi = pos.1.log10().ceil().max(lo + 1.0);
                (lo, hi)
            } else {
                (-9.0, -6.0)
            }
        } else {
            match self.y_range {
                Some(r) => r,
                None => {
                    let r = values
                        .filter(|v| v.is_finite())
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                            (a.min(v), b.max(v))
                        });
                    if !r.0.is_finite() {
                        (0.0, 1.0)
                    } else if r.0 == r.1 {
                        (r.0 - 1.0, r.1 + 1.0)
                    } else {
                        r
                    }
                }
            }
        };
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        // Screen y of a value; `None` for the edges (≤ 0 on a log axis: bottom; non-finite: top).
        let sy = |v: f64| -> (f64, &'static str) {
            if !v.is_finite() {
                return (TOP, "nonfinite");
            }
            let t = if self.log {
                if v <= 0.0 {
                    return (TOP + ph, "zero");
                }
                (v.log10() - y0) / (y1 - y0)
            } else {
                (v - y0) / (y1 - y0)
            };
            (TOP + ph - t.clamp(0.0, 1.0) * ph, "")
        };
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {W} {H}" role="img"><title>{}</title>"#,
            esc(&self.title)
        );
        let _ = write!(
            s,
            r#"<text class="ct" x="{}" y="13">{}</text>"#,
            LEFT,
            esc(&self.title)
        );
        // Frame and y grid.
        let _ = write!(
            s,
            r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>"#
        );
        if self.log {
            let decades = (y1 - y0) as i32;
            let every = (decades / 6).max(1);
            let mut e = y0 as i32;
            while e <= y1 as i32 {
                let y = sy(10f64.powi(e)).0;
                let _ = write!(
                    s,
                    r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="yt" x="{:.1}" y="{:.1}">{}</text>"#,
                    LEFT + pw,
                    LEFT - 3.0,
                    y + 3.0,
                    fmt_log_tick(e)
                );
                e += every;
            }
        } else {
            let step = nice_step(y1 - y0, 4.0);
            let mut v = (y0 / step).ceil() * step;
            while v <= y1 + step * 1e-9 {
                let y = sy(v).0;
                let _ = write!(
                    s,
                    r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="yt" x="{:.1}" y="{:.1}">{}</text>"#,
                    LEFT + pw,
                    LEFT - 3.0,
                    y + 3.0,
                    fmt_lin_tick(v)
                );
                v += step;
            }
        }
        // X ticks (at most about 12 labels).
        let every = self.x_ticks.len().div_ceil(12).max(1);
        for (i, (x, label)) in self.x_ticks.iter().enumerate() {
            let px = sx(*x);
            let _ = write!(
                s,
                r#"<line class="tick" x1="{px:.1}" x2="{px:.1}" y1="{:.1}" y2="{:.1}"/>"#,
                TOP + ph,
                TOP + ph + 3.0
            );
            if i % every == 0 {
                let _ = write!(
                    s,
                    r#"<text class="xt" x="{px:.1}" y="{:.1}">{}</text>"#,
                    TOP + ph + 13.0,
                    esc(label)
                );
            }
        }
        let _ = write!(
            s,
            r#"<text class="xl" x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + pw / 2.0,
            H - 4.0,
            esc(&self.x_label)
        );
        // Marks under the lines.
        for m in &self.marks {
            let px = sx(m.x);
            let _ = write!(
                s,
                r#"<g class="{}"><title>{}</title><line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{:.1}"/><circle cx="{px:.1}" cy="{TOP}" r="3.5"/></g>"#,
                esc(&m.class),
                esc(&m.title),
                TOP + ph
            );
        }
        for series in &self.series {
            if series.points.is_empty() {
                continue;
            }
            let pts: Vec<(f64, f64, &str)> = series
                .points
                .iter()
                .map(|&(x, v)| {
                    let (y, edge) = sy(v);
                    (sx(x), y, edge)
                })
                .collect();
            let dash = if series.dashed { " tol" } else { "" };
            let _ = write!(
                s,
                r#"<g class="{}{dash}"><title>{}</title>"#,
                esc(&series.class),
                esc(&series.label)
            );
            let coords: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", p.0, p.1))
                .collect();
            if pts.len() > 1 {
                let _ = write!(s, r#"<polyline points="{}"/>"#, coords.join(" "));
            }
            if !series.dashed {
                for (x, y, edge) in &pts {
                    match *edge {
                        "nonfinite" => {
                            let _ = write!(
                                s,
                                r#"<path class="nonfinite" d="M{:.1} {:.1}l6 6m0-6l-6 6"/>"#,
                                x - 3.0,
                                y - 3.0
                            );
                        }
                        "zero" => {
                            let _ = write!(
                                s,
                                r#"<circle class="zero" cx="{x:.1}" cy="{y:.1}" r="2"/>"#
                            );
                        }
                        _ => {
                            let _ = write!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="2"/>"#);
                        }
                    }
                }
            } else if pts.len() == 1 {
                let (x, y, _) = pts[0];
                let _ = write!(
                    s,
                    r#"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/>"#,
                    x - 8.0,
                    x + 8.0
                );
            }
            s.push_str("</g>");
        }
        s.push_str("</svg>");
        s
    }
}

/// One bar: a median with its min–max whisker.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub class: String,
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

/// Bars side by side under one label, with an optional bound drawn across them.
#[derive(Debug, Clone)]
pub struct BarGroup {
    pub label: String,
    pub bars: Vec<Bar>,
    pub bound: Option<f64>,
}

/// A grouped bar chart on a linear axis from 0.
pub fn bar_chart(title: &str, x_label: &str, groups: &[BarGroup]) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let top = groups
        .iter()
        .flat_map(|g| g.bars.iter().flat_map(|b| [b.value, b.max]).chain(g.bound))
        .filter(|v| v.is_finite())
        .fold(0f64, f64::max);
    let y1 = if top > 0.0 { top * 1.1 } else { 1.0 };
    let sy = |v: f64| TOP + ph - (v / y1).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart bars" viewBox="0 0 {W} {H}" role="img"><title>{}</title><text class="ct" x="{LEFT}" y="13">{}</text><rect class="frame" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>"#,
        esc(title),
        esc(title)
    );
    let step = nice_step(y1, 4.0);
    let mut v = 0.0;
    while v <= y1 {
        let y = sy(v);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="yt" x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + pw,
            LEFT - 3.0,
            y + 3.0,
            fmt_lin_tick(v)
        );
        v += step;
    }
    let gw = pw / groups.len().max(1) as f64;
    for (gi, g) in groups.iter().enumerate() {
        let gx = LEFT + gi as f64 * gw;
        let n = g.bars.len().max(1) as f64;
        let bw = (gw * 0.7 / n).min(40.0);
        let start = gx + (gw - bw * n) / 2.0;
        for (bi, b) in g.bars.iter().enumerate() {
            let x = start + bi as f64 * bw;
            let y = sy(b.value);
            let _ = write!(
                s,
                r#"<g class="{}"><title>{}: {:.1} (min {:.1}, max {:.1})</title><rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}"/>"#,
                esc(&b.class),
                esc(&b.label),
                b.value,
                b.min,
                b.max,
                bw * 0.9,
                (TOP + ph - y).max(0.0)
            );
            if b.min.is_finite() && b.max.is_finite() {
                let cx = x + bw * 0.45;
                let _ = write!(
                    s,
                    r#"<line class="whisker" x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}"/>"#,
                    sy(b.min),
                    sy(b.max)
                );
            }
            s.push_str("</g>");
        }
        if let Some(bound) = g.bound.filter(|v| v.is_finite()) {
            let y = sy(bound);
            let _ = write!(
                s,
                r#"<g class="bound"><title>bandwidth bound: {bound:.1}</title><line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/></g>"#,
                gx + gw * 0.08,
                gx + gw * 0.92
            );
        }
        let _ = write!(
            s,
            r#"<text class="xt" x="{:.1}" y="{:.1}">{}</text>"#,
            gx + gw / 2.0,
            TOP + ph + 13.0,
            esc(&g.label)
        );
    }
    let _ = write!(
        s,
        r#"<text class="xl" x="{:.1}" y="{:.1}">{}</text></svg>"#,
        LEFT + pw / 2.0,
        H - 4.0,
        esc(x_label)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_chart_draws_zeros_on_the_floor_and_marks() {
        let c = LineChart {
            title: "blk.*.q <step 0>".into(),
            x_label: "layer".into(),
            x_ticks: (0..4).map(|l| (l as f64, l.to_string())).collect(),
            log: true,
            y_range: None,
            series: vec![
                Series {
                    label: "rel L2".into(),
                    class: "m1".into(),
                    points: vec![(0.0, 0.0), (1.0, 1e-7), (2.0, 1e-3), (3.0, f64::NAN)],
                    dashed: false,
                },
                Series {
                    label: "rel L2 tolerance".into(),
                    class: "m1".into(),
                    points: (0..4).map(|l| (l as f64, 1e-4)).collect(),
                    dashed: true,
                },
            ],
            marks: vec![Mark {
                x: 2.0,
                class: "divergence".into(),
                title: "first divergence".into(),
            }],
        };
        let svg = c.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("&lt;step 0&gt;"), "{svg}");
        assert!(svg.contains(r#"class="zero""#) && svg.contains(r#"class="nonfinite""#));
        assert!(svg.contains(r#"<g class="divergence">"#));
        assert!(svg.contains(r#"class="m1 tol""#));
        // Decades 1e-7..1e-3 are labelled.
        assert!(svg.contains(">1e-7<") && svg.contains(">1e-3<"), "{svg}");
    }

    #[test]
    fn escaping_covers_markup_and_control_characters() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>\u{1b}[31m"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;\\u{1b}[31m"
        );
    }

    #[test]
    fn bars_have_whiskers_and_a_bound() {
        let svg = bar_chart(
            "decode",
            "threads",
            &[BarGroup {
                label: "1".into(),
                bars: vec![Bar {
                    label: "engine".into(),
                    class: "engine".into(),
                    value: 10.0,
                    min: 9.0,
                    max: 11.0,
                }],
                bound: Some(20.0),
            }],
        );
        assert!(svg.contains("whisker") && svg.contains(r#"<g class="bound">"#));
    }
}
