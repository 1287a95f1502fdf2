//! Comparison of an engine trace against a reference trace, within a scenario's tolerances.
//!
//! Sits after the runs in the data flow (DESIGN.md): both sides wrote a trace directory
//! (`trace.jsonl`, `<point>.step<k>.npy`, `logits.npy`, `generated.json`); this module compares
//! every trace point, step and position present on both sides, the logits and the generated
//! tokens, and names the first divergence in execution order: step, then the point's place in the
//! forward pass (embeddings, layers in order and their stages in order, output), then position.
//! Within one step the engine (like llama.cpp) computes a whole layer for every position before
//! the next layer, so that is the order in which things happen.

mod metrics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bitnet_engine::trace::{read_trace, Stage, TracePoint, TraceRecord};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use metrics::{
    argmax, logit_position_metrics, summarize_logits, tensor_metrics, top_k, LogitPositionMetrics,
    LogitSummary, Metrics,
};

/// Tolerances for one trace point. A metric left out is not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// Smallest acceptable cosine similarity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosine_min: Option<f64>,
    /// Largest acceptable relative L2 error `‖a−b‖/‖a‖`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_l2_max: Option<f64>,
    /// Largest acceptable absolute difference of one element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs: Option<f64>,
    /// Largest acceptable NMSE `Σ(a−b)²/Σa²` (llama.cpp's test-backend-ops definition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nmse_max: Option<f64>,
    /// Every element must equal the reference's (bit for bit; +0 and −0 count as equal, and so
    /// do two NaNs). A mismatch names the first differing element, both values and their
    /// distance in ULPs. The scenario's `exact` sets it for every point; a point's own entry
    /// overrides that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
}

impl Tolerance {
    /// Overlay `other`'s set fields on `self`.
    pub fn merged(self, other: &Tolerance) -> Tolerance {
        Tolerance {
            cosine_min: other.cosine_min.or(self.cosine_min),
            rel_l2_max: other.rel_l2_max.or(self.rel_l2_max),
            max_abs: other.max_abs.or(self.max_abs),
            nmse_max: other.nmse_max.or(self.nmse_max),
            exact: other.exact.or(self.exact),
        }
    }

    /// The metrics that break this tolerance, as `metric value vs bound` strings.
    pub fn violations(&self, m: &Metrics) -> Vec<String> {
        let mut v = Vec::new();
        let mut min = |name: &str, value: f64, bound: Option<f64>| {
            if let Some(b) = bound {
                if value.is_nan() || value < b {
                    v.push(format!("{name} {value:.9} < {b}"));
                }
            }
        };
        min("cosine", m.cosine, self.cosine_min);
        let mut max = |name: &str, value: f64, bound: Option<f64>| {
            if let Some(b) = bound {
                if value.is_nan() || value > b {
                    v.push(format!("{name} {value:.3e} > {b:e}"));
                }
            }
        };
        max("rel_l2", m.rel_l2, self.rel_l2_max);
        max("max_abs", m.max_abs, self.max_abs);
        max("nmse", m.nmse, self.nmse_max);
        v
    }
}

/// Tolerances for the logits, over positions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogitTolerance {
    /// Largest acceptable KL divergence at any position (nats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_max: Option<f64>,
    /// Largest acceptable mean KL divergence over positions (nats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_mean_max: Option<f64>,
    /// Smallest acceptable fraction of positions whose top-1 token agrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_agreement_min: Option<f64>,
    /// Smallest acceptable mean top-k overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_overlap_min: Option<f64>,
    /// The k of top-k overlap.
    #[serde(default = "default_k")]
    pub k: usize,
}

fn default_k() -> usize {
    10
}

impl Default for LogitTolerance {
    fn default() -> Self {
        LogitTolerance {
            kl_max: None,
            kl_mean_max: None,
            top1_agreement_min: None,
            topk_overlap_min: None,
            k: default_k(),
        }
    }
}

impl LogitTolerance {
    /// The summary values that break this tolerance.
    pub fn violations(&self, s: &LogitSummary) -> Vec<String> {
        let mut v = Vec::new();
        let above = |name: &str, value: f64, bound: Option<f64>, v: &mut Vec<String>| {
            if let Some(b) = bound {
                if value.is_nan() || value > b {
                    v.push(format!("{name} {value:.3e} > {b:e}"));
                }
            }
        };
        let below = |name: &str, value: f64, bound: Option<f64>, v: &mut Vec<String>| {
            if let Some(b) = bound {
                if value.is_nan() || value < b {
                    v.push(format!("{name} {value:.4} < {b}"));
                }
            }
        };
        above("kl_max", s.kl_max, self.kl_max, &mut v);
        above("kl_mean", s.kl_mean, self.kl_mean_max, &mut v);
        below(
            "top1_agreement",
            s.top1_agreement,
            self.top1_agreement_min,
            &mut v,
        );
        below(
            "topk_overlap",
            s.topk_overlap,
            self.topk_overlap_min,
            &mut v,
        );
        v
    }
}

/// The first element where two tensors differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElementDiff {
    /// Index within the position's row (row-major over the record's shape less its first axis).
    pub index: usize,
    /// `index` over the record's shape less its first axis (e.g. `[head, dim]` for `q`).
    pub coords: Vec<usize>,
    pub reference: f32,
    pub engine: f32,
    /// Distance in units in the last place (f32 values strictly between them, plus one);
    /// `u64::MAX` when one is NaN.
    pub ulps: u64,
    /// Elements of the row that differ.
    pub count: usize,
}

impl std::fmt::Display for ElementDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ulps = if self.ulps == u64::MAX {
            "NaN".to_string()
        } else {
            format!("{} ulp", self.ulps)
        };
        write!(
            f,
            "not bit-exact: {} element(s) differ, first at {:?} (index {}): engine {:e} vs reference {:e} ({ulps})",
            self.count, self.coords, self.index, self.engine, self.reference
        )
    }
}

/// Whether two values count as equal for exact comparison: same bits, both zero, or both NaN.
pub fn same_value(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || a == b || (a.is_nan() && b.is_nan())
}

/// ULPs between two f32 values (`u64::MAX` when either is NaN).
pub fn ulp_distance(a: f32, b: f32) -> u64 {
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    // Map the bit patterns to a line where adjacent floats are adjacent integers.
    let key = |v: f32| {
        let b = v.to_bits() as i64;
        if b & 0x8000_0000 != 0 {
            -(b & 0x7fff_ffff)
        } else {
            b
        }
    };
    key(a).abs_diff(key(b))
}

/// The first element where `engine` differs from `reference`, with its coordinates in `shape`.
pub fn first_difference(reference: &[f32], engine: &[f32], shape: &[usize]) -> Option<ElementDiff> {
    let mut first = None;
    let mut count = 0;
    for (i, (&r, &e)) in reference.iter().zip(engine).enumerate() {
        if !same_value(r, e) {
            count += 1;
            first.get_or_insert(i);
        }
    }
    let index = first?;
    let mut coords = vec![0; shape.len()];
    let mut rest = index;
    for (c, &dim) in coords.iter_mut().zip(shape).rev() {
        let dim = dim.max(1);
        *c = rest % dim;
        rest /= dim;
    }
    Some(ElementDiff {
        index,
        coords,
        reference: reference[index],
        engine: engine[index],
        ulps: ulp_distance(reference[index], engine[index]),
        count,
    })
}

/// One compared (point, step, position).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointResult {
    pub name: String,
    pub step: u32,
    pub position: u32,
    pub layer: Option<u32>,
    pub stage: Stage,
    pub metrics: Metrics,
    /// Empty when within tolerance.
    pub violations: Vec<String>,
    /// Whether this point was held to exact equality.
    pub exact: bool,
    /// With `exact`: the first differing element, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<ElementDiff>,
}

/// The first place where the two traces part.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    pub step: u32,
    pub position: u32,
    pub layer: Option<u32>,
    pub stage: Stage,
    pub name: String,
    pub metrics: Metrics,
    pub violations: Vec<String>,
    /// The points just before it at the same step and position, in execution order (at most 6).
    pub before: Vec<PointResult>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layer = self
            .layer
            .map(|l| format!("layer {l}, "))
            .unwrap_or_default();
        write!(
            f,
            "step {}, position {}, {layer}stage {} (`{}`): {}",
            self.step,
            self.position,
            self.stage.suffix(),
            self.name,
            self.violations.join(", ")
        )
    }
}

/// Worst values per layer, for the report's per-layer table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    /// `None` for the points outside layers (embeddings, output norm, logits).
    pub layer: Option<u32>,
    pub min_cosine: f64,
    pub max_rel_l2: f64,
    pub max_abs: f64,
    pub max_nmse: f64,
    pub violations: usize,
}

/// The worst value seen for one metric and its distance to the tolerance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Headroom {
    pub metric: String,
    /// Where the worst value was seen (point, step, position) or `logits`.
    pub at: String,
    pub worst: f64,
    pub bound: f64,
    /// How many times the current error fits in the tolerance: for an upper bound `bound/worst`,
    /// for a lower bound on a similarity `(1−bound)/(1−worst)`. ≥ 1 passes; infinite when exact.
    pub factor: f64,
}

/// The result of comparing two trace directories.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Every compared (point, step, position), in execution order.
    pub points: Vec<PointResult>,
    pub first_divergence: Option<Divergence>,
    pub per_layer: Vec<LayerRow>,
    /// Prefill logits (from `logits.npy`).
    pub logits: Option<LogitSummary>,
    pub logit_violations: Vec<String>,
    pub engine_generated: Vec<u32>,
    pub reference_generated: Vec<u32>,
    /// The first generated index where the tokens differ.
    pub generated_mismatch: Option<usize>,
    /// When the greedy tokens split at index m, only steps 0..=m were compared (step k consumes
    /// token k−1, so later steps see different inputs on the two sides).
    pub steps_compared_to: Option<u32>,
    /// `(point, step)` present on one side only, or without values on one side.
    pub unmatched: Vec<String>,
    pub headroom: Vec<Headroom>,
}

impl Comparison {
    /// Whether every check is within tolerance.
    pub fn passed(&self) -> bool {
        self.first_divergence.is_none()
            && self.logit_violations.is_empty()
            && self.generated_mismatch.is_none()
            && self.unmatched.is_empty()
    }

    /// The metric with the least headroom.
    pub fn worst_headroom(&self) -> Option<&Headroom> {
        self.headroom
            .iter()
            .min_by(|a, b| a.factor.total_cmp(&b.factor))
    }

    /// One-paragraph explanation of a failure (empty when passed).
    pub fn failure_summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.first_divergence {
            parts.push(format!("first divergence at {d}"));
        }
        if !self.logit_violations.is_empty() {
            parts.push(format!("logits: {}", self.logit_violations.join(", ")));
        }
        if let Some(i) = self.generated_mismatch {
            parts.push(format!(
                "generated tokens differ at index {i}: engine {:?}, reference {:?} (steps after {} not compared: the two sides no longer see the same tokens)",
                self.engine_generated, self.reference_generated, i
            ));
        }
        if !self.unmatched.is_empty() {
            // The first few: a reference may write thousands of records no engine has.
            const SHOWN: usize = 12;
            let more = self.unmatched.len().saturating_sub(SHOWN);
            parts.push(format!(
                "not comparable ({}): {}{}",
                self.unmatched.len(),
                self.unmatched[..self.unmatched.len().min(SHOWN)].join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        parts.join("\n")
    }
}

/// Errors reading the trace directories.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{0}")]
    Trace(String),
    #[error(transparent)]
    Npy(#[from] bitnet_engine::npy::NpyError),
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}`: {what}")]
    Format { path: PathBuf, what: String },
}

/// What to compare with which tolerances.
pub struct CompareSpec<'a> {
    /// Tolerance for a canonical point name.
    pub tolerance: &'a dyn Fn(&str) -> Tolerance,
    pub logits: LogitTolerance,
    /// Whether generated tokens must be equal.
    pub generated_equal: bool,
}

struct Side {
    dir: PathBuf,
    records: BTreeMap<(String, u32), TraceRecord>,
}

impl Side {
    /// The greedy ids of this side's `generated.json`: step k ≥ 1 consumes id k−1, so a side with
    /// decode steps must say which ids they consumed (a missing file is not "none generated").
    fn generated(&self) -> Result<Vec<u32>, CompareError> {
        let last_step = self
            .records
            .keys()
            .map(|(_, step)| *step)
            .max()
            .unwrap_or(0);
        let ids = read_generated(&self.dir)?;
        if (ids.len() as u64) < u64::from(last_step) {
            let path = self.dir.join("generated.json");
            let found = if path.exists() {
                format!("holds {} ids", ids.len())
            } else {
                "is missing".to_string()
            };
            return Err(CompareError::Format {
                path,
                what: format!(
                    "{found}, but `trace.jsonl` has records of decode step {last_step}: expected a JSON array of at least {last_step} token ids (step k consumes the k-th)"
                ),
            });
        }
        Ok(ids)
    }

    fn load(dir: &Path) -> Result<Side, CompareError> {
        let path = dir.join("trace.jsonl");
        let recs = read_trace(&path).map_err(CompareError::Trace)?;
        if recs.is_empty() {
            return Err(CompareError::Format {
                path,
                what: "no trace record: nothing to compare".into(),
            });
        }
        let records = recs
            .into_iter()
            .map(|r| ((r.name.clone(), r.step), r))
            .collect();
        Ok(Side {
            dir: dir.to_owned(),
            records,
        })
    }

    fn values(&self, r: &TraceRecord) -> Result<Option<Vec<f32>>, CompareError> {
        let Some(file) = &r.file else { return Ok(None) };
        let path = self.dir.join(file);
        let (shape, values) = bitnet_engine::npy::read_npy(&path)?;
        if shape != r.shape {
            return Err(CompareError::Format {
                path,
                what: format!(
                    "shape {shape:?} differs from the trace record's {:?}",
                    r.shape
                ),
            });
        }
        Ok(Some(values))
    }
}

/// A trace directory's `generated.json` (empty when it has none).
pub(crate) fn read_generated(dir: &Path) -> Result<Vec<u32>, CompareError> {
    let path = dir.join("generated.json");
    match bitnet_engine::files::read_text_limited(
        &path,
        bitnet_engine::files::MAX_JSON_BYTES,
        "generated.json",
    ) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| CompareError::Format {
            path,
            what: format!("expected a JSON array of token ids: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CompareError::Io { path, source }),
    }
}

/// Compare the engine's trace directory against the reference's.
pub fn compare_trace_dirs(
    engine_dir: &Path,
    reference_dir: &Path,
    spec: &CompareSpec<'_>,
) -> Result<Comparison, CompareError> {
    let eng = Side::load(engine_dir)?;
    let refr = Side::load(reference_dir)?;
    let mut unmatched = Vec::new();
    let mut points = Vec::new();
    let engine_generated = eng.generated()?;
    let reference_generated = refr.generated()?;
    // Step k ≥ 1 consumes generated token k−1: after the first token that differs, the two runs
    // no longer see the same input, so their later steps are not compared.
    let token_split = engine_generated
        .iter()
        .zip(&reference_generated)
        .position(|(a, b)| a != b);
    let last_step = token_split.map(|m| m as u32);

    // Pair records by (name, step), then order by step and execution order.
    type Key = (u32, (u32, u32, Stage), String, TracePoint);
    let mut keys: Vec<Key> = Vec::new();
    for (name, step) in eng.records.keys() {
        if last_step.is_some_and(|l| *step > l) {
            continue;
        }
        if !refr.records.contains_key(&(name.clone(), *step)) {
            unmatched.push(format!("`{name}` step {step} only in the engine's trace"));
            continue;
        }
        let Some(p) = TracePoint::parse(name) else {
            unmatched.push(format!("`{name}` is not a canonical trace point"));
            continue;
        };
        keys.push((*step, p.order_key(), name.clone(), p));
    }
    for (name, step) in refr.records.keys() {
        if last_step.is_some_and(|l| *step > l) {
            continue;
        }
        if !eng.records.contains_key(&(name.clone(), *step)) {
            unmatched.push(format!(
                "`{name}` step {step} only in the reference's trace"
            ));
        }
    }
    keys.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));

    for (step, _, name, point) in &keys {
        let e = &eng.records[&(name.clone(), *step)];
        let r = &refr.records[&(name.clone(), *step)];
        if e.shape != r.shape || e.positions != r.positions {
            unmatched.push(format!(
                "`{name}` step {step}: engine shape {:?} positions {:?}, reference shape {:?} positions {:?}",
                e.shape, e.positions, r.shape, r.positions
            ));
            continue;
        }
        let (Some(ev), Some(rv)) = (eng.values(e)?, refr.values(r)?) else {
            // Values are compared, not hashes: a record's `blake3` is the writer's word alone.
            let missing: Vec<&str> = [("engine", e), ("reference", r)]
                .iter()
                .filter(|(_, x)| x.file.is_none())
                .map(|(side, _)| *side)
                .collect();
            unmatched.push(format!(
                "`{name}` step {step}: the {} record names no values file (`file`): values are compared, not hashes",
                missing.join(" and the ")
            ));
            continue;
        };
        let tol = (spec.tolerance)(name);
        let n_pos = e.positions[1].saturating_sub(e.positions[0]) as usize;
        if e.shape.first() != Some(&n_pos) || e.positions[0] > e.positions[1] {
            unmatched.push(format!(
                "`{name}` step {step}: shape {:?} does not start with the {n_pos} positions {:?}",
                e.shape, e.positions
            ));
            continue;
        }
        let row = ev.len().checked_div(n_pos).unwrap_or(0);
        let exact = tol.exact == Some(true);
        for i in 0..n_pos {
            let (rr, er) = (&rv[i * row..(i + 1) * row], &ev[i * row..(i + 1) * row]);
            let m = tensor_metrics(rr, er);
            let (mut violations, diff) = if exact {
                (Vec::new(), first_difference(rr, er, &e.shape[1..]))
            } else {
                (tol.violations(&m), None)
            };
            if let Some(d) = &diff {
                violations.push(d.to_string());
            }
            // No stage of a healthy run holds NaN or infinity; equal NaNs are not agreement.
            let bad = |v: &[f32]| v.iter().filter(|x| !x.is_finite()).count();
            let (eb, rb) = (bad(er), bad(rr));
            if eb + rb > 0 {
                violations.push(format!(
                    "non-finite values (NaN or infinity): {eb} in the engine's, {rb} in the reference's"
                ));
            }
            points.push(PointResult {
                name: name.clone(),
                step: *step,
                position: e.positions[0] + i as u32,
                layer: point.layer,
                stage: point.stage,
                violations,
                metrics: m,
                exact,
                diff,
            });
        }
    }
    // Execution order: step, point order (already), then position within the point.
    let first_divergence = points
        .iter()
        .position(|p| !p.violations.is_empty())
        .map(|i| {
            let p = &points[i];
            let before: Vec<PointResult> = points[..i]
                .iter()
                .filter(|q| q.step == p.step && q.position == p.position)
                .rev()
                .take(6)
                .cloned()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Divergence {
                step: p.step,
                position: p.position,
                layer: p.layer,
                stage: p.stage,
                name: p.name.clone(),
                metrics: p.metrics,
                violations: p.violations.clone(),
                before,
            }
        });

    let per_layer = layer_table(&points);
    let mut headroom = point_headroom(&points, spec);

    // Prefill logits.
    let (logits, logit_violations) =
        compare_logits(engine_dir, reference_dir, spec, &mut headroom)?;

    let generated_mismatch = if spec.generated_equal && engine_generated != reference_generated {
        Some(
            engine_generated
                .iter()
                .zip(&reference_generated)
                .position(|(a, b)| a != b)
                .unwrap_or(engine_generated.len().min(reference_generated.len())),
        )
    } else {
        None
    };

    Ok(Comparison {
        points,
        first_divergence,
        per_layer,
        logits,
        logit_violations,
        engine_generated,
        reference_generated,
        generated_mismatch,
        steps_compared_to: last_step,
        unmatched,
        headroom,
    })
}

fn compare_logits(
    engine_dir: &Path,
    reference_dir: &Path,
    spec: &CompareSpec<'_>,
    headroom: &mut Vec<Headroom>,
) -> Result<(Option<LogitSummary>, Vec<String>), CompareError> {
    let (ep, rp) = (
        engine_dir.join("logits.npy"),
        reference_dir.join("logits.npy"),
    );
    if !ep.exists() || !rp.exists() {
        let missing = if ep.exists() { &rp } else { &ep };
        return Ok((None, vec![format!("`{}` is missing", missing.display())]));
    }
    let (es, ev) = bitnet_engine::npy::read_npy(&ep)?;
    let (rs, rv) = bitnet_engine::npy::read_npy(&rp)?;
    if es != rs || es.len() != 2 {
        return Ok((
            None,
            vec![format!(
                "logits shapes differ or are not 2-D: engine {es:?}, reference {rs:?}"
            )],
        ));
    }
    let n_vocab = es[1];
    let k = spec.logits.k;
    let per: Vec<LogitPositionMetrics> = (0..es[0])
        .map(|i| {
            let s = i * n_vocab..(i + 1) * n_vocab;
            logit_position_metrics(&rv[s.clone()], &ev[s], k)
        })
        .collect();
    let summary = summarize_logits(&per, k);
    let t = &spec.logits;
    let mut push = |metric: &str, worst: f64, bound: Option<f64>, upper: bool| {
        if let Some(bound) = bound {
            headroom.push(Headroom {
                metric: metric.into(),
                at: "logits".into(),
                worst,
                bound,
                factor: factor(worst, bound, upper),
            });
        }
    };
    push("kl_max", summary.kl_max, t.kl_max, true);
    push("kl_mean", summary.kl_mean, t.kl_mean_max, true);
    push(
        "top1_agreement",
        summary.top1_agreement,
        t.top1_agreement_min,
        false,
    );
    push(
        "topk_overlap",
        summary.topk_overlap,
        t.topk_overlap_min,
        false,
    );
    Ok((Some(summary), spec.logits.violations(&summary)))
}

/// Headroom factor; see [`Headroom::factor`].
fn factor(worst: f64, bound: f64, upper: bool) -> f64 {
    if worst.is_nan() {
        return 0.0;
    }
    let (err, allowed) = if upper {
        (worst, bound)
    } else {
        (1.0 - worst, 1.0 - bound)
    };
    if err <= 0.0 {
        f64::INFINITY
    } else {
        allowed / err
    }
}

fn layer_table(points: &[PointResult]) -> Vec<LayerRow> {
    let mut rows: BTreeMap<(u8, u32), LayerRow> = BTreeMap::new();
    for p in points {
        let key = match p.layer {
            Some(l) => (1, l),
            None if p.stage == Stage::Embeddings => (0, 0),
            None => (2, 0),
        };
        let row = rows.entry(key).or_insert(LayerRow {
            layer: p.layer,
            min_cosine: f64::INFINITY,
            max_rel_l2: 0.0,
            max_abs: 0.0,
            max_nmse: 0.0,
            violations: 0,
        });
        let m = &p.metrics;
        let worse_min = |cur: f64, v: f64| {
            if v.is_nan() || cur.is_nan() {
                f64::NAN
            } else {
                cur.min(v)
            }
        };
        let worse_max = |cur: f64, v: f64| {
            if v.is_nan() || cur.is_nan() {
                f64::NAN
            } else {
                cur.max(v)
            }
        };
        row.min_cosine = worse_min(row.min_cosine, m.cosine);
        row.max_rel_l2 = worse_max(row.max_rel_l2, m.rel_l2);
        row.max_abs = worse_max(row.max_abs, m.max_abs);
        row.max_nmse = worse_max(row.max_nmse, m.nmse);
        row.violations += usize::from(!p.violations.is_empty());
    }
    rows.into_values().collect()
}

fn point_headroom(points: &[PointResult], spec: &CompareSpec<'_>) -> Vec<Headroom> {
    // Worst factor per metric over every compared point, each against its own tolerance.
    let mut best: BTreeMap<&'static str, Headroom> = BTreeMap::new();
    let mut tol_cache: BTreeMap<&str, Tolerance> = BTreeMap::new();
    for p in points {
        let tol = *tol_cache
            .entry(&p.name)
            .or_insert_with(|| (spec.tolerance)(&p.name));
        let m = &p.metrics;
        let cands = [
            ("cosine", m.cosine, tol.cosine_min, false),
            ("rel_l2", m.rel_l2, tol.rel_l2_max, true),
            ("max_abs", m.max_abs, tol.max_abs, true),
            ("nmse", m.nmse, tol.nmse_max, true),
        ];
        for (metric, worst, bound, upper) in cands {
            let Some(bound) = bound else { continue };
            let f = factor(worst, bound, upper);
            if best.get(metric).is_none_or(|h| f < h.factor) {
                best.insert(
                    metric,
                    Headroom {
                        metric: metric.into(),
                        at: format!("{} step {} position {}", p.name, p.step, p.position),
                        worst,
                        bound,
                        factor: f,
                    },
                );
            }
        }
    }
    best.into_values().collect()
}

#[cfg(test)]
mod tests;
