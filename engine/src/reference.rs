//! The F32 reference forward pass on candle-core tensors: every weight dequantized to f32, every
//! op textbook, no activation quantization. It is the specification the fast path
//! ([`crate::forward`]) is checked against, written to be read top to bottom like llama2.c's
//! `forward()`: one step per line, shapes in the comments.

use candle_core::{Device, Tensor, D};

use crate::model::{Model, Proj};
use crate::trace::{Stage, TracePoint};

/// Output of [`reference_forward`]: the logits and every canonical point's values.
pub struct ReferenceOutput {
    /// `[n_tokens, n_vocab]`.
    pub logits: Vec<f32>,
    /// Every canonical point in execution order: point, positions-first shape, values.
    pub points: Vec<(TracePoint, Vec<usize>, Vec<f32>)>,
}

type R<T> = Result<T, String>;

fn err(e: candle_core::Error) -> String {
    format!("candle: {e}")
}

/// A weight tensor `[rows, cols]` in f32.
fn weight(model: &Model, p: &Proj) -> R<Tensor> {
    let m = model.matrix(p);
    let v = crate::quant::dequantize(m.ty, m.data, m.rows * m.cols).map_err(|e| e.to_string())?;
    let w = Tensor::from_vec(v, (m.rows, m.cols), &Device::Cpu).map_err(err)?;
    match p.scale {
        Some(s) => (w * s as f64).map_err(err),
        None => Ok(w),
    }
}

fn vector(v: &[f32]) -> R<Tensor> {
    Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).map_err(err)
}

/// RMSNorm over the last dimension, then the weight: `x / sqrt(mean(x²) + eps) · w`.
fn rms_norm(x: &Tensor, w: &[f32], eps: f32) -> R<Tensor> {
    let ms = x.sqr().map_err(err)?.mean_keepdim(D::Minus1).map_err(err)?;
    let inv = (ms + eps as f64)
        .map_err(err)?
        .sqrt()
        .map_err(err)?
        .recip()
        .map_err(err)?;
    x.broadcast_mul(&inv)
        .map_err(err)?
        .broadcast_mul(&vector(w)?)
        .map_err(err)
}

/// NEOX RoPE on `[T, heads, hd]`: pairs `(i, i + n_rot/2)` rotated by `pos · base^(−2i/n_rot)`.
fn rope(x: &Tensor, p0: usize, n_rot: usize, base: f32) -> R<Tensor> {
    let (t, _heads, hd) = x.dims3().map_err(err)?;
    let half = n_rot / 2;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for pos in p0..p0 + t {
        for i in 0..half {
            let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / n_rot as f64);
            cos.push(theta.cos() as f32);
            sin.push(theta.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (t, 1, half), &Device::Cpu).map_err(err)?;
    let sin = Tensor::from_vec(sin, (t, 1, half), &Device::Cpu).map_err(err)?;
    let a = x.narrow(2, 0, half).map_err(err)?;
    let b = x.narrow(2, half, half).map_err(err)?;
    let ra =
        (a.broadcast_mul(&cos).map_err(err)? - b.broadcast_mul(&sin).map_err(err)?).map_err(err)?;
    let rb =
        (a.broadcast_mul(&sin).map_err(err)? + b.broadcast_mul(&cos).map_err(err)?).map_err(err)?;
    let mut parts = vec![ra, rb];
    if n_rot < hd {
        parts.push(x.narrow(2, n_rot, hd - n_rot).map_err(err)?);
    }
    Tensor::cat(&parts, 2).map_err(err)
}

fn values(t: &Tensor) -> R<Vec<f32>> {
    t.flatten_all().map_err(err)?.to_vec1::<f32>().map_err(err)
}

/// The whole prompt through the model, in f32, from position 0.
pub fn reference_forward(model: &Model, tokens: &[u32]) -> R<ReferenceOutput> {
    let c = &model.config;
    let (t, nh, nkv, hd) = (tokens.len(), c.n_head, c.n_head_kv, c.head_dim);
    if t == 0 || tokens.iter().any(|&x| x as usize >= c.n_vocab) {
        return Err("tokens must be non-empty and inside the vocabulary".into());
    }
    let mut points = Vec::new();
    let mut keep = |stage: Stage, layer: Option<usize>, x: &Tensor| -> R<()> {
        let shape = x.dims().to_vec();
        points.push((
            TracePoint {
                layer: layer.map(|l| l as u32),
                stage,
            },
            shape,
            values(x)?,
        ));
        Ok(())
    };
    // Token embeddings: rows of the embedding table. x: [T, e]
    let emb = model.embedding();
    let table = crate::quant::dequantize(emb.ty, emb.data, emb.rows * emb.cols)
        .map_err(|e| e.to_string())?;
    let table = Tensor::from_vec(table, (emb.rows, emb.cols), &Device::Cpu).map_err(err)?;
    let ids = Tensor::from_vec(tokens.to_vec(), t, &Device::Cpu).map_err(err)?;
    let mut x = table.index_select(&ids, 0).map_err(err)?;
    keep(Stage::Embeddings, None, &x)?;
    // Causal mask: 0 on and below the diagonal, −inf above. [T, T]
    let mask: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).map_err(err)?;
    for (l, layer) in model.layers.iter().enumerate() {
        let at = Some(l);
        // Attention block.
        let h = rms_norm(&x, &layer.attn_norm, c.rms_eps)?; // [T, e]
        keep(Stage::AttnNorm, at, &h)?;
        let q = h
            .matmul(&weight(model, &layer.wq)?.t().map_err(err)?)
            .map_err(err)?
            .reshape((t, nh, hd))
            .map_err(err)?;
        let k = h
            .matmul(&weight(model, &layer.wk)?.t().map_err(err)?)
            .map_err(err)?
            .reshape((t, nkv, hd))
            .map_err(err)?;
        let v = h
            .matmul(&weight(model, &layer.wv)?.t().map_err(err)?)
            .map_err(err)?
            .reshape((t, nkv, hd))
            .map_err(err)?;
        let q = rope(&q, 0, c.n_rot, c.rope_base)?;
        let k = rope(&k, 0, c.n_rot, c.rope_base)?;
        keep(Stage::Q, at, &q)?;
        keep(Stage::K, at, &k)?;
        keep(Stage::V, at, &v)?;
        let group = nh / nkv;
        let mut heads = Vec::with_capacity(nh);
        let mut probs_all = Vec::with_capacity(nh);
        for head in 0..nh {
            let kvh = head / group; // grouped-query attention: query head → key/value head
            let qh = q.narrow(1, head, 1).map_err(err)?.squeeze(1).map_err(err)?; // [T, hd]
            let kh = k.narrow(1, kvh, 1).map_err(err)?.squeeze(1).map_err(err)?;
            let vh = v.narrow(1, kvh, 1).map_err(err)?.squeeze(1).map_err(err)?;
            let scores = (qh.matmul(&kh.t().map_err(err)?).map_err(err)? / (hd as f64).sqrt())
                .map_err(err)?;
            let scores = (scores + &mask).map_err(err)?; // [T, T]
            let max = scores.max_keepdim(D::Minus1).map_err(err)?;
            let ex = scores
                .broadcast_sub(&max)
                .map_err(err)?
                .exp()
                .map_err(err)?;
            let probs = ex
                .broadcast_div(&ex.sum_keepdim(D::Minus1).map_err(err)?)
                .map_err(err)?;
            heads.push(probs.matmul(&vh).map_err(err)?); // [T, hd]
            probs_all.push(probs.unsqueeze(1).map_err(err)?); // [T, 1, T]
        }
        keep(
            Stage::AttnProbs,
            at,
            &Tensor::cat(&probs_all, 1).map_err(err)?,
        )?; // [T, nh, T]
        let att = Tensor::cat(&heads, 1).map_err(err)?; // [T, e]
        keep(Stage::KqvOut, at, &att)?;
        let att = rms_norm(&att, &layer.attn_sub_norm, c.rms_eps)?;
        keep(Stage::AttnSubNorm, at, &att)?;
        let o = att
            .matmul(&weight(model, &layer.wo)?.t().map_err(err)?)
            .map_err(err)?;
        keep(Stage::AttnOut, at, &o)?;
        x = (x + o).map_err(err)?;
        keep(Stage::FfnInp, at, &x)?;
        // Feed-forward block: SiLU(gate) · up (ReLU(gate)² · up for bitnet-b1.58), sub-norm, down.
        let h = rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
        keep(Stage::FfnNorm, at, &h)?;
        let gate = h
            .matmul(&weight(model, &layer.w_gate)?.t().map_err(err)?)
            .map_err(err)?;
        let up = h
            .matmul(&weight(model, &layer.w_up)?.t().map_err(err)?)
            .map_err(err)?;
        let gate = match c.arch.ffn() {
            crate::model::FfnAct::Silu => gate.silu().map_err(err)?,
            crate::model::FfnAct::Relu2 => gate.relu().map_err(err)?.sqr().map_err(err)?,
        };
        let act = (gate * up).map_err(err)?; // [T, n_ff]
        keep(Stage::FfnAct, at, &act)?;
        let act = rms_norm(&act, &layer.ffn_sub_norm, c.rms_eps)?;
        keep(Stage::FfnSubNorm, at, &act)?;
        let d = act
            .matmul(&weight(model, &layer.w_down)?.t().map_err(err)?)
            .map_err(err)?;
        keep(Stage::FfnDown, at, &d)?;
        x = (x + d).map_err(err)?;
        keep(Stage::Out, at, &x)?;
    }
    let h = rms_norm(&x, &model.output_norm, c.rms_eps)?;
    keep(Stage::OutputNorm, None, &h)?;
    // Logits through the tied embedding. [T, n_vocab]
    let logits = h.matmul(&table.t().map_err(err)?).map_err(err)?;
    keep(Stage::Logits, None, &logits)?;
    Ok(ReferenceOutput {
        logits: values(&logits)?,
        points,
    })
}
