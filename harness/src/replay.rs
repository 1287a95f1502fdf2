//! Stage replay: each stage of the engine's forward pass fed the reference's own input to that
//! stage, taken from the reference's trace, and its result compared with the reference's output
//! of the stage. A bug is then attributed to the stage that introduced it, not smeared over every
//! point after it, and stage comparisons stay tight even against a reference the engine does not
//! equal end to end (an AVX-512 llama.cpp build, an external reference).
//!
//! Stages and their inputs (step k's, at its positions; the KV cache of earlier steps is rebuilt
//! from the reference's `k`/`v` of those steps):
//!
//! | stage | input (reference) | engine |
//! |---|---|---|
//! | `embeddings` | the step's tokens | [`Session::embed`] |
//! | `attn_norm` | `embeddings` (layer 0) or the previous layer's `out` | [`Session::norm`] |
//! | `q`, `k`, `v` | `attn_norm` | [`Session::qkv`] (Q8_K products, RoPE) |
//! | `attn_probs`, `kqv_out` | `q`, `k`, `v` and earlier steps' `k`, `v` | [`attend_layer`] |
//! | `attn_sub_norm` | `kqv_out` | [`Session::norm`] |
//! | `attn_out` | `attn_sub_norm` | [`Session::project`] |
//! | `ffn_inp` | `attn_out` + the layer's input | residual add |
//! | `ffn_norm` | `ffn_inp` | [`Session::norm`] |
//! | `ffn_act` | `ffn_norm` | [`Session::ffn_act`] |
//! | `ffn_sub_norm` | `ffn_act` | [`Session::norm`] |
//! | `ffn_down` | `ffn_sub_norm` | [`Session::project`] |
//! | `out` | `ffn_down` + `ffn_inp` | residual add |
//! | `output_norm`, `logits` | the last `out`, `output_norm` | [`Session::norm`], [`Session::logits`] |
//!
//! Stages that quantize their input to Q8_K (the ternary TQ1_0/TQ2_0 products) also compare the
//! engine's quantization of the reference's input with ggml's own (`quantize_row_q8_K`, called in
//! this process), and I2_S products with bitnet.cpp's per-token `quantize_row_i8_s` (transcribed
//! here from its C source, `bitnet_i8s`): scales and block sums must be equal, and each
//! differing int8 is reported as a flip, a ±1 on a rounding boundary (k + ½ after scaling) or
//! anything else. Both sides quantize
//! the same values, so either kind fails the stage: a boundary flip there is a rounding-mode bug
//! (between two runs whose inputs differ by an ulp it would be noise).

use std::collections::BTreeMap;
use std::path::Path;

use bitnet_engine::attention::{KvType, LayerCache};
use bitnet_engine::forward::{attend_layer, residual, Session};
use bitnet_engine::gguf::GgmlType;
use bitnet_engine::kernels::Kernel;
#[cfg(feature = "llama")]
use bitnet_engine::kernels::{quantize_q8k, BlockQ8K, QK_K};
use bitnet_engine::model::Model;
use bitnet_engine::trace::{read_trace, Stage, TracePoint, TraceRecord};
use serde::Serialize;

use crate::compare::{first_difference, tensor_metrics, ElementDiff, Tolerance};

/// The int8 activations of one replayed product's input, the engine's against an independent
/// quantizer's: ggml's Q8_K (TQ1_0/TQ2_0 products) or bitnet.cpp's per-token I8_S (I2_S products).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Q8kFlips {
    /// `Q8_K` or `I8_S`.
    pub format: &'static str,
    /// Blocks (Q8_K: 256 values; I8_S: one token's row) compared.
    pub blocks: usize,
    /// Int8 values that differ by ±1 where the scaled input lies within 1e-4 of a rounding
    /// boundary (k + ½): noise.
    pub boundary: usize,
    /// Int8 values that differ otherwise, and blocks whose scale or block sums differ: a bug.
    pub other: usize,
}

/// One replayed stage at one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageReplay {
    /// The stage's output point (`blk.3.q`).
    pub name: String,
    pub step: u32,
    pub layer: Option<u32>,
    pub stage: Stage,
    /// Whether the output was held to exact equality (else to the point's tolerance).
    pub exact: bool,
    /// The first position whose values differ (exact stages), as parity names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// Empty when the stage reproduced the reference's output.
    pub violations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<ElementDiff>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q8k: Option<Q8kFlips>,
}

/// The result of replaying every stage whose input and output the reference traced.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Replay {
    pub stages: Vec<StageReplay>,
    /// Stages not replayed, with why (a point not traced).
    pub skipped: Vec<String>,
}

impl Replay {
    /// The first stage, in execution order, that did not reproduce the reference.
    pub fn first_failure(&self) -> Option<&StageReplay> {
        self.stages.iter().find(|s| !s.violations.is_empty())
    }
}

impl std::fmt::Display for StageReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layer = self
            .layer
            .map(|l| format!("layer {l}, "))
            .unwrap_or_default();
        let position = self
            .position
            .map(|p| format!("position {p}, "))
            .unwrap_or_default();
        write!(
            f,
            "step {}, {position}{layer}stage {} (`{}`) fed the reference's input: {}",
            self.step,
            self.stage.suffix(),
            self.name,
            self.violations.join(", ")
        )?;
        if let Some(q) = &self.q8k {
            if q.boundary + q.other > 0 {
                write!(
                    f,
                    "; {} activations: {} boundary flips, {} other differences in {} blocks",
                    q.format, q.boundary, q.other, q.blocks
                )?;
            }
        }
        Ok(())
    }
}

/// ggml's Q8_K quantization of `x` (a multiple of 256 values), through the llama.cpp build this
/// binary links.
#[cfg(feature = "llama")]
fn ggml_q8k(x: &[f32]) -> Vec<BlockQ8K> {
    use llama_cpp_sys_2 as sys;
    let mut out = vec![BlockQ8K::default(); x.len() / QK_K];
    // SAFETY: ggml_cpu_init fills lookup tables (idempotent); the type traits are a static table;
    // block_q8_K is {float d; int8 qs[256]; int16 bsums[16]}, BlockQ8K's layout; `out` holds
    // x.len()/256 of them.
    unsafe {
        sys::ggml_cpu_init();
        let t = *sys::ggml_get_type_traits_cpu(sys::GGML_TYPE_Q8_K);
        let from_float = t.from_float.expect("Q8_K from_float");
        from_float(
            x.as_ptr(),
            out.as_mut_ptr() as *mut std::ffi::c_void,
            (x.len() / QK_K * QK_K) as i64,
        );
    }
    out
}

/// The engine's Q8_K activations of `x` against ggml's.
#[cfg(feature = "llama")]
pub fn q8k_flips(x: &[f32]) -> Q8kFlips {
    let n = x.len() / QK_K * QK_K;
    let mut ours = Vec::new();
    quantize_q8k(&x[..n], &mut ours);
    let theirs = ggml_q8k(&x[..n]);
    let mut r = Q8kFlips {
        format: "Q8_K",
        blocks: ours.len(),
        ..Q8kFlips::default()
    };
    for (b, (o, t)) in ours.iter().zip(&theirs).enumerate() {
        if o.d.to_bits() != t.d.to_bits() || o.bsums != t.bsums {
            r.other += 1;
        }
        let iscale = if t.d != 0.0 { 1.0 / t.d } else { 0.0 };
        for (i, (&a, &c)) in o.qs.iter().zip(&t.qs).enumerate() {
            if a != c {
                let scaled = x[b * QK_K + i] * iscale;
                let frac = (scaled - scaled.floor() - 0.5).abs();
                if (a as i32 - c as i32).abs() == 1 && frac < 1e-4 {
                    r.boundary += 1;
                } else {
                    r.other += 1;
                }
            }
        }
    }
    r
}

/// bitnet.cpp's `quantize_row_i8_s` (`src/ggml-bitnet-mad.cpp`) for one token's row, transcribed
/// here from its C source as replay's independent check of the engine's I2_S activations: the
/// absolute maximum in double from 1e-5, `s = (float)(127 / max)`, `nearest_int(x·s)` (an f32
/// product, ties to even through the 1.5·2²³ trick) clamped to [−128, 127].
fn bitnet_i8s(x: &[f32]) -> (f32, Vec<i8>) {
    let max = x.iter().fold(0.00001f64, |m, &v| {
        if m > (v as f64).abs() {
            m
        } else {
            (v as f64).abs()
        }
    });
    let s = (127.0 / max) as f32;
    let q = x
        .iter()
        .map(|&v| {
            let val = v * s + 12582912.0;
            let i = (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000;
            i.clamp(-128, 127) as i8
        })
        .collect();
    (s, q)
}

/// The engine's I8_S activations of `x` (rows of `width`) against `bitnet_i8s`.
pub fn i8s_flips(x: &[f32], width: usize) -> Q8kFlips {
    let mut r = Q8kFlips {
        format: "I8_S",
        ..Q8kFlips::default()
    };
    for row in x.chunks_exact(width.max(1)) {
        r.blocks += 1;
        let mut ours = vec![0i8; row.len()];
        let (s_ours, sum) = bitnet_engine::kernels::quantize_i8s(row, &mut ours);
        let (s_theirs, theirs) = bitnet_i8s(row);
        let their_sum: i32 = theirs.iter().map(|&v| v as i32).sum();
        if s_ours.to_bits() != s_theirs.to_bits() || sum != their_sum {
            r.other += 1;
        }
        for (i, (&a, &c)) in ours.iter().zip(&theirs).enumerate() {
            if a != c {
                let scaled = row[i] * s_theirs;
                let frac = (scaled - scaled.floor() - 0.5).abs();
                if (a as i32 - c as i32).abs() == 1 && frac < 1e-4 {
                    r.boundary += 1;
                } else {
                    r.other += 1;
                }
            }
        }
    }
    r
}

struct RefTrace {
    records: BTreeMap<(String, u32), TraceRecord>,
    dir: std::path::PathBuf,
}

impl RefTrace {
    /// The values of `name` at `step`, when traced, and when its record holds `want` values: the
    /// size the engine's stage gives. A record of another size is returned without its values
    /// (never read: a reference's file is as large as its record says).
    fn values(
        &self,
        name: &str,
        step: u32,
        want: usize,
    ) -> Result<Option<(TraceRecord, Vec<f32>)>, String> {
        let Some(r) = self.records.get(&(name.to_string(), step)) else {
            return Ok(None);
        };
        let Some(file) = &r.file else { return Ok(None) };
        if r.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(want) {
            return Ok(Some((r.clone(), Vec::new())));
        }
        let path = self.dir.join(file);
        let (shape, v) = bitnet_engine::npy::read_npy(&path).map_err(|e| e.to_string())?;
        if shape != r.shape {
            return Err(format!(
                "`{}`: shape {shape:?} differs from its trace record's {:?}",
                path.display(),
                r.shape
            ));
        }
        Ok(Some((r.clone(), v)))
    }
}

/// Replay every stage of the reference trace in `ref_dir` (made for `tokens` then its generated
/// tokens) through the engine's stage functions on `model`, over an F32 KV cache.
pub fn replay(
    model: &Model,
    tokens: &[u32],
    ref_dir: &Path,
    threads: usize,
    kernel: Kernel,
    tolerance: &dyn Fn(&str) -> Tolerance,
) -> Result<Replay, String> {
    replay_with(
        model,
        tokens,
        ref_dir,
        threads,
        kernel,
        KvType::F32,
        tolerance,
    )
}

/// [`replay`] over a KV cache of type `kv` (the reference's: the keys and values it fed the
/// attention are stored as this type before the engine's attention reads them).
pub fn replay_with(
    model: &Model,
    tokens: &[u32],
    ref_dir: &Path,
    threads: usize,
    kernel: Kernel,
    kv: KvType,
    tolerance: &dyn Fn(&str) -> Tolerance,
) -> Result<Replay, String> {
    let recs = read_trace(&ref_dir.join("trace.jsonl"))?;
    let mut steps: Vec<u32> = recs.iter().map(|r| r.step).collect();
    steps.sort();
    steps.dedup();
    let rt = RefTrace {
        records: recs
            .into_iter()
            .map(|r| ((r.name.clone(), r.step), r))
            .collect(),
        dir: ref_dir.to_owned(),
    };
    // A `generated.json` that cannot be read counts as none here (parity names the failure).
    let generated = match crate::compare::read_generated(ref_dir) {
        Ok(g) => g,
        Err(crate::compare::CompareError::Io { .. }) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let c = &model.config;
    let s = Session::new(model, threads, kernel);
    let mut out = Replay::default();
    // Keys and values of earlier steps, per layer, from the reference.
    let mut past: Vec<LayerCache> =
        vec![LayerCache::new_typed(c.n_head_kv, c.head_dim, kv); c.n_layer];
    // The int8 activations a product of this weight type quantizes its input to, checked
    // against an independent quantizer.
    let flips = |ty: GgmlType, h: &[f32], width: usize| match ty {
        // Without llama.cpp linked (the fuzz build) there is no ggml quantizer to check against.
        #[cfg(feature = "llama")]
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => Some(q8k_flips(h)),
        GgmlType::I2_S => Some(i8s_flips(h, width)),
        _ => None,
    };
    let (e, ff) = (c.n_embd, c.n_ff);
    for &step in &steps {
        let step_tokens: Vec<u32> = if step == 0 {
            tokens.to_vec()
        } else {
            match generated.get(step as usize - 1) {
                Some(&t) => vec![t],
                None => {
                    out.skipped
                        .push(format!("step {step}: no generated token feeds it"));
                    continue;
                }
            }
        };
        let n = step_tokens.len();
        let point = |layer: Option<usize>, stage: Stage| TracePoint {
            layer: layer.map(|l| l as u32),
            stage,
        };
        let check = |out: &mut Replay,
                     p: TracePoint,
                     got: &[f32],
                     q8k: Option<Q8kFlips>|
         -> Result<(), String> {
            let name = p.name();
            let Some((rec, want)) = rt.values(&name, step, got.len())? else {
                out.skipped
                    .push(format!("`{name}` step {step}: not traced"));
                return Ok(());
            };
            if want.len() != got.len() {
                out.stages.push(StageReplay {
                    name: name.clone(),
                    step,
                    layer: p.layer,
                    stage: p.stage,
                    exact: false,
                    position: None,
                    violations: vec![format!(
                        "the engine's stage gives {} values, the reference's record {:?}",
                        got.len(),
                        rec.shape
                    )],
                    diff: None,
                    q8k,
                });
                return Ok(());
            }
            let tol = tolerance(&name);
            let exact = tol.exact == Some(true);
            // Exact stages: the first position that differs, and its first element within the
            // position's row (as parity reports it).
            let mut position = None;
            let (mut violations, diff) = if exact {
                let n_pos = rec.shape.first().copied().unwrap_or(1).max(1);
                let row = want.len() / n_pos;
                let rows = want.chunks(row.max(1)).zip(got.chunks(row.max(1)));
                let d = rows.enumerate().find_map(|(k, (w, g))| {
                    let d = first_difference(w, g, rec.shape.get(1..).unwrap_or(&[]))?;
                    position = Some(rec.positions[0] + k as u32);
                    Some(d)
                });
                (d.iter().map(|d| d.to_string()).collect(), d)
            } else {
                (tol.violations(&tensor_metrics(&want, got)), None)
            };
            if let Some(q) = &q8k {
                // Both quantized the same values (the reference's input), so any difference is
                // the engine's: a flip on a tie is a rounding-mode bug, any other a worse one.
                if q.boundary + q.other > 0 {
                    violations.push(format!(
                        "the engine's {} activations of the reference's input differ from {}: {} flips on a rounding boundary, {} other differences",
                        q.format,
                        if q.format == "I8_S" { "bitnet.cpp's quantize_row_i8_s" } else { "ggml's" },
                        q.boundary, q.other
                    ));
                }
            }
            out.stages.push(StageReplay {
                name,
                step,
                layer: p.layer,
                stage: p.stage,
                exact,
                position,
                violations,
                diff,
                q8k,
            });
            Ok(())
        };
        // A stage's input, `width` values for each of the `n` positions.
        let sized = |name: String, width: usize| -> Result<Option<Vec<f32>>, String> {
            match rt.values(&name, step, n * width)? {
                Some((r, v)) if v.len() != n * width => Err(format!(
                    "`{name}` step {step}: the reference's record has shape {:?}, where the engine's stage takes {n} positions of {width} values",
                    r.shape
                )),
                found => Ok(found.map(|(_, v)| v)),
            }
        };
        let (heads, kv_heads) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        let input = |name: String| sized(name, e);
        let emb = s.embed(&step_tokens);
        check(&mut out, point(None, Stage::Embeddings), &emb, None)?;
        for (l, layer) in model.layers.iter().enumerate() {
            let at = |st: Stage| point(Some(l), st);
            let name = |st: Stage| at(st).name();
            let layer_in = if l == 0 {
                input("embeddings".into())?
            } else {
                input(format!("blk.{}.out", l - 1))?
            };
            if let Some(x) = &layer_in {
                check(
                    &mut out,
                    at(Stage::AttnNorm),
                    &s.norm(x, &layer.attn_norm),
                    None,
                )?;
            }
            if let Some(h) = input(name(Stage::AttnNorm))? {
                let [q, k, v] = s.qkv(layer, &h, n, past[l].len());
                let flips = flips(layer.wq.info.ty, &h, e);
                check(&mut out, at(Stage::Q), &q, flips)?;
                check(&mut out, at(Stage::K), &k, None)?;
                check(&mut out, at(Stage::V), &v, None)?;
            }
            let (q, k, v) = (
                sized(name(Stage::Q), heads)?,
                sized(name(Stage::K), kv_heads)?,
                sized(name(Stage::V), kv_heads)?,
            );
            if let (Some(q), Some(k), Some(v)) = (q, k, v) {
                let caches = std::mem::take(&mut past[l]);
                let (caches, (att, probs)) = attend_layer(
                    c,
                    caches,
                    &q,
                    &k,
                    &v,
                    n,
                    true,
                    threads,
                    kernel,
                    bitnet_engine::attention::PREFETCH,
                );
                past[l] = caches;
                check(&mut out, at(Stage::AttnProbs), &probs, None)?;
                check(&mut out, at(Stage::KqvOut), &att, None)?;
            } else {
                out.skipped.push(format!(
                    "layer {l} attention at step {step} and after: q, k or v not traced"
                ));
                return Ok(out);
            }
            if let Some(a) = sized(name(Stage::KqvOut), heads)? {
                check(
                    &mut out,
                    at(Stage::AttnSubNorm),
                    &s.norm(&a, &layer.attn_sub_norm),
                    None,
                )?;
            }
            if let Some(h) = sized(name(Stage::AttnSubNorm), heads)? {
                let flips = flips(layer.wo.info.ty, &h, e);
                check(
                    &mut out,
                    at(Stage::AttnOut),
                    &s.project(&layer.wo, &h, n),
                    flips,
                )?;
            }
            if let (Some(mut x), Some(o)) = (layer_in, input(name(Stage::AttnOut))?) {
                residual(&mut x, &o);
                check(&mut out, at(Stage::FfnInp), &x, None)?;
            }
            if let Some(x) = input(name(Stage::FfnInp))? {
                check(
                    &mut out,
                    at(Stage::FfnNorm),
                    &s.norm(&x, &layer.ffn_norm),
                    None,
                )?;
            }
            if let Some(h) = input(name(Stage::FfnNorm))? {
                let flips = flips(layer.w_gate.info.ty, &h, e);
                check(&mut out, at(Stage::FfnAct), &s.ffn_act(layer, &h, n), flips)?;
            }
            if let Some(a) = sized(name(Stage::FfnAct), ff)? {
                check(
                    &mut out,
                    at(Stage::FfnSubNorm),
                    &s.norm(&a, &layer.ffn_sub_norm),
                    None,
                )?;
            }
            if let Some(h) = sized(name(Stage::FfnSubNorm), ff)? {
                let flips = flips(layer.w_down.info.ty, &h, ff);
                check(
                    &mut out,
                    at(Stage::FfnDown),
                    &s.project(&layer.w_down, &h, n),
                    flips,
                )?;
            }
            if let (Some(mut x), Some(d)) =
                (input(name(Stage::FfnInp))?, input(name(Stage::FfnDown))?)
            {
                residual(&mut x, &d);
                check(&mut out, at(Stage::Out), &x, None)?;
            }
        }
        if let Some(x) = input(format!("blk.{}.out", c.n_layer.saturating_sub(1)))? {
            check(
                &mut out,
                point(None, Stage::OutputNorm),
                &s.norm(&x, &model.output_norm),
                None,
            )?;
        }
        if let Some(h) = input("output_norm".into())? {
            check(
                &mut out,
                point(None, Stage::Logits),
                &s.logits(&h, n, true),
                None,
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitnet_i8s_hand_worked() {
        // max 1 → s = 127: 127, −63.5 → −64 (ties to even), 31.75 → 32, 0.
        let (s, q) = bitnet_i8s(&[1.0, -0.5, 0.25, 0.0]);
        assert_eq!(s, 127.0);
        assert_eq!(q, [127, -64, 32, 0]);
        // All zero: the maximum floors at 1e-5, every quant 0.
        let (s, q) = bitnet_i8s(&[0.0; 3]);
        assert_eq!(s, (127.0 / 0.00001f64) as f32);
        assert_eq!(q, [0, 0, 0]);
    }

    #[test]
    fn the_engines_i8s_agrees_row_by_row_and_a_changed_row_is_counted() {
        let mut rng = bitnet_engine::synth::Rng::for_tensor(7, "i8s");
        let x: Vec<f32> = (0..4 * 640).map(|_| rng.normal()).collect();
        let f = i8s_flips(&x, 640);
        assert_eq!((f.format, f.blocks, f.boundary, f.other), ("I8_S", 4, 0, 0));
    }
}
