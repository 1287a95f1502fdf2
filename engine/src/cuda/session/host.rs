//! The session's stages on host values, as `forward::Session` has them: each uploads its
//! inputs, runs the stage's kernels and reads the result back (what the stage-by-stage checks
//! and the integer-part check compare with the CPU engine).

use super::*;

impl<'m> CudaSession<'m> {
    fn up(&self, x: &[f32]) -> Result<Buf, CudaError> {
        self.exec.upload(f32_bytes(x))
    }

    fn down(&self, b: &Buf, n: usize) -> Result<Vec<f32>, CudaError> {
        self.exec.read_f32(b, 0, n)
    }

    /// Token embeddings (`n × n_embd`).
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, CudaError> {
        let x = self.d_embed(tokens)?;
        self.down(&x, tokens.len() * self.model.config.n_embd)
    }

    /// RMSNorm of every row of `x` times `w` (rows of `w.len()`).
    pub fn norm(&self, x: &[f32], w: &[f32]) -> Result<Vec<f32>, CudaError> {
        let rows = x.len() / w.len().max(1);
        let out = self.d_norm(&self.up(x)?, rows, w.len(), &self.up(w)?)?;
        self.down(&out, x.len())
    }

    /// Projection `which` of layer `l` of `n` rows of `x` (times its `.scale`).
    pub fn project(
        &self,
        l: usize,
        which: Proj,
        x: &[f32],
        n: usize,
    ) -> Result<Vec<f32>, CudaError> {
        let out = self.d_project_many(l, &[which], &self.up(x)?, n)?.remove(0);
        self.down(&out, n * self.layers[l].proj[which as usize].rows)
    }

    /// Q, K, V of `n` tokens at positions `p0..` with RoPE on Q and K.
    pub fn qkv(
        &self,
        l: usize,
        h: &[f32],
        n: usize,
        p0: usize,
    ) -> Result<[Vec<f32>; 3], CudaError> {
        let [q, k, v] = self.d_qkv(l, &self.up(h)?, n, p0)?;
        let p = &self.layers[l].proj;
        Ok([
            self.down(&q, n * p[0].rows)?,
            self.down(&k, n * p[1].rows)?,
            self.down(&v, n * p[2].rows)?,
        ])
    }

    /// Attention of `n` new tokens after layer `l`'s cached positions (appended to the cache):
    /// the output (`n × n_embd`) and the probabilities (`n × n_head × n_kv`).
    pub fn attention(
        &mut self,
        l: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), CudaError> {
        let (q, k, v) = (self.up(q)?, self.up(k)?, self.up(v)?);
        let (att, probs) = self.d_attention(l, &q, &k, &v, n)?;
        let c = &self.model.config;
        let n_kv = self.cache[l].len;
        Ok((
            self.down(&att, n * c.n_head * c.head_dim)?,
            self.down(&probs, n * c.n_head * n_kv)?,
        ))
    }

    /// The FFN activation of `h` (`n × n_ff`).
    pub fn ffn_act(&self, l: usize, h: &[f32], n: usize) -> Result<Vec<f32>, CudaError> {
        let act = self.d_ffn_act(l, &self.up(h)?, n)?;
        self.down(&act, n * self.model.config.n_ff)
    }

    /// Logits through the tied embedding: every row of `h` or the last.
    pub fn logits(&self, h: &[f32], n: usize, all: bool) -> Result<Vec<f32>, CudaError> {
        let (l, rows) = self.d_logits(&self.up(h)?, n, all)?;
        self.down(&l, rows * self.model.config.n_vocab)
    }

    /// The integer parts of layer `l`'s products with the model-width input `h` (`n` tokens),
    /// computed by the device against the scalar specification on this CPU, exactly: the Q8_K
    /// blocks and the ternary products' integer lanes, or the I8_S activations and the I2_S
    /// products' `Σ code·q`. Returns what was compared; `Err` names the first difference.
    pub fn check_integer_parts(&self, l: usize, h: &[f32], n: usize) -> Result<String, String> {
        let e = self.model.config.n_embd;
        assert_eq!(h.len(), n * e, "n tokens of n_embd");
        let err = |e: CudaError| e.to_string();
        let x = self.up(h).map_err(err)?;
        let mut notes = Vec::new();
        for which in [Proj::Q, Proj::K, Proj::V, Proj::Gate, Proj::Up] {
            let w = &self.layers[l].proj[which as usize];
            let host_w = self
                .model
                .matrix(self.model.layers[l].projections()[which as usize]);
            match w.ty {
                GgmlType::TQ1_0 | GgmlType::TQ2_0 => {
                    let nb = e / QK_K;
                    let Prepared::Q8k(blocks) = self.prepare(w.ty, &x, n, e).map_err(err)? else {
                        unreachable!("ternary weights take Q8_K activations")
                    };
                    let mut got = vec![BlockQ8K::default(); n * nb];
                    // SAFETY: BlockQ8K is plain data (f32, i8, i16), any bits valid.
                    let bytes = unsafe {
                        std::slice::from_raw_parts_mut(
                            got.as_mut_ptr() as *mut u8,
                            std::mem::size_of_val(got.as_slice()),
                        )
                    };
                    self.exec.read(&blocks, 0, bytes).map_err(err)?;
                    let mut want = Vec::new();
                    let mut tmp = Vec::new();
                    for t in 0..n {
                        scalar::quantize_q8k(&h[t * e..(t + 1) * e], &mut tmp);
                        want.extend_from_slice(&tmp);
                    }
                    if let Some(i) = (0..want.len()).find(|&i| want[i] != got[i]) {
                        return Err(format!(
                            "layer {l} {which:?}: Q8_K block {i} (token {}) differs from the specification's",
                            i / nb
                        ));
                    }
                    let lanes = self.exec.alloc(n * w.rows * nb * 8 * 4).map_err(err)?;
                    let tq1 = w.ty == GgmlType::TQ1_0;
                    self.launch(
                        "ternary_lanes_i32_cuda",
                        Kern::TqLanes,
                        (n * w.rows * nb) as u64,
                        &[
                            w.data.p(),
                            blocks.p(),
                            Arg::U(w.rows as u64),
                            Arg::U(nb as u64),
                            Arg::I(tq1 as i32),
                            lanes.p(),
                        ],
                    )
                    .map_err(err)?;
                    let mut got_lanes = vec![0i32; n * w.rows * nb * 8];
                    // SAFETY: i32 has no invalid bit patterns.
                    let lb = unsafe {
                        std::slice::from_raw_parts_mut(
                            got_lanes.as_mut_ptr() as *mut u8,
                            got_lanes.len() * 4,
                        )
                    };
                    self.exec.read(&lanes, 0, lb).map_err(err)?;
                    let want_lanes = spec_lanes(host_w.data, w.rows, &want, nb, tq1);
                    if let Some(i) = (0..want_lanes.len()).find(|&i| want_lanes[i] != got_lanes[i])
                    {
                        return Err(format!(
                            "layer {l} {which:?}: integer lane {} of block {} of row {} (token {}) is {}, the specification's {}",
                            i % 8,
                            (i / 8) % nb,
                            (i / 8 / nb) % w.rows,
                            i / 8 / nb / w.rows,
                            got_lanes[i],
                            want_lanes[i]
                        ));
                    }
                    notes.push(format!(
                        "{which:?}: {} Q8_K blocks, {} integer lanes equal",
                        want.len(),
                        want_lanes.len()
                    ));
                }
                GgmlType::I2_S => {
                    let Prepared::I8s { q, scales, sums } =
                        self.prepare(w.ty, &x, n, e).map_err(err)?
                    else {
                        unreachable!("I2_S weights take I8_S activations")
                    };
                    let mut got_q = vec![0u8; n * e];
                    self.exec.read(&q, 0, &mut got_q).map_err(err)?;
                    let got_s = self.exec.read_f32(&scales, 0, n).map_err(err)?;
                    let mut sb = vec![0u8; n * 4];
                    self.exec.read(&sums, 0, &mut sb).map_err(err)?;
                    let out = self.f32s(n * w.rows).map_err(err)?;
                    let dots = self.exec.alloc(n * w.rows * 4).map_err(err)?;
                    self.launch(
                        "i2_s_i8_dot_cuda",
                        Kern::I2sMatmul,
                        (n * w.rows) as u64,
                        &[
                            w.data.p(),
                            q.p(),
                            scales.p(),
                            sums.p(),
                            Arg::U(w.rows as u64),
                            Arg::U(e as u64),
                            Arg::F(w.w_scale),
                            out.p(),
                            dots.p(),
                        ],
                    )
                    .map_err(err)?;
                    let mut db = vec![0u8; n * w.rows * 4];
                    self.exec.read(&dots, 0, &mut db).map_err(err)?;
                    for t in 0..n {
                        let mut wq = vec![0i8; e];
                        let (ws, wsum) = scalar::quantize_i8s(&h[t * e..(t + 1) * e], &mut wq);
                        let gq = &got_q[t * e..(t + 1) * e];
                        let gsum = i32::from_le_bytes(sb[t * 4..t * 4 + 4].try_into().unwrap());
                        if wq.iter().zip(gq).any(|(a, &b)| *a as u8 != b)
                            || ws.to_bits() != got_s[t].to_bits()
                            || wsum != gsum
                        {
                            return Err(format!(
                                "layer {l} {which:?}: token {t}'s I8_S activations differ from the specification's"
                            ));
                        }
                        let rb = e / 4;
                        for r in 0..w.rows {
                            let want =
                                scalar::i2_s_i8_dot_scalar(&host_w.data[r * rb..(r + 1) * rb], &wq);
                            let i = (t * w.rows + r) * 4;
                            let got = i32::from_le_bytes(db[i..i + 4].try_into().unwrap());
                            if got != want {
                                return Err(format!(
                                    "layer {l} {which:?}: Σ code·q of row {r}, token {t} is {got}, the specification's {want}"
                                ));
                            }
                        }
                    }
                    notes.push(format!(
                        "{which:?}: I8_S activations of {n} tokens and {} integer dots equal",
                        n * w.rows
                    ));
                }
                _ => notes.push(format!("{which:?}: {} weights, no integer part", w.ty)),
            }
        }
        Ok(format!("layer {l}: {}", notes.join("; ")))
    }
}

/// The specification's integer lanes of a ternary matrix against Q8_K blocks (scalar.rs's
/// `ternary_dot` before its float finish), in [`crate::kernels::cuda::host::tq_lanes`]'s order.
fn spec_lanes(w: &[u8], rows: usize, a: &[BlockQ8K], nb: usize, tq1: bool) -> Vec<i32> {
    let bs = if tq1 {
        scalar::TQ1_0_BYTES
    } else {
        scalar::TQ2_0_BYTES
    };
    let code = if tq1 {
        scalar::tq1_0_code
    } else {
        scalar::tq2_0_code
    };
    let n_tok = a.len() / nb;
    let mut out = Vec::with_capacity(n_tok * rows * nb * 8);
    for t in 0..n_tok {
        for r in 0..rows {
            for b in 0..nb {
                let x = &w[(r * nb + b) * bs..(r * nb + b + 1) * bs];
                let y = &a[t * nb + b];
                let mut lanes = [0i32; 8];
                for e in 0..QK_K {
                    lanes[(e % 32) / 4] += code(x, e) as i32 * y.qs[e] as i32;
                }
                for (k, lane) in lanes.iter_mut().enumerate() {
                    *lane -= y.bsums[2 * k] as i32 + y.bsums[2 * k + 1] as i32;
                }
                out.extend_from_slice(&lanes);
            }
        }
    }
    out
}
