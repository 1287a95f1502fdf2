//! Tolerance calibration: measure how far the reference moves from itself under perturbations
//! that should not matter, and propose per-point tolerances from that spread.
//!
//! Sits beside [`crate::compare`]: `harness calibrate SCENARIO` runs the reference once as a
//! baseline and again under each perturbation (another thread count, another batch or chunk
//! size, a 1-ulp nudge of the input embedding), compares each perturbed trace against the baseline
//! with no tolerance, and keeps per canonical point the worst value of each metric. A tolerance is
//! then that spread times a safety factor, never tighter than a floor, so that the engine is held
//! to what the reference itself can promise — measured, not guessed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::compare::{
    compare_trace_dirs, CompareError, CompareSpec, LogitTolerance, Metrics, Tolerance,
};

/// The worst metrics seen for one canonical point over every perturbation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub point: String,
    pub min_cosine: f64,
    pub max_rel_l2: f64,
    pub max_abs: f64,
    pub max_nmse: f64,
    /// The perturbation that produced the lowest cosine.
    pub worst_perturbation: String,
}

/// Logit spread: worst KL and agreement over perturbations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogitSpread {
    pub kl_max: f64,
    pub kl_mean: f64,
    pub top1_agreement: f64,
    pub topk_overlap: f64,
}

/// The result of a calibration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Per point, in execution order.
    pub spread: Vec<Spread>,
    pub logits: Option<LogitSpread>,
    /// The proposal as the scenario's `tolerances.points` takes it: one `blk.*.<stage>` glob per
    /// stage whose layers' proposals agree within [`GLOB_WITHIN`], else one entry per layer; the
    /// points outside the blocks by name ([`glob_proposals`]).
    pub proposed: BTreeMap<String, Tolerance>,
    /// The proposal per canonical point, before the globs.
    pub proposed_per_point: BTreeMap<String, Tolerance>,
    pub proposed_logits: LogitTolerance,
    /// Generated tokens differed under some perturbation: greedy generation is not a stable
    /// check for this model and these inputs.
    pub generation_unstable: Vec<String>,
    pub safety_factor: f64,
}

/// Floors under which no tolerance is proposed: f32 rounding of order-one activations.
const REL_FLOOR: f64 = 1e-6;
const ABS_FLOOR: f64 = 1e-5;

/// Compare each `(label, dir)` in `perturbed` against `baseline` and propose tolerances that are
/// the worst spread times `safety_factor` (at least `REL_FLOOR`/`ABS_FLOOR`).
pub fn calibrate(
    baseline: &Path,
    perturbed: &[(String, &Path)],
    safety_factor: f64,
) -> Result<Calibration, CompareError> {
    let pairs: Vec<(String, &Path, &Path)> = perturbed
        .iter()
        .map(|(l, d)| (l.clone(), baseline, *d))
        .collect();
    calibrate_pairs(&pairs, safety_factor)
}

/// [`calibrate`] over several baselines: each `(label, baseline, perturbed)` is compared and the
/// worst spread over all of them is kept (one baseline per input of a scenario).
pub fn calibrate_pairs(
    pairs: &[(String, &Path, &Path)],
    safety_factor: f64,
) -> Result<Calibration, CompareError> {
    let none = |_: &str| Tolerance::default();
    let spec = CompareSpec {
        tolerance: &none,
        logits: LogitTolerance::default(),
        generated_equal: true,
    };
    let mut spread: BTreeMap<String, (usize, Spread)> = BTreeMap::new();
    let mut logits: Option<LogitSpread> = None;
    let mut generation_unstable = Vec::new();
    let mut order = 0usize;
    for (label, baseline, dir) in pairs {
        let c = compare_trace_dirs(dir, baseline, &spec)?;
        for p in &c.points {
            let m: &Metrics = &p.metrics;
            let entry = spread.entry(p.name.clone()).or_insert_with(|| {
                order += 1;
                (
                    order,
                    Spread {
                        point: p.name.clone(),
                        min_cosine: 1.0,
                        max_rel_l2: 0.0,
                        max_abs: 0.0,
                        max_nmse: 0.0,
                        worst_perturbation: label.clone(),
                    },
                )
            });
            let s = &mut entry.1;
            if m.cosine < s.min_cosine || m.cosine.is_nan() {
                s.min_cosine = m.cosine;
                s.worst_perturbation = label.clone();
            }
            s.max_rel_l2 = s.max_rel_l2.max(m.rel_l2);
            s.max_abs = s.max_abs.max(m.max_abs);
            s.max_nmse = s.max_nmse.max(m.nmse);
        }
        if let Some(l) = c.logits {
            let cur = logits.get_or_insert(LogitSpread {
                kl_max: 0.0,
                kl_mean: 0.0,
                top1_agreement: 1.0,
                topk_overlap: 1.0,
            });
            cur.kl_max = cur.kl_max.max(l.kl_max);
            cur.kl_mean = cur.kl_mean.max(l.kl_mean);
            cur.top1_agreement = cur.top1_agreement.min(l.top1_agreement);
            cur.topk_overlap = cur.topk_overlap.min(l.topk_overlap);
        }
        if let Some(i) = c.generated_mismatch {
            generation_unstable.push(format!("{label}: generated tokens differ at index {i}"));
        }
    }
    let mut spread: Vec<(usize, Spread)> = spread.into_values().collect();
    spread.sort_by_key(|(o, _)| *o);
    let spread: Vec<Spread> = spread.into_iter().map(|(_, s)| s).collect();

    let k = safety_factor;
    let proposed_per_point: BTreeMap<String, Tolerance> = spread
        .iter()
        .map(|s| {
            let t = Tolerance {
                cosine_min: Some(1.0 - ((1.0 - s.min_cosine) * k).max(REL_FLOOR * REL_FLOOR)),
                rel_l2_max: Some((s.max_rel_l2 * k).max(REL_FLOOR)),
                max_abs: Some((s.max_abs * k).max(ABS_FLOOR)),
                nmse_max: Some((s.max_nmse * k * k).max(REL_FLOOR * REL_FLOOR)),
                exact: None,
            };
            (s.point.clone(), t)
        })
        .collect();
    let proposed_logits = match &logits {
        Some(l) => LogitTolerance {
            kl_max: Some((l.kl_max * k).max(1e-9)),
            kl_mean_max: Some((l.kl_mean * k).max(1e-9)),
            // Agreement cannot be scaled; keep what the reference itself achieved.
            top1_agreement_min: Some(l.top1_agreement),
            topk_overlap_min: Some(l.topk_overlap),
            ..LogitTolerance::default()
        },
        None => LogitTolerance::default(),
    };
    Ok(Calibration {
        spread,
        logits,
        proposed: glob_proposals(&proposed_per_point, GLOB_WITHIN),
        proposed_per_point,
        proposed_logits,
        generation_unstable,
        safety_factor,
    })
}

/// Layers' proposals for one stage within this factor of each other (rel L2 and max |Δ|) become
/// one `blk.*.<stage>` glob.
pub const GLOB_WITHIN: f64 = 4.0;

/// Fold per-point proposals into one `blk.*.<stage>` glob per stage when every layer's bounds
/// are within `within` of each other (the glob takes the loosest of each bound); a stage whose
/// layers spread further keeps one entry per layer. Points outside the blocks keep their names.
pub fn glob_proposals(
    per_point: &BTreeMap<String, Tolerance>,
    within: f64,
) -> BTreeMap<String, Tolerance> {
    let mut stages: BTreeMap<&str, Vec<(&String, &Tolerance)>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, t) in per_point {
        let stage = name
            .strip_prefix("blk.")
            .and_then(|rest| rest.split_once('.'))
            .filter(|(layer, _)| layer.parse::<u32>().is_ok())
            .map(|(_, stage)| stage);
        match stage {
            Some(stage) => stages.entry(stage).or_default().push((name, t)),
            None => {
                out.insert(name.clone(), *t);
            }
        }
    }
    let spread_ok = |vals: Vec<f64>| {
        let (lo, hi) = vals.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
        lo > 0.0 && hi <= lo * within
    };
    for (stage, layers) in stages {
        let field = |f: fn(&Tolerance) -> Option<f64>| -> Vec<f64> {
            layers.iter().map(|(_, t)| f(t).unwrap_or(0.0)).collect()
        };
        let together = spread_ok(field(|t| t.rel_l2_max)) && spread_ok(field(|t| t.max_abs));
        if !together {
            out.extend(layers.into_iter().map(|(n, t)| (n.clone(), *t)));
            continue;
        }
        let max = |f: fn(&Tolerance) -> Option<f64>| {
            layers.iter().filter_map(|(_, t)| f(t)).reduce(f64::max)
        };
        let glob = Tolerance {
            cosine_min: layers
                .iter()
                .filter_map(|(_, t)| t.cosine_min)
                .reduce(f64::min),
            rel_l2_max: max(|t| t.rel_l2_max),
            max_abs: max(|t| t.max_abs),
            nmse_max: max(|t| t.nmse_max),
            exact: None,
        };
        out.insert(format!("blk.*.{stage}"), glob);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_engine::trace::{TracePoint, TraceRecord, TraceWriter};

    fn write(dir: &Path, noise: f32) {
        let mut w = TraceWriter::create(dir).unwrap();
        for p in TracePoint::all(1) {
            let v: Vec<f32> = (0..8)
                .map(|i| 1.0 + i as f32 + if i == 3 { noise } else { 0.0 })
                .collect();
            w.write(
                TraceRecord::summarize(p, 0, [0, 2], vec![2, 4], &v),
                Some(&v),
            )
            .unwrap();
        }
        w.finish().unwrap();
        let logits = [0.0f32, 1.0, 2.0, 3.0 + noise];
        bitnet_engine::npy::write_npy(&dir.join("logits.npy"), &[1, 4], &logits).unwrap();
        std::fs::write(dir.join("generated.json"), "[3]").unwrap();
    }

    #[test]
    fn proposes_spread_times_factor_with_floors() {
        let base = tempfile::tempdir().unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(base.path(), 0.0);
        write(a.path(), 1e-3);
        write(b.path(), 0.0);
        let cal = calibrate(
            base.path(),
            &[("threads=2".into(), a.path()), ("chunk=1".into(), b.path())],
            10.0,
        )
        .unwrap();
        assert_eq!(cal.spread.len(), 17);
        assert_eq!(cal.spread[0].point, "embeddings");
        // Position 0 row is [1,2,3,4+1e-3]; max_abs is the nudge (f32 rounding of 4.001).
        let s = &cal.spread[0];
        assert!((s.max_abs - 1e-3).abs() < 1e-6, "{}", s.max_abs);
        assert_eq!(s.worst_perturbation, "threads=2");
        let t = cal.proposed["embeddings"];
        assert!((t.max_abs.unwrap() - 1e-2).abs() < 1e-5);
        // rel_l2 of [1,2,3,4] vs nudge: 1e-3 / sqrt(30).
        assert!((t.rel_l2_max.unwrap() - 10.0 * 1e-3 / 30f64.sqrt()).abs() < 1e-6);
        assert!(cal.generation_unstable.is_empty());
        assert!(cal.proposed_logits.kl_max.unwrap() > 0.0);
        // An unperturbed pair proposes the floors.
        let flat = calibrate(base.path(), &[("same".into(), b.path())], 10.0).unwrap();
        assert!(
            flat.proposed.contains_key("blk.*.ffn_down"),
            "{:?}",
            flat.proposed
        );
        assert_eq!(flat.proposed["logits"].max_abs, Some(ABS_FLOOR));
        assert_eq!(flat.proposed["logits"].rel_l2_max, Some(REL_FLOOR));
    }
}

#[cfg(test)]
mod glob_tests {
    use super::*;

    fn t(rel: f64, abs: f64) -> Tolerance {
        Tolerance {
            cosine_min: Some(1.0 - rel * rel),
            rel_l2_max: Some(rel),
            max_abs: Some(abs),
            nmse_max: Some(rel * rel),
            exact: None,
        }
    }

    #[test]
    fn layers_within_the_factor_become_one_glob_with_the_loosest_bounds() {
        let per_point: BTreeMap<String, Tolerance> = [
            ("embeddings", t(1e-6, 1e-5)),
            ("blk.0.ffn_down", t(1e-5, 1e-4)),
            ("blk.1.ffn_down", t(3e-5, 2e-4)),
            ("blk.0.attn_out", t(1e-6, 1e-5)),
            // 100x apart: layer by layer.
            ("blk.1.attn_out", t(1e-4, 1e-5)),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        let g = glob_proposals(&per_point, 4.0);
        let names: Vec<&str> = g.keys().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "blk.*.ffn_down",
                "blk.0.attn_out",
                "blk.1.attn_out",
                "embeddings"
            ]
        );
        let down = g["blk.*.ffn_down"];
        assert_eq!((down.rel_l2_max, down.max_abs), (Some(3e-5), Some(2e-4)));
        assert_eq!(down.cosine_min, Some(1.0 - 3e-5 * 3e-5));
    }
}
