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

    /// Launch `k`, recording kernel `id`.
    fn launch(&self, id: &str, k: Kern, n: u64, args: &[Arg]) -> Result<(), CudaError> {
        self.kernels.record(id);
        // SAFETY: every caller passes buffers sized for the launch it describes (each site
        // allocates its outputs from the same shape it launches with).
        unsafe { self.exec.launch(k, n, args) }
    }

    fn f32s(&self, n: usize) -> Result<Buf, CudaError> {
        self.exec.alloc(n * 4)
    }

    // ---- Device-side stages ----------------------------------------------------------------

    fn d_embed(&self, tokens: &[u32]) -> Result<Buf, CudaError> {
        let c = &self.model.config;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(CudaError::Input(format!(
                "token id {bad} is outside the vocabulary (n_vocab {})",
                c.n_vocab
            )));
        }
        let tok = self.exec.upload(bytes_of(tokens))?;
        let x = self.f32s(tokens.len() * c.n_embd)?;
        self.launch(
            "embed_get_rows_cuda",
            Kern::Embed,
            (tokens.len() * c.n_embd) as u64,
            &[
                tok.p(),
                self.emb.p(),
                Arg::U(c.n_embd as u64),
                Arg::I(self.emb_f16 as i32),
                x.p(),
            ],
        )?;
        Ok(x)
    }

    /// RMSNorm of `rows` rows of `width` times `w`.
    fn d_norm(&self, x: &Buf, rows: usize, width: usize, w: &Buf) -> Result<Buf, CudaError> {
        let scale = self.f32s(rows)?;
        let out = self.f32s(rows * width)?;
        let eps = self.model.config.rms_eps;
        self.launch(
            "rms_norm_f32_cuda",
            Kern::RmsScale,
            rows as u64,
            &[x.p(), Arg::U(width as u64), Arg::F(eps), scale.p()],
        )?;
        self.launch(
            "rms_norm_f32_cuda",
            Kern::RmsApply,
            (rows * width) as u64,
            &[x.p(), w.p(), Arg::U(width as u64), scale.p(), out.p()],
        )?;
        Ok(out)
    }

    /// `x` (`n` tokens of `cols`) prepared for weights of type `ty`.
    fn prepare(&self, ty: GgmlType, x: &Buf, n: usize, cols: usize) -> Result<Prepared, CudaError> {
        Ok(match ty {
            GgmlType::TQ1_0 | GgmlType::TQ2_0 => {
                let nb = n * cols / QK_K;
                let blocks = self.exec.alloc(nb * std::mem::size_of::<BlockQ8K>())?;
                self.launch(
                    "q8k_quantize_cuda",
                    Kern::Q8kQuantize,
                    nb as u64,
                    &[x.p(), blocks.p()],
                )?;
                Prepared::Q8k(blocks)
            }
            GgmlType::I2_S => {
                let q = self.exec.alloc(n * cols)?;
                let scales = self.f32s(n)?;
                let sums = self.exec.alloc(n * 4)?;
                self.launch(
                    "i8_s_quantize_cuda",
                    Kern::I8sQuantize,
                    n as u64,
                    &[x.p(), Arg::U(cols as u64), q.p(), scales.p(), sums.p()],
                )?;
                Prepared::I8s { q, scales, sums }
            }
            GgmlType::F16 => {
                let r = self.f32s(n * cols)?;
                self.launch(
                    "f32_f16_round_cuda",
                    Kern::RoundF16,
                    (n * cols) as u64,
                    &[x.p(), r.p()],
                )?;
                Prepared::Float(Some(r))
            }
            _ => Prepared::Float(None),
        })
    }

    /// The product of `w` with prepared activations of `n` tokens (`x` the unprepared input).
    fn product(&self, w: &DevProj, p: &Prepared, x: &Buf, n: usize) -> Result<Buf, CudaError> {
        let out = self.f32s(n * w.rows)?;
        let items = (n * w.rows) as u64;
        let (rows, cols) = (Arg::U(w.rows as u64), Arg::U(w.cols as u64));
        match (w.ty, p) {
            (GgmlType::TQ1_0 | GgmlType::TQ2_0, Prepared::Q8k(blocks)) => {
                let tq1 = w.ty == GgmlType::TQ1_0;
                self.launch(
                    if tq1 {
                        "tq1_0_q8k_dot_cuda"
                    } else {
                        "tq2_0_q8k_dot_cuda"
                    },
                    Kern::TqMatmul,
                    items,
                    &[
                        w.data.p(),
                        blocks.p(),
                        rows,
                        Arg::U((w.cols / QK_K) as u64),
                        Arg::I(tq1 as i32),
                        out.p(),
                    ],
                )?;
            }
            (GgmlType::I2_S, Prepared::I8s { q, scales, sums }) => self.launch(
                "i2_s_i8_dot_cuda",
                Kern::I2sMatmul,
                items,
                &[
                    w.data.p(),
                    q.p(),
                    scales.p(),
                    sums.p(),
                    rows,
                    cols,
                    Arg::F(w.w_scale),
                    out.p(),
                    Arg::P(0),
                ],
            )?,
            (GgmlType::F16 | GgmlType::F32, Prepared::Float(r)) => {
                let f16 = w.ty == GgmlType::F16;
                let a = r.as_ref().unwrap_or(x);
                self.launch(
                    if f16 {
                        "f16_f16_dot_cuda"
                    } else {
                        "f32_f32_dot_cuda"
                    },
                    Kern::FloatMatmul,
                    items,
                    &[
                        w.data.p(),
                        a.p(),
                        rows,
                        cols,
                        Arg::I(f16 as i32),
                        Arg::I(scalar::tiny_blas_order(w.rows, n) as i32),
                        out.p(),
                    ],
                )?
            }
            (ty, _) => unreachable!("activations prepared for another type than {ty}"),
        }
        if let Some(s) = w.scale {
            self.launch("scale_f32_cuda", Kern::Scale, items, &[out.p(), Arg::F(s)])?;
        }
        Ok(out)
    }

    /// Several projections of layer `l` from the same input: the activations are prepared once
    /// per run of projections sharing a type and width, as the CPU engine quantizes them.
    fn d_project_many(
        &self,
        l: usize,
        which: &[Proj],
        x: &Buf,
        n: usize,
    ) -> Result<Vec<Buf>, CudaError> {
        let mut outs = Vec::with_capacity(which.len());
        let mut prepared: Option<(GgmlType, usize, Prepared)> = None;
        for &p in which {
            let w = &self.layers[l].proj[p as usize];
            if !matches!(&prepared, Some((ty, cols, _)) if *ty == w.ty && *cols == w.cols) {
                prepared = Some((w.ty, w.cols, self.prepare(w.ty, x, n, w.cols)?));
            }
            let (_, _, pr) = prepared.as_ref().expect("prepared above");
            outs.push(self.product(w, pr, x, n)?);
        }
        Ok(outs)
    }

    /// Q, K, V of `n` tokens at positions `p0..`, RoPE applied to Q and K.
    fn d_qkv(&self, l: usize, h: &Buf, n: usize, p0: usize) -> Result<[Buf; 3], CudaError> {
        let c = &self.model.config;
        let mut out = self.d_project_many(l, &[Proj::Q, Proj::K, Proj::V], h, n)?;
        let v = out.pop().expect("three");
        let k = out.pop().expect("three");
        let q = out.pop().expect("three");
        // The angle table as `forward::rope_neox_with` computes it, on the host, per position.
        let half = c.n_rot / 2;
        let theta_scale = c.rope_base.powf(-2.0 / c.n_rot as f32);
        let mut cs = Vec::with_capacity(n * half * 2);
        for i in 0..n {
            let mut theta = (p0 + i) as f32;
            for _ in 0..half {
                cs.push(theta.cos());
                cs.push(theta.sin());
                theta *= theta_scale;
            }
        }
        if half > 0 {
            let cs = self.exec.upload(f32_bytes(&cs))?;
            for (x, heads) in [(&q, c.n_head), (&k, c.n_head_kv)] {
                self.launch(
                    "rope_neox_f32_cuda",
                    Kern::RopeNeox,
                    (n * heads * half) as u64,
                    &[
                        x.p(),
                        Arg::U(heads as u64),
                        Arg::U(c.head_dim as u64),
                        Arg::U(half as u64),
                        cs.p(),
                    ],
                )?;
            }
        }
        Ok([q, k, v])
    }

    /// Room in every layer's cache for `need` positions (doubling; what is cached is copied).
    fn reserve(&mut self, need: usize) -> Result<(), CudaError> {
        if need <= self.cap {
            return Ok(());
        }
        let c = &self.model.config;
        let row = c.n_head_kv * c.head_dim * 4;
        let cap = need.max(2 * self.cap).div_ceil(64) * 64;
        for dc in &mut self.cache {
            let (k, v) = (self.exec.alloc(cap * row)?, self.exec.alloc(cap * row)?);
            self.exec.copy(&k, 0, &dc.k, 0, dc.len * row)?;
            self.exec.copy(&v, 0, &dc.v, 0, dc.len * row)?;
            dc.k = k;
            dc.v = v;
        }
        self.cap = cap;
        Ok(())
    }

    /// Attention of `n` new tokens in layer `l`: appends their keys and values to the layer's
    /// cache; returns the output (`n × n_embd`) and the probabilities (`n × n_head × n_kv`).
    fn d_attention(
        &mut self,
        l: usize,
        q: &Buf,
        k: &Buf,
        v: &Buf,
        n: usize,
    ) -> Result<(Buf, Buf), CudaError> {
        let c = &self.model.config;
        let (nh, nkv, hd) = (c.n_head, c.n_head_kv, c.head_dim);
        let p0 = self.cache[l].len;
        self.reserve(p0 + n)?;
        let row = nkv * hd * 4;
        let dc = &self.cache[l];
        self.exec.copy(&dc.k, p0 * row, k, 0, n * row)?;
        self.exec.copy(&dc.v, p0 * row, v, 0, n * row)?;
        let n_kv = p0 + n;
        let probs = self.f32s(n * nh * n_kv)?;
        let att = self.f32s(n * nh * hd)?;
        let order = AttnOrder::for_pass(n, nh, hd);
        let scale = 1.0f32 / (hd as f32).sqrt();
        let u = |v: usize| Arg::U(v as u64);
        self.launch(
            "attn_scores_f32_cuda",
            Kern::AttnScores,
            (n * nh * n_kv) as u64,
            &[
                q.p(),
                dc.k.p(),
                probs.p(),
                u(p0),
                u(nh),
                u(nkv),
                u(hd),
                u(n_kv),
                Arg::F(scale),
                Arg::I(order.kq_lanes8 as i32),
            ],
        )?;
        self.launch(
            "attn_softmax_f32_cuda",
            Kern::AttnSoftmax,
            (n * nh) as u64,
            &[probs.p(), u(p0), u(nh), u(n_kv)],
        )?;
        self.launch(
            "attn_kqv_f32_cuda",
            Kern::AttnKqv,
            (n * nh * hd) as u64,
            &[
                probs.p(),
                dc.v.p(),
                att.p(),
                u(p0),
                u(nh),
                u(nkv),
                u(hd),
                u(n_kv),
                Arg::I(order.kqv_lanes8 as i32),
            ],
        )?;
        self.cache[l].len = n_kv;
        Ok((att, probs))
    }

    /// The FFN activation of `n` tokens: `silu(gate)·up`, or `relu(gate)²·up` for `bitnet-b1.58`.
    fn d_ffn_act(&self, l: usize, h: &Buf, n: usize) -> Result<Buf, CudaError> {
        let n_ff = self.model.config.n_ff;
        let gu = self.d_project_many(l, &[Proj::Gate, Proj::Up], h, n)?;
        let act = self.f32s(n * n_ff)?;
        let items = (n * n_ff) as u64;
        match self.model.config.arch.ffn() {
            FfnAct::Silu => self.launch(
                "swiglu_f32_cuda",
                Kern::Swiglu,
                items,
                &[gu[0].p(), gu[1].p(), Arg::U(n_ff as u64), act.p()],
            )?,
            FfnAct::Relu2 => self.launch(
                "relu2_mul_f32_cuda",
                Kern::Relu2Mul,
                items,
                &[gu[0].p(), gu[1].p(), act.p()],
            )?,
        }
        Ok(act)
    }

    /// Logits through the tied embedding of every row of `h` (`all`) or the last.
    fn d_logits(&self, h: &Buf, n: usize, all: bool) -> Result<(Buf, usize), CudaError> {
        let c = &self.model.config;
        let e = c.n_embd;
        let (rows, start) = if all { (n, 0) } else { (1, n - 1) };
        // F16 weights take F16-rounded activations (kept alive until the product is queued).
        let rounded = if self.emb_f16 {
            let r = self.f32s(rows * e)?;
            self.launch(
                "f32_f16_round_cuda",
                Kern::RoundF16,
                (rows * e) as u64,
                &[h.at(start * e * 4), r.p()],
            )?;
            Some(r)
        } else {
            None
        };
        let a = rounded.as_ref().map_or(h.at(start * e * 4), |r| r.p());
        let logits = self.f32s(rows * c.n_vocab)?;
        self.launch(
            if self.emb_f16 {
                "f16_f16_dot_cuda"
            } else {
                "f32_f32_dot_cuda"
            },
            Kern::FloatMatmul,
            (rows * c.n_vocab) as u64,
            &[
                self.emb.p(),
                a,
                Arg::U(c.n_vocab as u64),
                Arg::U(e as u64),
                Arg::I(self.emb_f16 as i32),
                Arg::I(scalar::tiny_blas_order(c.n_vocab, rows) as i32),
                logits.p(),
            ],
        )?;
        Ok((logits, rows))
    }

    fn add(&self, x: &Buf, y: &Buf, n: usize) -> Result<(), CudaError> {
        self.launch("add_f32_cuda", Kern::Add, n as u64, &[x.p(), y.p()])
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
