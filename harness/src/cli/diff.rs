//! `harness diff A B`: compare two trace directories (`harness trace -o`, `harness ref-trace -o`,
//! or two engine builds' traces) with the `parity` check's metrics, first divergence and tables
//! ([`bitnet_harness::compare::compare_trace_dirs`]). A is held as the reference (the `a` of the
//! metrics), B is compared with it. Exit 0 when B is within tolerance, 1 when it is not, 2 on bad
//! input.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use bitnet_harness::compare::{compare_trace_dirs, CompareSpec, Comparison, Tolerance};
use bitnet_harness::report::{InputFigures, Report, Row, RowVerdict};
use bitnet_harness::run::Status;
use bitnet_harness::scenario::Tolerances;

use super::UsageError;

/// Arguments of `harness diff`.
#[derive(clap::Args)]
pub struct Args {
    /// The trace directory held as the reference (the `a` of the metrics).
    pub a: PathBuf,
    /// The trace directory compared with it (the `b`).
    pub b: PathBuf,
    /// Every value must equal A's bit for bit (a mismatch names its first element).
    #[arg(long)]
    pub exact: bool,
    /// Take the tolerances from a scenario file (`tolerances`, and `exact: true` when it says so);
    /// the options below override them for every point.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Smallest acceptable cosine similarity (default 0.9997, as scenarios).
    #[arg(long)]
    pub cosine_min: Option<f64>,
    /// Largest acceptable relative L2 error ‖a−b‖/‖a‖ (default 5e-2).
    #[arg(long)]
    pub rel_l2_max: Option<f64>,
    /// Largest acceptable NMSE Σ(a−b)²/Σa² (default 2.5e-3).
    #[arg(long)]
    pub nmse_max: Option<f64>,
    /// Largest acceptable absolute difference of one element (default: not checked).
    #[arg(long)]
    pub max_abs: Option<f64>,
    /// Largest acceptable KL divergence of the prefill logits at any position (default 1e-4).
    #[arg(long)]
    pub kl_max: Option<f64>,
    /// Smallest acceptable fraction of positions whose top-1 token agrees (default 1).
    #[arg(long)]
    pub top1_agreement_min: Option<f64>,
    /// Smallest acceptable mean top-k overlap (default: not checked).
    #[arg(long)]
    pub topk_overlap_min: Option<f64>,
    /// The k of top-k overlap.
    #[arg(long)]
    pub k: Option<usize>,
    /// Also write the comparison as an HTML page (the per-layer plots of `report.html`).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Print the comparison's figures as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn check_dir(which: &str, dir: &Path) -> Result<()> {
    if !dir.join("trace.jsonl").is_file() {
        let what = if dir.is_dir() {
            "has no `trace.jsonl`"
        } else if dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(UsageError(format!(
            "{which} `{}` {what}: give a trace directory written by `harness trace -o` or `harness ref-trace -o`",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

fn check_bound(name: &str, v: Option<f64>, range: (f64, f64)) -> Result<()> {
    if let Some(v) = v {
        if !(v.is_finite() && v >= range.0 && v <= range.1) {
            return Err(UsageError(format!(
                "`--{name}` is {v}; expected a number from {} to {}",
                range.0, range.1
            ))
            .into());
        }
    }
    Ok(())
}

/// The tolerances in force: the scenario's (or the defaults), the options over every point.
fn tolerances(args: &Args) -> Result<(Tolerances, bool)> {
    let (mut tol, mut exact) = match &args.scenario {
        Some(p) => {
            let s = bitnet_harness::scenario::load_scenario(p)
                .map_err(|e| UsageError(e.to_string()))?;
            (
                s.scenario.tolerances.clone(),
                s.scenario.exact == Some(true),
            )
        }
        None => (Tolerances::default(), false),
    };
    exact |= args.exact;
    check_bound("cosine-min", args.cosine_min, (-1.0, 1.0))?;
    for (name, v) in [
        ("rel-l2-max", args.rel_l2_max),
        ("nmse-max", args.nmse_max),
        ("max-abs", args.max_abs),
        ("kl-max", args.kl_max),
    ] {
        check_bound(name, v, (0.0, f64::MAX))?;
    }
    check_bound("top1-agreement-min", args.top1_agreement_min, (0.0, 1.0))?;
    check_bound("topk-overlap-min", args.topk_overlap_min, (0.0, 1.0))?;
    if args.k == Some(0) {
        return Err(UsageError("`--k` must be at least 1".into()).into());
    }
    let l = &mut tol.logits;
    l.kl_max = args.kl_max.or(l.kl_max);
    l.top1_agreement_min = args.top1_agreement_min.or(l.top1_agreement_min);
    l.topk_overlap_min = args.topk_overlap_min.or(l.topk_overlap_min);
    l.k = args.k.unwrap_or(l.k);
    Ok((tol, exact))
}

fn metric_cells(m: &bitnet_harness::report::MetricsFigure) -> String {
    format!(
        "{:>12.9}  {:>10.3e}  {:>10.3e}  {:>10.3e}",
        m.cosine, m.rel_l2, m.nmse, m.max_abs
    )
}

/// The comparison as the terminal shows it: summary, first divergence with the points before
/// it, the per-layer table, logits, generated tokens, headroom.
fn text(c: &Comparison, f: &InputFigures, a: &Path, b: &Path) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "A (held as the reference): {}", a.display());
    let _ = writeln!(o, "B (compared with it):      {}", b.display());
    let steps: Vec<u32> = f.steps.iter().map(|s| s.step).collect();
    let _ = writeln!(
        o,
        "{} points × positions compared over steps {:?}: {} bit-identical, {} held to bit-exactness",
        f.compared, steps, f.zero, f.exact
    );
    if let Some(d) = &f.divergence {
        let _ = writeln!(o, "\nfirst divergence at {}", d.text);
        let _ = writeln!(
            o,
            "  {:28}  {:>12}  {:>10}  {:>10}  {:>10}",
            "point (same step, position)", "cosine", "rel L2", "NMSE", "max |a-b|"
        );
        for p in &d.before {
            let _ = writeln!(o, "  {:28}  {}", p.name, metric_cells(&p.metrics));
        }
        let _ = writeln!(
            o,
            "  {:28}  {}  <- first divergence",
            d.name,
            metric_cells(&d.metrics)
        );
    }
    let _ = writeln!(
        o,
        "\nper layer (worst over steps and positions):\n  {:8}  {:>12}  {:>10}  {:>10}  {:>10}  {:>16}",
        "layer", "min cosine", "max rel L2", "max NMSE", "max |a-b|", "out of tolerance"
    );
    let embeddings = f
        .steps
        .iter()
        .any(|s| s.outside.iter().any(|p| p.name == "embeddings"));
    for (i, r) in c.per_layer.iter().enumerate() {
        // Rows without a layer: the embeddings (first, when traced), then the output points.
        let layer = match r.layer {
            Some(l) => l.to_string(),
            None if i == 0 && embeddings => "embd".to_string(),
            None => "output".to_string(),
        };
        let _ = writeln!(
            o,
            "  {layer:8}  {:>12.9}  {:>10.3e}  {:>10.3e}  {:>10.3e}  {:>16}",
            r.min_cosine, r.max_rel_l2, r.max_nmse, r.max_abs, r.violations
        );
    }
    if let Some(l) = &f.logits {
        let _ = writeln!(
            o,
            "\nprefill logits, {} positions: KL p50 {:.3e}, p90 {:.3e}, p99 {:.3e}, max {:.3e}, mean {:.3e}; top-1 agreement {:.4}; top-{} overlap {:.4}",
            l.kl.len(),
            l.kl_p50,
            l.kl_p90,
            l.kl_p99,
            l.kl_max,
            l.kl_mean,
            l.top1_agreement,
            l.k,
            l.topk_overlap_mean
        );
    }
    if !c.engine_generated.is_empty() || !c.reference_generated.is_empty() {
        let _ = writeln!(
            o,
            "generated tokens: A {:?}, B {:?}{}",
            c.reference_generated,
            c.engine_generated,
            match c.generated_mismatch {
                Some(i) => format!(" (differ at index {i})"),
                None => " (equal)".into(),
            }
        );
    }
    if !f.headroom.is_empty() {
        let _ = writeln!(
            o,
            "\nheadroom (how many times the error fits in its bound):"
        );
        for h in &f.headroom {
            let factor = if h.factor.is_infinite() {
                "exact".to_string()
            } else {
                format!("{:.1}x", h.factor)
            };
            let _ = writeln!(
                o,
                "  {:14}  {:>10.3e} vs {:<10e}  {:>8}  at {}",
                h.metric, h.worst, h.bound, factor, h.at
            );
        }
    }
    if c.passed() {
        let _ = writeln!(o, "\nB is within tolerance of A");
    } else {
        let _ = writeln!(
            o,
            "\nB is NOT within tolerance of A:\n{}",
            c.failure_summary()
        );
    }
    o
}

/// The exit code: 0 within tolerance, 1 not.
pub fn run(args: Args) -> Result<u8> {
    check_dir("A", &args.a)?;
    check_dir("B", &args.b)?;
    let (tol, exact) = tolerances(&args)?;
    let over = Tolerance {
        cosine_min: args.cosine_min,
        rel_l2_max: args.rel_l2_max,
        max_abs: args.max_abs,
        nmse_max: args.nmse_max,
        exact: None,
    };
    let point = |name: &str| {
        let mut t = tol.for_point(name).merged(&over);
        t.exact = Some(exact || t.exact == Some(true));
        t
    };
    let spec = CompareSpec {
        tolerance: &point,
        logits: tol.logits,
        generated_equal: true,
    };
    let c = compare_trace_dirs(&args.b, &args.a, &spec).map_err(|e| UsageError(e.to_string()))?;
    if c.points.is_empty() && c.unmatched.is_empty() {
        return Err(UsageError(format!(
            "`{}` and `{}` have no trace point with values in common",
            args.a.display(),
            args.b.display()
        ))
        .into());
    }
    let figures = InputFigures::build("B against A", 0, &c, &spec, &args.b, &args.a);
    if args.json {
        let doc = serde_json::json!({
            "a": args.a, "b": args.b, "within": c.passed(),
            "failure": c.failure_summary(), "figures": figures,
        });
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        super::emit(&text(&c, &figures, &args.a, &args.b))?;
    }
    if let Some(path) = &args.html {
        let status = if c.passed() {
            Status::Pass
        } else {
            Status::Fail
        };
        let row = Row {
            scenario: format!("{} vs {}", args.b.display(), args.a.display()),
            check: "diff".into(),
            verdict: RowVerdict {
                status,
                message: if c.passed() {
                    format!("{} points × positions within tolerance", c.points.len())
                } else {
                    c.failure_summary()
                },
                divergence: c.first_divergence.as_ref().map(|d| d.to_string()),
                worst: c.worst_headroom().map(Into::into),
                per_layer: Vec::new(),
                seconds: 0.0,
                figures: vec![figures],
            },
        };
        let report = Report::new(vec![row], 0.0);
        bitnet_engine::npy::write_atomic(path, report.html().as_bytes())
            .map_err(|e| UsageError(format!("cannot write `--html` `{}`: {e}", path.display())))?;
        if !args.json {
            super::emit(&format!("wrote {}\n", path.display()))?;
        }
    }
    Ok(if c.passed() { 0 } else { 1 })
}
