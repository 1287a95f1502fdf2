//! [`CudaSession`]: the forward pass of [`crate::forward::Session`], stage for stage, with the
//! weights, the activations and the KV cache in device memory and each stage one or two launches
//! of the kernels in `bodies.cuh`. A trace point's values are copied back only when the tracer
//! wants that point. The orders of every float operation are the CPU engine's, so on the host
//! ([`Target::HostEmulation`]) the traces equal the CPU engine's bit for bit; on a GPU the one
//! expected difference is CUDA's `expf` in SwiGLU's scalar tail (rows whose width is not a
//! multiple of 8).

use super::exec::{bytes_of, Arg, Buf, Exec, Kern};
use super::{CudaError, DeviceInfo, Target};
use crate::attention::AttnOrder;
use crate::forward::{argmax, RunOptions, RunOutput, Tracer};
use crate::gguf::GgmlType;
use crate::kernels::scalar::{self, BlockQ8K, QK_K};
use crate::kernels::KernelLog;
use crate::model::{FfnAct, Model};
use crate::trace::{Stage, TracePoint};

mod device_ops;
mod host;

/// A layer's projection, as [`crate::model::Layer::projections`] orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// A projection's weights on the device.
struct DevProj {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: Buf,
    /// The optional `.scale` tensor's value.
    scale: Option<f32>,
    /// An I2_S tensor's own scale (the f32 after its codes).
    w_scale: f32,
}

struct DevLayer {
    attn_norm: Buf,
    attn_sub_norm: Buf,
    ffn_norm: Buf,
    ffn_sub_norm: Buf,
    /// In [`Proj`] order.
    proj: Vec<DevProj>,
}

/// One layer's KV cache: position-major, `cap` positions of `n_head_kv · head_dim` values.
struct DevCache {
    k: Buf,
    v: Buf,
    len: usize,
}

/// Activations prepared for one weight type (quantized once for the products sharing them).
enum Prepared {
    Q8k(Buf),
    I8s {
        q: Buf,
        scales: Buf,
        sums: Buf,
    },
    /// F16-rounded activations (F16 weights); `None`: the input itself (F32 weights).
    Float(Option<Buf>),
}

/// A running inference on the CUDA backend (or its host emulation).
pub struct CudaSession<'m> {
    model: &'m Model,
    exec: Exec,
    info: DeviceInfo,
    emb: Buf,
    emb_f16: bool,
    output_norm: Buf,
    layers: Vec<DevLayer>,
    cache: Vec<DevCache>,
    /// Positions each layer's cache has room for.
    cap: usize,
    n_past: usize,
    calls: u32,
    kernels: KernelLog,
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytes_of(v)
}

impl<'m> CudaSession<'m> {
    /// A session on `target`: the GPU (the driver looked for first; kernels compiled by NVRTC or
    /// read from the PTX cache), or the kernels' host copies. Every weight goes to the device once.
    pub fn new(model: &'m Model, target: &Target) -> Result<CudaSession<'m>, CudaError> {
        let (exec, info) = match target {
            Target::HostEmulation => (Exec::Host, DeviceInfo::host()),
            #[cfg(feature = "cuda")]
            Target::Gpu { ordinal, ptx_cache } => {
                let g = super::gpu::Gpu::open(*ordinal, ptx_cache.as_deref())?;
                let info = g.info.clone();
                (Exec::Gpu(g), info)
            }
            #[cfg(not(feature = "cuda"))]
            Target::Gpu { .. } => return Err(CudaError::NotBuilt),
        };
        let c = &model.config;
        let emb = model.embedding();
        let emb_f16 = match emb.ty {
            GgmlType::F16 => true,
            GgmlType::F32 => false,
            other => {
                return Err(CudaError::Unsupported(format!(
                    "a {other} token embedding (F16 and F32 only)"
                )))
            }
        };
        // SAFETY (every `borrow_or_upload` below): the bytes are the model's, which the session
        // borrows for its whole life (`'m`), and no kernel writes to weights.
        let emb_buf = unsafe { exec.borrow_or_upload(emb.data)? };
        let mut layers = Vec::with_capacity(c.n_layer);
        for layer in &model.layers {
            let mut proj = Vec::with_capacity(7);
            for p in layer.projections() {
                let m = model.matrix(p);
                let w_scale = match m.ty {
                    GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::F16 | GgmlType::F32 => 0.0,
                    GgmlType::I2_S => {
                        let at = m.rows * m.cols / 4;
                        f32::from_le_bytes(m.data[at..at + 4].try_into().expect("4 bytes"))
                    }
                    other => {
                        return Err(CudaError::Unsupported(format!(
                            "{other} weights (`{}`)",
                            p.info.name
                        )))
                    }
                };
                proj.push(DevProj {
                    ty: m.ty,
                    rows: m.rows,
                    cols: m.cols,
                    data: unsafe { exec.borrow_or_upload(m.data)? },
                    scale: p.scale,
                    w_scale,
                });
            }
            layers.push(DevLayer {
                attn_norm: exec.upload(f32_bytes(&layer.attn_norm))?,
                attn_sub_norm: exec.upload(f32_bytes(&layer.attn_sub_norm))?,
                ffn_norm: exec.upload(f32_bytes(&layer.ffn_norm))?,
                ffn_sub_norm: exec.upload(f32_bytes(&layer.ffn_sub_norm))?,
                proj,
            });
        }
        let output_norm = exec.upload(f32_bytes(&model.output_norm))?;
        let cap = 64;
        let row = c.n_head_kv * c.head_dim * 4;
        let mut cache = Vec::with_capacity(c.n_layer);
        for _ in 0..c.n_layer {
            cache.push(DevCache {
                k: exec.alloc(cap * row)?,
                v: exec.alloc(cap * row)?,
                len: 0,
            });
        }
        Ok(CudaSession {
            model,
            exec,
            info,
            emb: emb_buf,
            emb_f16,
            output_norm,
            layers,
            cache,
            cap,
            n_past: 0,
            calls: 0,
            kernels: KernelLog::default(),
        })
    }

    /// The device the session runs on.
    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    /// Positions already in the KV cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Kernel IDs (`*_cuda`) that executed so far.
    pub fn kernels_used(&self) -> Vec<String> {
        self.kernels.ids()
    }

    // ---- The forward pass --------------------------------------------------------------------

    /// Run `tokens` at the next positions; returns logits (`n_out × n_vocab`) for every position
    /// (`all_logits`) or the last. With a tracer, the values of the points it selects are copied
    /// back and recorded as one step.
    pub fn forward(
        &mut self,
        tokens: &[u32],
        all_logits: bool,
        mut tracer: Option<&mut Tracer>,
    ) -> Result<Vec<f32>, CudaError> {
        let c = self.model.config.clone();
        let n = tokens.len();
        if n == 0 {
            return Err(CudaError::Input("no tokens to run".into()));
        }
        let p0 = self.n_past;
        let positions = [p0 as u32, (p0 + n) as u32];
        if let Some(t) = tracer.as_deref_mut() {
            t.set_step(self.calls);
        }
        let (e, hd, nh, nkv, nff) = (c.n_embd, c.head_dim, c.n_head, c.n_head_kv, c.n_ff);
        let at = |layer: usize, stage: Stage| TracePoint {
            layer: Some(layer as u32),
            stage,
        };
        let global = |stage: Stage| TracePoint { layer: None, stage };

        let x = self.d_embed(tokens)?;
        self.rec(
            &mut tracer,
            positions,
            global(Stage::Embeddings),
            vec![n, e],
            &x,
        )?;
        for l in 0..c.n_layer {
            let h = self.d_norm(&x, n, e, &self.layers[l].attn_norm)?;
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::AttnNorm),
                vec![n, e],
                &h,
            )?;
            let [q, k, v] = self.d_qkv(l, &h, n, p0)?;
            self.rec(&mut tracer, positions, at(l, Stage::Q), vec![n, nh, hd], &q)?;
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::K),
                vec![n, nkv, hd],
                &k,
            )?;
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::V),
                vec![n, nkv, hd],
                &v,
            )?;
            let (att, probs) = self.d_attention(l, &q, &k, &v, n)?;
            let shape = vec![n, nh, p0 + n];
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::AttnProbs),
                shape,
                &probs,
            )?;
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::KqvOut),
                vec![n, e],
                &att,
            )?;
            let h = self.d_norm(&att, n, e, &self.layers[l].attn_sub_norm)?;
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::AttnSubNorm),
                vec![n, e],
                &h,
            )?;
            let o = self.d_project_many(l, &[Proj::O], &h, n)?.remove(0);
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::AttnOut),
                vec![n, e],
                &o,
            )?;
            self.add(&x, &o, n * e)?;
            self.rec(&mut tracer, positions, at(l, Stage::FfnInp), vec![n, e], &x)?;
            let h = self.d_norm(&x, n, e, &self.layers[l].ffn_norm)?;
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::FfnNorm),
                vec![n, e],
                &h,
            )?;
            let act = self.d_ffn_act(l, &h, n)?;
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::FfnAct),
                vec![n, nff],
                &act,
            )?;
            let act_n = self.d_norm(&act, n, nff, &self.layers[l].ffn_sub_norm)?;
            let shape = vec![n, nff];
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::FfnSubNorm),
                shape,
                &act_n,
            )?;
            let d = self.d_project_many(l, &[Proj::Down], &act_n, n)?.remove(0);
            self.rec(
                &mut tracer,
                positions,
                at(l, Stage::FfnDown),
                vec![n, e],
                &d,
            )?;
            self.add(&x, &d, n * e)?;
            self.rec(&mut tracer, positions, at(l, Stage::Out), vec![n, e], &x)?;
        }
        let h = self.d_norm(&x, n, e, &self.output_norm)?;
        self.rec(
            &mut tracer,
            positions,
            global(Stage::OutputNorm),
            vec![n, e],
            &h,
        )?;
        let (logits, rows) = self.d_logits(&h, n, all_logits)?;
        let out = self.exec.read_f32(&logits, 0, rows * c.n_vocab)?;
        if all_logits {
            if let Some(t) = tracer {
                t.record(global(Stage::Logits), positions, vec![n, c.n_vocab], &out);
            }
        }
        self.n_past += n;
        self.calls += 1;
        Ok(out)
    }

    /// Record `buf` as `point` when the tracer wants it (only then is it copied back).
    fn rec(
        &self,
        tracer: &mut Option<&mut Tracer>,
        positions: [u32; 2],
        point: TracePoint,
        shape: Vec<usize>,
        buf: &Buf,
    ) -> Result<(), CudaError> {
        if let Some(t) = tracer.as_deref_mut() {
            if t.wants(&point) {
                let v = self.exec.read_f32(buf, 0, shape.iter().product())?;
                t.record(point, positions, shape, &v);
            }
        }
        Ok(())
    }
}

/// [`crate::forward::run_with`] on the CUDA backend: prefill `tokens` (in chunks of
/// `opts.chunk`), then `opts.generate` greedy tokens; trace steps as the CPU engine numbers them.
/// `opts.kernel`, `threads`, `nudge_embeddings` and `unpack_tq1` concern the CPU and are ignored.
pub fn run_with(
    model: &Model,
    tokens: &[u32],
    opts: &RunOptions,
    target: &Target,
    mut tracer: Option<&mut Tracer>,
) -> Result<RunOutput, String> {
    if tokens.is_empty() {
        return Err("no input tokens".into());
    }
    if opts.kv_type != crate::attention::KvType::F32 {
        return Err(format!(
            "the CUDA backend keeps an F32 KV cache; this run asks for {} (run it on the CPU)",
            opts.kv_type.label()
        ));
    }
    let mut s = CudaSession::new(model, target).map_err(|e| e.to_string())?;
    let chunk = opts.chunk.unwrap_or(tokens.len()).max(1);
    let n_vocab = model.config.n_vocab;
    let mut logits = Vec::with_capacity(tokens.len() * n_vocab);
    let t0 = std::time::Instant::now();
    let chunked = chunk < tokens.len();
    if chunked {
        if let Some(t) = tracer.as_deref_mut() {
            t.hold();
        }
    }
    for part in tokens.chunks(chunk) {
        // Chunks of one prefill are one trace step.
        let calls = s.calls;
        logits.extend(
            s.forward(part, true, tracer.as_deref_mut())
                .map_err(|e| e.to_string())?,
        );
        s.calls = calls;
    }
    if let Some(t) = tracer.as_deref_mut() {
        t.release();
    }
    s.calls = 1;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut generated = Vec::new();
    if opts.generate > 0 {
        generated.push(argmax(&logits[(tokens.len() - 1) * n_vocab..]));
        for _ in 1..opts.generate {
            let last = *generated.last().expect("one token");
            let next = s
                .forward(&[last], true, tracer.as_deref_mut())
                .map_err(|e| e.to_string())?;
            generated.push(argmax(&next));
        }
    }
    Ok(RunOutput {
        logits,
        generated,
        kernels: s.kernels_used(),
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
        decode_calls: opts.generate.saturating_sub(1),
    })
}
