//! The figures of one comparison (an input of a `parity` check, a chunked prefill, or
//! `harness diff`), kept in `report.json` whether the check passed or failed, so the HTML report
//! can plot them: per step, per stage, the worst value over positions of each metric at each
//! layer with its tolerance; the first divergence and the points before it; the logits' KL,
//! top-1 and top-k per position; the headroom of each metric.

use std::path::Path;

use bitnet_engine::trace::Stage;
use serde::{Deserialize, Serialize};

use crate::compare::{
    logit_position_metrics, CompareSpec, Comparison, Headroom, LogitTolerance, Metrics,
    PointResult, Tolerance,
};

/// One input's (or one chunked run's) comparison, as figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFigures {
    /// What was compared: `input 0`, `input 1, chunks of 7`, `B against A`.
    pub label: String,
    pub input: usize,
    /// Points × positions compared, and how many of them were held to bit-exactness.
    pub compared: usize,
    pub exact: usize,
    /// Points × positions equal bit for bit (all four metrics 0).
    pub zero: usize,
    pub steps: Vec<StepFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<DivergenceFigure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logits: Option<LogitFigures>,
    #[serde(default)]
    pub headroom: Vec<HeadroomFigure>,
    /// `(point, step)` present on one side only, or not comparable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched: Vec<String>,
    #[serde(default)]
    pub engine_generated: Vec<u32>,
    #[serde(default)]
    pub reference_generated: Vec<u32>,
}

/// One decode call (0 = prefill).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFigures {
    pub step: u32,
    /// Per-layer stages in execution order, each with one value per layer.
    pub stages: Vec<StageCurve>,
    /// Points outside the layers: `embeddings`, `output_norm`, `logits`.
    pub outside: Vec<PointFigure>,
}

/// One stage's points over the layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageCurve {
    /// The stage's canonical suffix (`attn_norm`, `q`, ...).
    pub stage: String,
    /// One per layer, in layer order.
    pub points: Vec<PointFigure>,
}

/// One trace point at one step: the worst value of each metric over its positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointFigure {
    pub name: String,
    pub layer: Option<u32>,
    pub positions: u32,
    /// The smallest cosine over positions.
    #[serde(with = "super::num")]
    pub cosine: f64,
    #[serde(with = "super::num")]
    pub rel_l2: f64,
    #[serde(with = "super::num")]
    pub nmse: f64,
    #[serde(with = "super::num")]
    pub max_abs: f64,
    /// Positions out of tolerance (not bit-exact, where held to exactness).
    pub violations: u32,
    /// Held to bit-exactness (the tolerance's bounds then do not apply).
    pub exact: bool,
    pub tolerance: Tolerance,
}

impl PointFigure {
    /// Whether every metric is 0 (the values are equal).
    pub fn is_zero(&self) -> bool {
        self.rel_l2 == 0.0 && self.max_abs == 0.0 && self.nmse == 0.0 && self.cosine == 1.0
    }
}

/// The first place the two sides part, with the points just before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DivergenceFigure {
    pub step: u32,
    pub position: u32,
    pub layer: Option<u32>,
    pub stage: String,
    pub name: String,
    /// As the terminal says it.
    pub text: String,
    pub metrics: MetricsFigure,
    /// The points before it at the same step and position, in execution order.
    pub before: Vec<BeforeFigure>,
}

/// A point before the divergence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeforeFigure {
    pub name: String,
    pub metrics: MetricsFigure,
    pub violations: Vec<String>,
}

/// [`Metrics`], with NaN and infinities kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFigure {
    #[serde(with = "super::num")]
    pub cosine: f64,
    #[serde(with = "super::num")]
    pub rel_l2: f64,
    #[serde(with = "super::num")]
    pub max_abs: f64,
    #[serde(with = "super::num")]
    pub nmse: f64,
}

impl From<&Metrics> for MetricsFigure {
    fn from(m: &Metrics) -> Self {
        MetricsFigure {
            cosine: m.cosine,
            rel_l2: m.rel_l2,
            max_abs: m.max_abs,
            nmse: m.nmse,
        }
    }
}

/// The prefill logits, per position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogitFigures {
    pub k: usize,
    /// KL(P_ref ‖ P_eng) per position, nats.
    #[serde(with = "super::num::vec")]
    pub kl: Vec<f64>,
    pub top1_agree: Vec<bool>,
    #[serde(with = "super::num::vec")]
    pub topk_overlap: Vec<f64>,
    /// KL percentiles over positions (nearest rank) and mean.
    #[serde(with = "super::num")]
    pub kl_p50: f64,
    #[serde(with = "super::num")]
    pub kl_p90: f64,
    #[serde(with = "super::num")]
    pub kl_p99: f64,
    #[serde(with = "super::num")]
    pub kl_max: f64,
    #[serde(with = "super::num")]
    pub kl_mean: f64,
    #[serde(with = "super::num")]
    pub top1_agreement: f64,
    #[serde(with = "super::num")]
    pub topk_overlap_mean: f64,
    pub tolerance: LogitTolerance,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<String>,
}

/// [`Headroom`], with the infinite factor of an exact metric kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadroomFigure {
    pub metric: String,
    pub at: String,
    #[serde(with = "super::num")]
    pub worst: f64,
    #[serde(with = "super::num")]
    pub bound: f64,
    /// How many times the error fits in the tolerance (≥ 1 passes; infinite when exact).
    #[serde(with = "super::num")]
    pub factor: f64,
}

impl From<&Headroom> for HeadroomFigure {
    fn from(h: &Headroom) -> Self {
        HeadroomFigure {
            metric: h.metric.clone(),
            at: h.at.clone(),
            worst: h.worst,
            bound: h.bound,
            factor: h.factor,
        }
    }
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The worse of two values of a metric (`lower`: smaller is worse); NaN wins.
fn worse(cur: f64, v: f64, lower: bool) -> f64 {
    if cur.is_nan() || v.is_nan() {
        f64::NAN
    } else if lower {
        cur.min(v)
    } else {
        cur.max(v)
    }
}

/// Aggregate the compared positions of each (step, point) into figures, in execution order.
fn steps_of(points: &[PointResult], spec: &CompareSpec<'_>) -> Vec<StepFigures> {
    let mut steps: Vec<StepFigures> = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let p = &points[i];
        let mut j = i;
        let mut fig = PointFigure {
            name: p.name.clone(),
            layer: p.layer,
            positions: 0,
            cosine: f64::INFINITY,
            rel_l2: 0.0,
            nmse: 0.0,
            max_abs: 0.0,
            violations: 0,
            exact: p.exact,
            tolerance: (spec.tolerance)(&p.name),
        };
        while j < points.len() && points[j].step == p.step && points[j].name == p.name {
            let m = &points[j].metrics;
            fig.positions += 1;
            fig.cosine = worse(fig.cosine, m.cosine, true);
            fig.rel_l2 = worse(fig.rel_l2, m.rel_l2, false);
            fig.nmse = worse(fig.nmse, m.nmse, false);
            fig.max_abs = worse(fig.max_abs, m.max_abs, false);
            fig.violations += u32::from(!points[j].violations.is_empty());
            j += 1;
        }
        i = j;
        if steps.last().is_none_or(|s| s.step != p.step) {
            steps.push(StepFigures {
                step: p.step,
                stages: Vec::new(),
                outside: Vec::new(),
            });
        }
        let step = steps.last_mut().expect("pushed");
        if p.stage.is_layer() {
            let name = p.stage.suffix();
            match step.stages.iter_mut().find(|c| c.stage == name) {
                Some(c) => c.points.push(fig),
                None => step.stages.push(StageCurve {
                    stage: name.to_string(),
                    points: vec![fig],
                }),
            }
        } else {
            step.outside.push(fig);
        }
    }
    let order = |name: &str| Stage::LAYER.iter().position(|s| s.suffix() == name);
    for s in &mut steps {
        s.stages.sort_by_key(|c| order(&c.stage));
        for c in &mut s.stages {
            c.points.sort_by_key(|p| p.layer);
        }
    }
    steps
}

/// The logits of both sides' `logits.npy`, per position; `None` when either is missing or the
/// shapes differ (the comparison already says so).
fn logits_of(
    engine_dir: &Path,
    reference_dir: &Path,
    c: &Comparison,
    spec: &CompareSpec<'_>,
) -> Option<LogitFigures> {
    let (es, ev) = bitnet_engine::npy::read_npy(&engine_dir.join("logits.npy")).ok()?;
    let (rs, rv) = bitnet_engine::npy::read_npy(&reference_dir.join("logits.npy")).ok()?;
    if es != rs || es.len() != 2 || es[1] == 0 {
        return None;
    }
    let n_vocab = es[1];
    let k = spec.logits.k;
    let per: Vec<_> = (0..es[0])
        .map(|i| {
            let s = i * n_vocab..(i + 1) * n_vocab;
            logit_position_metrics(&rv[s.clone()], &ev[s], k)
        })
        .collect();
    let kl: Vec<f64> = per.iter().map(|m| m.kl).collect();
    let mut sorted = kl.clone();
    sorted.sort_by(f64::total_cmp);
    let any_nan = kl.iter().any(|v| v.is_nan());
    let nan_or = |v: f64| if any_nan { f64::NAN } else { v };
    let n = per.len().max(1) as f64;
    Some(LogitFigures {
        k,
        top1_agree: per.iter().map(|m| m.top1_agree).collect(),
        topk_overlap: per.iter().map(|m| m.topk_overlap).collect(),
        kl_p50: nan_or(percentile(&sorted, 0.5)),
        kl_p90: nan_or(percentile(&sorted, 0.9)),
        kl_p99: nan_or(percentile(&sorted, 0.99)),
        kl_max: nan_or(sorted.last().copied().unwrap_or(0.0)),
        kl_mean: nan_or(kl.iter().sum::<f64>() / n),
        top1_agreement: per.iter().filter(|m| m.top1_agree).count() as f64 / n,
        topk_overlap_mean: per.iter().map(|m| m.topk_overlap).sum::<f64>() / n,
        kl,
        tolerance: spec.logits,
        violations: c.logit_violations.clone(),
    })
}

impl InputFigures {
    /// The figures of comparison `c` of `engine_dir` against `reference_dir` under `spec`.
    pub fn build(
        label: impl Into<String>,
        input: usize,
        c: &Comparison,
        spec: &CompareSpec<'_>,
        engine_dir: &Path,
        reference_dir: &Path,
    ) -> InputFigures {
        let divergence = c.first_divergence.as_ref().map(|d| DivergenceFigure {
            step: d.step,
            position: d.position,
            layer: d.layer,
            stage: d.stage.suffix().to_string(),
            name: d.name.clone(),
            text: d.to_string(),
            metrics: (&d.metrics).into(),
            before: d
                .before
                .iter()
                .map(|p| BeforeFigure {
                    name: p.name.clone(),
                    metrics: (&p.metrics).into(),
                    violations: p.violations.clone(),
                })
                .collect(),
        });
        let zero = c
            .points
            .iter()
            .filter(|p| p.metrics.rel_l2 == 0.0 && p.metrics.max_abs == 0.0)
            .count();
        InputFigures {
            label: label.into(),
            input,
            compared: c.points.len(),
            exact: c.points.iter().filter(|p| p.exact).count(),
            zero,
            steps: steps_of(&c.points, spec),
            divergence,
            logits: logits_of(engine_dir, reference_dir, c, spec),
            headroom: c.headroom.iter().map(HeadroomFigure::from).collect(),
            // The first hundred, and how many more (a reference may write thousands).
            unmatched: {
                let mut u: Vec<String> = c.unmatched.iter().take(100).cloned().collect();
                if c.unmatched.len() > 100 {
                    u.push(format!("… and {} more", c.unmatched.len() - 100));
                }
                u
            },
            engine_generated: c.engine_generated.clone(),
            reference_generated: c.reference_generated.clone(),
        }
    }

    /// The step the first divergence is at, if any.
    pub fn divergence_step(&self) -> Option<u32> {
        self.divergence.as_ref().map(|d| d.step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Metrics;
    use bitnet_engine::trace::TracePoint;

    fn point(name: &str, step: u32, position: u32, rel: f64, bad: bool) -> PointResult {
        let p = TracePoint::parse(name).unwrap();
        PointResult {
            name: name.into(),
            step,
            position,
            layer: p.layer,
            stage: p.stage,
            metrics: Metrics {
                cosine: 1.0 - rel,
                rel_l2: rel,
                max_abs: rel,
                nmse: rel * rel,
            },
            violations: if bad { vec!["x".into()] } else { vec![] },
            exact: false,
            diff: None,
        }
    }

    #[test]
    fn positions_fold_into_the_worst_value_per_layer_and_stage() {
        let points = vec![
            point("embeddings", 0, 0, 0.0, false),
            point("embeddings", 0, 1, 0.0, false),
            point("blk.0.q", 0, 0, 1e-6, false),
            point("blk.0.q", 0, 1, 1e-5, false),
            point("blk.0.k", 0, 0, 2e-6, false),
            point("blk.1.q", 0, 0, 3e-4, true),
            point("blk.1.q", 0, 1, 1e-4, false),
            point("logits", 0, 0, 1e-3, false),
            point("blk.0.q", 1, 2, 0.5, true),
        ];
        let tol = |_: &str| Tolerance {
            rel_l2_max: Some(1e-4),
            ..Tolerance::default()
        };
        let spec = CompareSpec {
            tolerance: &tol,
            logits: LogitTolerance::default(),
            generated_equal: true,
        };
        let steps = steps_of(&points, &spec);
        assert_eq!(steps.len(), 2);
        let s0 = &steps[0];
        assert_eq!(
            s0.stages
                .iter()
                .map(|c| c.stage.as_str())
                .collect::<Vec<_>>(),
            ["q", "k"]
        );
        let q = &s0.stages[0].points;
        assert_eq!(q.len(), 2);
        assert_eq!(
            (q[0].layer, q[0].positions, q[0].rel_l2),
            (Some(0), 2, 1e-5)
        );
        assert_eq!((q[1].rel_l2, q[1].violations), (3e-4, 1));
        assert_eq!(q[1].tolerance.rel_l2_max, Some(1e-4));
        assert_eq!(
            s0.outside
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["embeddings", "logits"]
        );
        assert!(s0.outside[0].is_zero() && !s0.outside[1].is_zero());
        assert_eq!(steps[1].step, 1);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
    }
}
