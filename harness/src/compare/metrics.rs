//! Numeric metrics between a reference tensor and an engine tensor (all sums in f64).
//!
//! Definitions (`a` = reference, `b` = engine):
//! - cosine similarity `Σab / sqrt(Σa² Σb²)`; equal vectors (all-zero ones too) have cosine 1, one all-zero
//!   vector against a non-zero one has cosine 0;
//! - relative L2 `sqrt(Σ(a−b)²) / sqrt(Σa²)` (infinite when `a` is zero and `b` is not);
//! - max absolute difference `max |a−b|`;
//! - NMSE as llama.cpp's `test-backend-ops` defines it: `Σ(a−b)² / Σa²`.
//!
//! A NaN or Inf in either tensor makes every metric NaN, which no tolerance accepts.
//!
//! For logits, per position: KL divergence `KL(P_ref ‖ P_eng)` of the softmax distributions (as
//! llama-perplexity's `--kl-divergence`), top-1 agreement and top-k overlap.

use serde::Serialize;

/// Metrics between two tensors of the same length.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    pub cosine: f64,
    pub rel_l2: f64,
    pub max_abs: f64,
    pub nmse: f64,
}

/// Compute [`Metrics`] of `engine` against `reference`. Panics on a length mismatch, which the
/// caller checks first (shapes are compared before values).
pub fn tensor_metrics(reference: &[f32], engine: &[f32]) -> Metrics {
    assert_eq!(
        reference.len(),
        engine.len(),
        "tensor_metrics: length mismatch"
    );
    let (mut ab, mut aa, mut bb, mut dd, mut max_abs) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let mut finite = true;
    for (&a, &b) in reference.iter().zip(engine) {
        if !a.is_finite() || !b.is_finite() {
            finite = false;
            break;
        }
        let (a, b) = (a as f64, b as f64);
        ab += a * b;
        aa += a * a;
        bb += b * b;
        let d = a - b;
        dd += d * d;
        max_abs = max_abs.max(d.abs());
    }
    if !finite {
        return Metrics {
            cosine: f64::NAN,
            rel_l2: f64::NAN,
            max_abs: f64::NAN,
            nmse: f64::NAN,
        };
    }
    let cosine = if dd == 0.0 {
        1.0
    } else if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (ab / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0)
    };
    let nmse = if aa == 0.0 {
        if dd == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        dd / aa
    };
    Metrics {
        cosine,
        rel_l2: nmse.sqrt(),
        max_abs,
        nmse,
    }
}

/// Metrics between the logits of one position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogitPositionMetrics {
    /// `KL(P_ref ‖ P_eng)` in nats.
    pub kl: f64,
    /// Whether the argmax agrees (ties resolve to the lowest token id, as greedy sampling does).
    pub top1_agree: bool,
    /// `|topk_ref ∩ topk_eng| / k`.
    pub topk_overlap: f64,
}

/// Log-softmax in f64 (max-subtracted).
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let sum: f64 = logits.iter().map(|&x| ((x as f64) - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

/// Indices of the `k` largest values, ties broken by the lower index.
pub fn top_k(logits: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&i, &j| logits[j].total_cmp(&logits[i]).then(i.cmp(&j)));
    idx.truncate(k);
    idx
}

/// Argmax with ties resolved to the lowest index (greedy decoding's choice).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// Compare one position's logits.
pub fn logit_position_metrics(reference: &[f32], engine: &[f32], k: usize) -> LogitPositionMetrics {
    assert_eq!(
        reference.len(),
        engine.len(),
        "logit_position_metrics: length mismatch"
    );
    if reference.iter().chain(engine).any(|v| !v.is_finite()) {
        return LogitPositionMetrics {
            kl: f64::NAN,
            top1_agree: false,
            topk_overlap: f64::NAN,
        };
    }
    let lp = log_softmax(reference);
    let lq = log_softmax(engine);
    let kl: f64 = lp
        .iter()
        .zip(&lq)
        .map(|(&p, &q)| p.exp() * (p - q))
        .sum::<f64>()
        .max(0.0);
    let k = k.clamp(1, reference.len().max(1));
    let tr = top_k(reference, k);
    let te = top_k(engine, k);
    let overlap = tr.iter().filter(|i| te.contains(i)).count() as f64 / k as f64;
    LogitPositionMetrics {
        kl,
        top1_agree: argmax(reference) == argmax(engine),
        topk_overlap: overlap,
    }
}

/// Summary of logit metrics over positions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogitSummary {
    pub positions: usize,
    pub kl_mean: f64,
    pub kl_max: f64,
    /// 99th percentile, nearest-rank method.
    pub kl_p99: f64,
    /// Fraction of positions whose argmax agrees.
    pub top1_agreement: f64,
    /// Mean top-k overlap.
    pub topk_overlap: f64,
    pub k: usize,
}

/// Summarise per-position logit metrics. NaN anywhere propagates.
pub fn summarize_logits(per_position: &[LogitPositionMetrics], k: usize) -> LogitSummary {
    let n = per_position.len();
    if n == 0 {
        return LogitSummary {
            positions: 0,
            kl_mean: 0.0,
            kl_max: 0.0,
            kl_p99: 0.0,
            top1_agreement: 1.0,
            topk_overlap: 1.0,
            k,
        };
    }
    let mut kls: Vec<f64> = per_position.iter().map(|m| m.kl).collect();
    let any_nan = kls.iter().any(|v| v.is_nan());
    let kl_mean = kls.iter().sum::<f64>() / n as f64;
    kls.sort_by(|a, b| a.total_cmp(b));
    let rank = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
    let nan_or = |v: f64| if any_nan { f64::NAN } else { v };
    LogitSummary {
        positions: n,
        kl_mean: nan_or(kl_mean),
        kl_max: nan_or(kls[n - 1]),
        kl_p99: nan_or(kls[rank - 1]),
        top1_agreement: per_position.iter().filter(|m| m.top1_agree).count() as f64 / n as f64,
        topk_overlap: per_position.iter().map(|m| m.topk_overlap).sum::<f64>() / n as f64,
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_metrics() {
        // a = (3, 4), b = (3, 5): Σab = 29, |a| = 5, |b| = sqrt(34), Σ(a−b)² = 1, Σa² = 25.
        let m = tensor_metrics(&[3.0, 4.0], &[3.0, 5.0]);
        assert!((m.cosine - 29.0 / (5.0 * 34f64.sqrt())).abs() < 1e-15);
        assert_eq!(m.nmse, 1.0 / 25.0);
        assert!((m.rel_l2 - 0.2).abs() < 1e-15);
        assert_eq!(m.max_abs, 1.0);
        let same = tensor_metrics(&[1.0, -2.0], &[1.0, -2.0]);
        assert_eq!((same.cosine, same.nmse, same.max_abs), (1.0, 0.0, 0.0));
        let zeros = tensor_metrics(&[0.0; 3], &[0.0; 3]);
        assert_eq!((zeros.cosine, zeros.nmse), (1.0, 0.0));
        let z1 = tensor_metrics(&[0.0; 2], &[0.0, 1.0]);
        assert_eq!((z1.cosine, z1.nmse), (0.0, f64::INFINITY));
        let nan = tensor_metrics(&[1.0, f32::NAN], &[1.0, 1.0]);
        assert!(nan.cosine.is_nan() && nan.nmse.is_nan());
    }

    #[test]
    fn hand_worked_kl_and_topk() {
        // Reference logits (0, ln 3): P = (1/4, 3/4). Engine logits (0, 0): Q = (1/2, 1/2).
        // KL = 1/4 ln(1/2) + 3/4 ln(3/2).
        let m = logit_position_metrics(&[0.0, 3f32.ln()], &[0.0, 0.0], 1);
        let expected = 0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln();
        assert!((m.kl - expected).abs() < 1e-7, "{} vs {expected}", m.kl);
        // Ties resolve to the lowest id: engine argmax 0, reference argmax 1.
        assert!(!m.top1_agree);
        assert_eq!(top_k(&[1.0, 5.0, 3.0, 5.0], 3), vec![1, 3, 2]);
        let o = logit_position_metrics(&[1.0, 5.0, 3.0, 0.0], &[5.0, 4.0, 3.0, 0.0], 2);
        assert_eq!(o.topk_overlap, 0.5);
        let s = summarize_logits(&[m, o], 2);
        assert_eq!(s.top1_agreement, 0.0);
        assert_eq!(s.kl_max, m.kl.max(o.kl));
    }
}
