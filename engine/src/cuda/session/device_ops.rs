//! The session's device operations: each stage's launches on device buffers (embedding, RMSNorm,
//! activation preparation, the products, attention with its cache, the FFN activation, logits),
//! which [`CudaSession::forward`] chains and the host-value stages of `host.rs` wrap.

use super::*;

impl<'m> CudaSession<'m> {
    /// Launch `k`, recording kernel `id`.
    pub(super) fn launch(&self, id: &str, k: Kern, n: u64, args: &[Arg]) -> Result<(), CudaError> {
        self.kernels.record(id);
        // SAFETY: every caller passes buffers sized for the launch it describes (each site
        // allocates its outputs from the same shape it launches with).
        unsafe { self.exec.launch(k, n, args) }
    }

    pub(super) fn f32s(&self, n: usize) -> Result<Buf, CudaError> {
        self.exec.alloc(n * 4)
    }

    // ---- Device-side stages ----------------------------------------------------------------

    pub(super) fn d_embed(&self, tokens: &[u32]) -> Result<Buf, CudaError> {
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
    pub(super) fn d_norm(
        &self,
        x: &Buf,
        rows: usize,
        width: usize,
        w: &Buf,
    ) -> Result<Buf, CudaError> {
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
    pub(super) fn prepare(
        &self,
        ty: GgmlType,
        x: &Buf,
        n: usize,
        cols: usize,
    ) -> Result<Prepared, CudaError> {
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
    pub(super) fn product(
        &self,
        w: &DevProj,
        p: &Prepared,
        x: &Buf,
        n: usize,
    ) -> Result<Buf, CudaError> {
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
    pub(super) fn d_project_many(
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
    pub(super) fn d_qkv(
        &self,
        l: usize,
        h: &Buf,
        n: usize,
        p0: usize,
    ) -> Result<[Buf; 3], CudaError> {
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
    pub(super) fn reserve(&mut self, need: usize) -> Result<(), CudaError> {
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
    pub(super) fn d_attention(
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
    pub(super) fn d_ffn_act(&self, l: usize, h: &Buf, n: usize) -> Result<Buf, CudaError> {
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
    pub(super) fn d_logits(&self, h: &Buf, n: usize, all: bool) -> Result<(Buf, usize), CudaError> {
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

    pub(super) fn add(&self, x: &Buf, y: &Buf, n: usize) -> Result<(), CudaError> {
        self.launch("add_f32_cuda", Kern::Add, n as u64, &[x.p(), y.p()])
    }
}
