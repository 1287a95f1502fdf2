//! The fast forward pass: what llama.cpp's `bitnet` graph computes, step by step, with a KV
//! cache, greedy generation and optional trace capture at every canonical point.
//!
//! Per layer (llama.cpp `src/models/bitnet.cpp`): RMSNorm·attn_norm → Q,K,V (ternary × int8
//! activations, times the optional `.scale`) → NEOX RoPE on Q and K → causal attention with GQA,
//! scale 1/sqrt(head_dim) → RMSNorm·attn_sub_norm → output projection → residual; RMSNorm·ffn_norm
//! → SiLU(gate)·up → RMSNorm·ffn_sub_norm → down → residual. Then RMSNorm·output_norm and the
//! logits through the tied token embedding.
//!
//! Reduction orders (documented so every kernel variant can match them bit for bit):
//! - RMSNorm: Σx² in f64 in index order; `scale = 1/sqrtf((float)(Σ/n) + eps)` in f32; `y = x·scale`
//!   then `y·w` in f32 (`ggml_compute_forward_rms_norm_f32`, then `ggml_mul`);
//! - attention (scores, softmax, weighted sum of V) and SiLU·up: see [`crate::attention`] and
//!   [`crate::ggml_math`];
//! - matrix products: see [`crate::kernels`].

use std::path::Path;

use crate::attention::{attend, AttnOrder, KvType, LayerCache};
use crate::gguf::GgmlType;
use crate::kernels::plan::KernelPlan;
use crate::kernels::rows_out::SharedOut;
use crate::kernels::{
    matmul_prepared, matmul_prepared_many, prepare, Kernel, KernelLog, Matrix, PreparedInput,
};
use crate::model::{FfnAct, Layer, Model, Proj};
use crate::quant::f16_to_f32;
use crate::trace::{PointFilter, Stage, TracePoint, TraceRecord, TraceWriter};

mod generate;
mod other_work;
mod scratch;
mod tracer;
pub use generate::{generate_last_only, run, run_with, RunOptions, RunOutput};
pub use other_work::DecodeOther;
pub use tracer::Tracer;

/// A running inference: the model, its KV cache and settings.
pub struct Session<'m> {
    model: &'m Model,
    pub threads: usize,
    /// The variant of everything but the products (norms, RoPE, attention, activations).
    pub kernel: Kernel,
    /// The variant of each kind of product (by default `kernel` for all).
    pub plan: KernelPlan,
    kernels: KernelLog,
    /// The attention's prefetch distances (bytes) so far.
    attention_distances: std::collections::BTreeSet<usize>,
    /// Per layer.
    cache: Vec<LayerCache>,
    /// The KV cache's element type (see [`Session::set_kv_type`]).
    kv_type: KvType,
    /// Positions each layer's KV cache holds storage for ahead of use ([`Session::reserve`]).
    reserved: usize,
    n_past: usize,
    /// Decode calls so far (0 = nothing run; the first call is step 0).
    calls: u32,
    /// Nudge every input embedding value up by one f32 ulp (a perturbation that should not
    /// matter: used by stability tests and calibration).
    pub nudge_embeddings: bool,
    /// Run TQ1_0 products on the weights rewritten as TQ2_0 ([`Model::tq1_as_tq2`]: the same
    /// results bit for bit, several times faster to unpack). On by default for the x86 SIMD
    /// variants; `BITNET_TQ1_UNPACK=0` keeps the base-3 kernels.
    pub unpack_tq1: bool,
    /// Activation buffers handed back after use, for the next layer or call.
    scratch: scratch::Scratch,
}

/// Whether a session with `kernel` rewrites TQ1_0 weights as TQ2_0 (see `Session::unpack_tq1`).
pub fn unpack_tq1_for(kernel: Kernel) -> bool {
    matches!(kernel, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512)
        && std::env::var("BITNET_TQ1_UNPACK").map_or(true, |v| v.trim() != "0")
}

/// RMSNorm of each row of `x` (rows of `w.len()`), times `w`, as ggml computes `mul(rms_norm(x), w)`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_with(Kernel::Scalar, x, w, eps, out)
}

/// [`rms_norm`] with its sum of squares by `kernel`: the x86 SIMD variants add it thirty-two terms at
/// a time where that gives the same bits ([`crate::kernels::x86_norm`]), the others one at a time
/// as ggml does.
pub fn rms_norm_with(kernel: Kernel, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    #[cfg(target_arch = "x86_64")]
    let blocks = matches!(kernel, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512)
        && std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let _ = kernel;
    // The norm's weights are read once a decode step, after every matrix has passed through the
    // caches: cold, and too short a run for the hardware prefetcher. Asked for before the sum of
    // squares, they arrive while it runs. Measured in a 700M-shaped decode at one thread (AMD EPYC
    // family 25 model 17, Zen 4, 2026-12-07): the norms' scaling passes took 0.05 ms a step in
    // place of 0.13.
    #[cfg(target_arch = "x86_64")]
    for i in (0..n).step_by(16) {
        crate::kernels::x86::prefetch_line(w[i..].as_ptr());
    }
    for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        #[cfg(target_arch = "x86_64")]
        let sum = if blocks {
            // SAFETY: AVX2 detected above.
            unsafe { crate::kernels::x86_norm::sum_squares(xr) }
        } else {
            crate::ggml_math::sum_squares(xr, 0.0)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let sum = crate::ggml_math::sum_squares(xr, 0.0);
        let mean = (sum / n as f64) as f32;
        let scale = 1.0f32 / (mean + eps).sqrt();
        for ((y, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
            *y = (v * scale) * g;
        }
    }
}

/// `f(part, first_row)` over `data` (rows of `width` values) split into one contiguous part per
/// thread. Each row is computed alone, so the split changes no result.
fn par_rows(
    threads: usize,
    data: &mut [f32],
    width: usize,
    f: &(dyn Fn(&mut [f32], usize) + Sync),
) {
    let rows = data.len() / width.max(1);
    let threads = threads.min(rows).max(1);
    if threads == 1 {
        f(data, 0);
        return;
    }
    let per = rows.div_ceil(threads);
    let parts: Vec<std::sync::Mutex<&mut [f32]>> = data
        .chunks_mut(per * width)
        .map(std::sync::Mutex::new)
        .collect();
    crate::kernels::pool::run(parts.len(), &|i| {
        let mut part = parts[i].lock().unwrap_or_else(|e| e.into_inner());
        let skew = usize::from(crate::planted::on("thread_split_offset") && i > 0);
        f(&mut part, i * per - skew);
    });
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, threads: usize, kernel: Kernel) -> Session<'m> {
        Session::new_with(model, threads, kernel, unpack_tq1_for(kernel))
    }

    /// [`Session::new`] choosing whether TQ1_0 weights are rewritten (see `unpack_tq1`).
    pub fn new_with(
        model: &'m Model,
        threads: usize,
        kernel: Kernel,
        unpack_tq1: bool,
    ) -> Session<'m> {
        let n = model.config.n_layer;
        let s = Session {
            model,
            threads: threads.max(1),
            kernel,
            plan: KernelPlan::uniform(kernel),
            kernels: KernelLog::default(),
            attention_distances: Default::default(),
            cache: vec![LayerCache::new(model.config.n_head_kv, model.config.head_dim); n],
            kv_type: KvType::F32,
            reserved: 0,
            n_past: 0,
            calls: 0,
            nudge_embeddings: false,
            unpack_tq1,
            scratch: Default::default(),
        };
        if s.unpack_tq1 {
            // Rewrite now (once per model), not inside the first timed forward pass.
            for l in &model.layers {
                for p in l.projections() {
                    if p.info.ty == GgmlType::TQ1_0 {
                        model.tq1_as_tq2(p);
                    }
                }
            }
        }
        s.group_weights();
        s
    }

    /// Make the model's grouped copy of its ternary weights ([`Model::grouped_weights`]) now when
    /// this session's plan decodes from one, so that it is made once, at the start, not inside
    /// the first timed decode step.
    fn group_weights(&self) {
        let Some(p) = self
            .model
            .layers
            .iter()
            .flat_map(|l| l.projections())
            .next()
        else {
            return;
        };
        // A TQ1_0 model decodes TQ2_0 products (its rewritten weights).
        let ty = match p.info.ty {
            GgmlType::TQ1_0 => GgmlType::TQ2_0,
            ty => ty,
        };
        let kernel = self.plan.product(ty, 1);
        if !kernel.is_available() {
            return;
        }
        if let Some(g) = PreparedInput::grouped_rows_of(kernel, ty, 1, self.plan.group(ty, 1)) {
            self.model.grouped_weights(p, g);
        }
    }

    /// Store the KV cache as `ty` (F32 unless set; F16 as llama.cpp's default `type_k` /
    /// `type_v`). Only before the first token: panics once the cache holds positions.
    pub fn set_kv_type(&mut self, ty: KvType) {
        assert_eq!(
            self.n_past, 0,
            "the KV cache's type is set before the first token"
        );
        if ty == self.kv_type {
            return;
        }
        self.kv_type = ty;
        self.cache = self.new_caches(ty);
    }

    /// Map and fault in every layer's KV cache storage for `positions` positions now (and again
    /// whenever the cache is rebuilt by a change of type or pages), as llama.cpp allocates and
    /// clears its cache for `n_ctx` when a context is made: the page faults, and the kernel's
    /// zeroing of each page, then happen here and not inside the first prompt's or decode step's
    /// time. The cache still grows past `positions` as needed. No result changes.
    pub fn reserve(&mut self, positions: usize) {
        self.reserved = self.reserved.max(positions);
        for c in &mut self.cache {
            c.reserve(self.reserved);
        }
    }

    /// The KV cache's element type.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// The model this session runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Positions already in the KV cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Kernel IDs that executed so far.
    pub fn kernels_used(&self) -> Vec<String> {
        self.kernels.ids()
    }

    /// The plan's prefetch distances (bytes) that decode products ran with so far.
    pub fn prefetch_distances_used(&self) -> Vec<usize> {
        self.kernels.prefetch_distances()
    }

    /// The prefetch distances (bytes) the attention ran with so far, smallest first.
    pub fn attention_distances_used(&self) -> Vec<usize> {
        self.attention_distances.iter().copied().collect()
    }

    /// The plan's row or token groups that products ran with so far.
    pub fn groups_used(&self) -> Vec<usize> {
        self.kernels.groups()
    }

    /// [`rms_norm`] of every row of `x`, the rows split over the threads.
    fn rms_norm(&self, x: &[f32], w: &[f32], out: &mut [f32]) {
        let (n, mut eps) = (w.len(), self.model.config.rms_eps);
        if crate::planted::on("norm_eps_x2") {
            eps *= 2.0;
        }
        let kernel = self.kernel;
        par_rows(self.threads, out, n, &|part, r0| {
            rms_norm_with(kernel, &x[r0 * n..r0 * n + part.len()], w, eps, part)
        });
    }

    /// The weights a product with `p` reads (TQ1_0 ones rewritten when `unpack_tq1`).
    fn matrix<'a>(&'a self, p: &'a Proj) -> Matrix<'a> {
        if self.unpack_tq1 && p.info.ty == GgmlType::TQ1_0 {
            self.kernels.record("tq1_0_unpack_tq2_0_scalar");
            self.model.tq1_as_tq2(p)
        } else {
            self.model.matrix(p)
        }
    }

    /// The product of projection `p` with `n_tok` rows of `x` (times its `.scale`).
    pub fn project(&self, p: &Proj, x: &[f32], n_tok: usize) -> Vec<f32> {
        let [out] = self.project_many([p], x, n_tok);
        out
    }

    /// Several projections of the same input (q/k/v, gate/up): the activations are quantized
    /// once, and the products run in one pass over the threads, when the weights share a type and
    /// width.
    fn project_many<const N: usize>(
        &self,
        ps: [&Proj; N],
        x: &[f32],
        n_tok: usize,
    ) -> [Vec<f32>; N] {
        let mut ms = ps.map(|p| self.matrix(p));
        let mut outs = ms.each_ref().map(|m| self.scratch.zeroed(n_tok * m.rows));
        let mut i = 0;
        while i < N {
            let prepared = prepare(
                ms[i].ty,
                x,
                n_tok,
                ms[i].cols,
                self.threads,
                self.plan.product(ms[i].ty, n_tok),
                &self.kernels,
            )
            .with_prefetch(self.plan.prefetch(ms[i].ty, n_tok))
            .with_group(self.plan.group(ms[i].ty, n_tok));
            let mut j = i + 1;
            while j < N && prepared.matches(&ms[j]) {
                j += 1;
            }
            if let Some(g) = prepared.grouped_rows() {
                for k in i..j {
                    ms[k].grouped = self.model.grouped_weights(ps[k], g).map(|d| (g, d));
                }
            }
            let mut group: Vec<&mut [f32]> =
                outs[i..j].iter_mut().map(|o| o.as_mut_slice()).collect();
            matmul_prepared_many(
                &ms[i..j],
                &prepared,
                &mut group,
                self.threads,
                &self.kernels,
            );
            i = j;
        }
        for (out, p) in outs.iter_mut().zip(ps) {
            let p = if crate::planted::on("fused_projections_first_scale") {
                ps[0]
            } else {
                p
            };
            if N == 1 && crate::planted::on("projection_scale_dropped") {
                continue;
            }
            if let Some(s) = p.scale {
                for v in out.iter_mut() {
                    *v *= s;
                }
            }
        }
        outs
    }

    /// Run `tokens` at the next positions; returns logits (`n_out × n_vocab`) for every position
    /// (`all_logits`) or the last. With a tracer, records every selected point as one step.
    pub fn forward(
        &mut self,
        tokens: &[u32],
        all_logits: bool,
        tracer: Option<&mut Tracer>,
    ) -> Result<Vec<f32>, String> {
        self.forward_impl::<true>(tokens, all_logits, tracer)
    }

    /// The forward pass compiled without any trace call (`TRACE = false`): what "a build
    /// without trace calls" costs, for the bench that shows tracing off is free.
    #[doc(hidden)]
    pub fn forward_without_trace_calls(
        &mut self,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<f32>, String> {
        self.forward_impl::<false>(tokens, all_logits, None)
    }

    fn forward_impl<const TRACE: bool>(
        &mut self,
        tokens: &[u32],
        all_logits: bool,
        mut tracer: Option<&mut Tracer>,
    ) -> Result<Vec<f32>, String> {
        let m = self.model;
        let c = &m.config;
        let n = tokens.len();
        if n == 0 {
            return Err("no tokens to run".into());
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(format!(
                "token id {bad} is outside the vocabulary (n_vocab {})",
                c.n_vocab
            ));
        }
        let p0 = self.n_past;
        let positions = [p0 as u32, (p0 + n) as u32];
        // Attention probabilities are kept only to be recorded.
        let keep_probs = TRACE && tracer.is_some();
        if let Some(t) = tracer.as_deref_mut() {
            t.set_step(self.calls);
        }
        let mut rec = |point: TracePoint, shape: Vec<usize>, v: &[f32]| {
            if TRACE {
                if let Some(t) = tracer.as_deref_mut() {
                    t.record(point, positions, shape, v);
                }
            }
        };
        let at = |layer: usize, stage: Stage| TracePoint {
            layer: Some(layer as u32),
            stage,
        };
        let global = |stage: Stage| TracePoint { layer: None, stage };
        let (e, hd, nh, nkv) = (c.n_embd, c.head_dim, c.n_head, c.n_head_kv);

        let mut x = self.embed(tokens);
        rec(global(Stage::Embeddings), vec![n, e], &x);
        for (l, layer) in m.layers.iter().enumerate() {
            // Attention block.
            let h = self.norm(&x, &layer.attn_norm);
            rec(at(l, Stage::AttnNorm), vec![n, e], &h);
            let [q, k, v] = self.qkv(layer, &h, n, p0);
            self.scratch.give_back([h]);
            rec(at(l, Stage::Q), vec![n, nh, hd], &q);
            rec(at(l, Stage::K), vec![n, nkv, hd], &k);
            rec(at(l, Stage::V), vec![n, nkv, hd], &v);
            let (att, probs) = self.attention(l, &q, &k, &v, n, keep_probs);
            self.scratch.give_back([q, k, v]);
            rec(at(l, Stage::AttnProbs), vec![n, nh, p0 + n], &probs);
            rec(at(l, Stage::KqvOut), vec![n, e], &att);
            self.scratch.give_back([probs]);
            let sub_norm = if crate::planted::on("sub_norm_weight_swapped") {
                &layer.attn_norm
            } else {
                &layer.attn_sub_norm
            };
            let h = self.norm(&att, sub_norm);
            self.scratch.give_back([att]);
            rec(at(l, Stage::AttnSubNorm), vec![n, e], &h);
            let o = self.project(&layer.wo, &h, n);
            self.scratch.give_back([h]);
            rec(at(l, Stage::AttnOut), vec![n, e], &o);
            residual(&mut x, &o);
            self.scratch.give_back([o]);
            rec(at(l, Stage::FfnInp), vec![n, e], &x);
            // Feed-forward block.
            let h = self.norm(&x, &layer.ffn_norm);
            rec(at(l, Stage::FfnNorm), vec![n, e], &h);
            let act = self.ffn_act(layer, &h, n);
            self.scratch.give_back([h]);
            rec(at(l, Stage::FfnAct), vec![n, c.n_ff], &act);
            let act_n = self.norm(&act, &layer.ffn_sub_norm);
            self.scratch.give_back([act]);
            rec(at(l, Stage::FfnSubNorm), vec![n, c.n_ff], &act_n);
            let d = self.project(&layer.w_down, &act_n, n);
            self.scratch.give_back([act_n]);
            rec(at(l, Stage::FfnDown), vec![n, e], &d);
            residual(&mut x, &d);
            self.scratch.give_back([d]);
            rec(at(l, Stage::Out), vec![n, e], &x);
        }
        let h = self.norm(&x, &m.output_norm);
        self.scratch.give_back([x]);
        rec(global(Stage::OutputNorm), vec![n, e], &h);
        let logits = self.logits(&h, n, all_logits);
        self.scratch.give_back([h]);
        if all_logits {
            rec(global(Stage::Logits), vec![n, c.n_vocab], &logits);
        }
        self.n_past += n;
        self.calls += 1;
        Ok(logits)
    }

    /// Token embeddings: one row of `token_embd` per token (`n × n_embd`).
    pub fn embed(&self, tokens: &[u32]) -> Vec<f32> {
        let (m, c) = (self.model, &self.model.config);
        let emb = m.embedding();
        let e = c.n_embd;
        let mut x = self.scratch.zeroed(tokens.len() * e);
        for (row, &t) in x.chunks_exact_mut(e).zip(tokens) {
            let t = if emb.ty == GgmlType::F16 && crate::planted::on("f16_embedding_next_row") {
                (t + 1) % c.n_vocab as u32
            } else if crate::planted::on("embedding_row_past_end") {
                t + c.n_vocab as u32
            } else {
                t
            };
            let rb = emb_row_bytes(&emb);
            let bytes = &emb.data[t as usize * rb..][..rb];
            dequant_row(&emb, bytes, row);
            if self.nudge_embeddings {
                for v in row.iter_mut() {
                    *v = next_up(*v);
                }
            }
        }
        x
    }

    /// RMSNorm of every row of `x` times `w` (rows of `w.len()`).
    pub fn norm(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut out = self.scratch.zeroed(x.len());
        self.rms_norm(x, w, &mut out);
        out
    }

    /// The query, key and value projections of `h` (`n` tokens at positions `p0..`), with NEOX
    /// RoPE applied to the query and key: `[n × n_head × hd, n × n_head_kv × hd, same]`.
    pub fn qkv(&self, layer: &Layer, h: &[f32], n: usize, p0: usize) -> [Vec<f32>; 3] {
        let c = &self.model.config;
        let (hd, nh, nkv) = (c.head_dim, c.n_head, c.n_head_kv);
        let [mut q, mut k, v] = self.project_many([&layer.wq, &layer.wk, &layer.wv], h, n);
        let rope_base = if crate::planted::on("rope_base_default") {
            10000.0
        } else {
            c.rope_base
        };
        let shift = usize::from(crate::planted::on("rope_position_plus_one"));
        for i in 0..n {
            rope_neox_with(
                self.kernel,
                [
                    &mut q[i * nh * hd..(i + 1) * nh * hd],
                    &mut k[i * nkv * hd..(i + 1) * nkv * hd],
                ],
                hd,
                c.n_rot,
                (p0 + i + shift) as f32,
                rope_base,
            );
        }
        [q, k, v]
    }

    /// Attention of `n` new tokens (after the `n_past` positions in layer `l`'s KV cache): appends
    /// their keys and values to the cache and returns the attention output (`n × n_embd`) and, with
    /// `keep_probs`, the probabilities (`n × n_head × (n_past + n)`, zero past each position).
    pub fn attention(
        &mut self,
        l: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n: usize,
        keep_probs: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let caches = std::mem::take(&mut self.cache[l]);
        let distance = self.plan.attention_distance();
        self.attention_distances.insert(distance);
        let c = &self.model.config;
        let att = self.scratch.zeroed(n * c.n_embd);
        let (caches, out) = attend_layer_into(
            c,
            caches,
            [q, k, v],
            n,
            keep_probs,
            (self.threads, self.kernel, distance),
            att,
        );
        self.cache[l] = caches;
        out
    }

    /// The FFN activation of `h` (`n × n_ff`): `silu(gate)·up`, or `relu(gate)²·up` for
    /// `bitnet-b1.58`.
    pub fn ffn_act(&self, layer: &Layer, h: &[f32], n: usize) -> Vec<f32> {
        let [gate, up] = self.project_many([&layer.w_gate, &layer.w_up], h, n);
        let act = self.scratch.zeroed(gate.len());
        let act = ffn_elementwise_into(
            &self.model.config,
            self.kernel,
            self.threads,
            &gate,
            &up,
            act,
        );
        self.scratch.give_back([gate, up]);
        act
    }

    /// Logits through the tied embedding: every row of `h` (`n × n_vocab`) or the last.
    pub fn logits(&self, h: &[f32], n: usize, all: bool) -> Vec<f32> {
        let c = &self.model.config;
        let e = c.n_embd;
        let last = if crate::planted::on("last_logits_row_zero") {
            0
        } else {
            n - 1
        };
        let (rows, start) = if all { (n, 0) } else { (1, last) };
        let mut logits = vec![0f32; rows * c.n_vocab];
        let emb = self.model.embedding();
        let x = &h[start * e..(start + rows) * e];
        let prepared = prepare(
            emb.ty,
            x,
            rows,
            emb.cols,
            self.threads,
            self.plan.product(emb.ty, rows),
            &self.kernels,
        )
        .with_prefetch(self.plan.prefetch(emb.ty, rows))
        .with_group(self.plan.group(emb.ty, rows));
        matmul_prepared(&emb, &prepared, &mut logits, self.threads, &self.kernels);
        logits
    }

    /// Run each kind of product on the variant `plan` names, everything else on `plan.base`.
    pub fn set_plan(&mut self, plan: KernelPlan) {
        self.kernel = plan.base;
        let pages_changed = plan.kv_huge != self.plan.kv_huge;
        self.plan = plan;
        if pages_changed && self.n_past == 0 {
            self.cache = self.new_caches(self.kv_type);
        }
        self.group_weights();
    }

    /// An empty KV cache per layer of type `ty`, in the pages the plan chose (or
    /// `BITNET_KV_PAGES`'s).
    fn new_caches(&self, ty: KvType) -> Vec<LayerCache> {
        let c = &self.model.config;
        let cache = LayerCache::new_typed(c.n_head_kv, c.head_dim, ty);
        let cache = match self.plan.kv_huge {
            Some(h) => cache.with_huge_pages(h),
            None => cache,
        };
        let mut caches = vec![cache; c.n_layer];
        for c in &mut caches {
            c.reserve(self.reserved);
        }
        caches
    }

    /// One matrix per weight format, as this session's products read them (TQ1_0 rewritten as
    /// TQ2_0 when it does so): the largest projection of each format in any layer, and the
    /// output matrix, named. What [`crate::kernels::plan::tune`] times: every kind of product
    /// the model runs gets a measured variant (a kind missing here would run on the plan's base,
    /// which is timed on attention, not on products).
    pub fn representative_matrices(&self) -> Vec<(String, Matrix<'_>)> {
        let mut by_type: Vec<(String, Matrix<'_>)> = Vec::new();
        for p in self.model.layers.iter().flat_map(|l| l.projections()) {
            let m = self.matrix(p);
            match by_type.iter_mut().find(|(_, x)| x.ty == m.ty) {
                Some(slot) if slot.1.rows * slot.1.cols >= m.rows * m.cols => {}
                Some(slot) => *slot = (p.info.name.clone(), m),
                None => by_type.push((p.info.name.clone(), m)),
            }
        }
        let emb = self.model.embedding();
        by_type.retain(|(_, m)| m.ty != emb.ty);
        by_type.push(("token_embd.weight".into(), emb));
        by_type
    }
}

/// The FFN's element-wise part on `gate` and `up` (rows of `n_ff`): `silu(gate)·up`, or
/// `relu(gate)²·up` for `bitnet-b1.58`, element by element, split over the threads (a decode
/// step has one row).
fn ffn_elementwise(
    c: &crate::model::Config,
    kernel: Kernel,
    threads: usize,
    gate: &[f32],
    up: &[f32],
) -> Vec<f32> {
    ffn_elementwise_into(c, kernel, threads, gate, up, vec![0f32; gate.len()])
}

/// [`ffn_elementwise`] into `act` (zeros, as long as `gate`).
fn ffn_elementwise_into(
    c: &crate::model::Config,
    kernel: Kernel,
    threads: usize,
    gate: &[f32],
    up: &[f32],
    mut act: Vec<f32>,
) -> Vec<f32> {
    assert_eq!(act.len(), gate.len());
    let (n_ff, ffn) = (c.n_ff, c.arch.ffn());
    par_rows(threads, &mut act, 1, &|part, at| {
        let r = at..at + part.len();
        match ffn {
            FfnAct::Silu => {
                crate::ggml_math::swiglu(kernel, &gate[r.clone()], &up[r], part, n_ff, at)
            }
            FfnAct::Relu2 if crate::planted::on("relu2_passes_negatives") => {
                for ((o, &g), &u) in part.iter_mut().zip(&gate[r.clone()]).zip(&up[r]) {
                    *o = (g * g) * u;
                }
            }
            FfnAct::Relu2 => crate::ggml_math::relu2_mul(&gate[r.clone()], &up[r], part),
        }
    });
    act
}

/// `x += y`, element by element (ggml_add).
pub fn residual(x: &mut [f32], y: &[f32]) {
    for (xv, yv) in x.iter_mut().zip(y) {
        *xv += *yv;
    }
}

/// Attention of `n` new tokens against one layer's KV cache (which holds the earlier positions):
/// appends the new keys and values, returns the cache and (output `n × n_embd`, probabilities
/// `n × n_head × n_kv` when `keep_probs`). `kernel` and `prefetch` as for
/// [`crate::attention::attend`].
///
/// Heads are independent: each thread takes a contiguous range of query heads (a head's sums are
/// the same whichever thread computes it) and reads their KV heads' rows in address order, every
/// chunk's keys and then its values (see [`crate::attention`]), writing its heads' rows in place.
#[allow(clippy::too_many_arguments)]
pub fn attend_layer(
    c: &crate::model::Config,
    cache: LayerCache,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    keep_probs: bool,
    threads: usize,
    kernel: Kernel,
    prefetch: usize,
) -> (LayerCache, (Vec<f32>, Vec<f32>)) {
    let att = vec![0f32; n * c.n_embd];
    attend_layer_into(
        c,
        cache,
        [q, k, v],
        n,
        keep_probs,
        (threads, kernel, prefetch),
        att,
    )
}

thread_local! {
    /// Each thread's attention scratch ([`attend`]'s lane accumulators, 196 KB a thread on the
    /// 700M shape), kept across layers and steps: its SIMD form writes every lane it reads, so a
    /// call neither allocates nor zeroes it, and it stays in the thread's cache.
    static ATTN_SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`attend_layer`] writing the output into `att` (zeros, `n × n_embd`).
fn attend_layer_into(
    c: &crate::model::Config,
    mut cache: LayerCache,
    [q, k, v]: [&[f32]; 3],
    n: usize,
    keep_probs: bool,
    (threads, kernel, prefetch): (usize, Kernel, usize),
    mut att: Vec<f32>,
) -> (LayerCache, (Vec<f32>, Vec<f32>)) {
    let (e, hd, nh, nkv) = (c.n_embd, c.head_dim, c.n_head, c.n_head_kv);
    assert_eq!(att.len(), n * e);
    let p0 = cache.len();
    let n_kv = p0 + n;
    let swapped = crate::planted::on("gqa_kv_head_swapped");
    for i in 0..n {
        let rows = i * nkv * hd..(i + 1) * nkv * hd;
        if swapped {
            // Each KV head takes the next one's row.
            let next = |x: &[f32]| -> Vec<f32> {
                (0..nkv)
                    .flat_map(|g| &x[rows.start + (g + 1) % nkv * hd..][..hd])
                    .copied()
                    .collect()
            };
            cache.push(&next(k), &next(v));
        } else {
            cache.push(&k[rows.clone()], &v[rows]);
        }
    }
    let scale = if crate::planted::on("attn_scale_inverse_dim") {
        1.0f32 / hd as f32
    } else {
        1.0f32 / (hd as f32).sqrt()
    };
    let group = nh / nkv;
    let mut probs = vec![0f32; if keep_probs { n * nh * n_kv } else { 0 }];
    {
        let (p_rows, p_tok) = if keep_probs { (nh * n_kv, n) } else { (0, 0) };
        let att_out = SharedOut::new(&mut att, nh * hd, n);
        let probs_out = SharedOut::new(&mut probs, p_rows, p_tok);
        let order = AttnOrder::for_cache(cache.kv_type(), n, nh, hd);
        let workers = threads.min(nh).max(1);
        let cache = &cache;
        crate::kernels::pool::run(workers, &|w| {
            let heads = w * nh / workers..(w + 1) * nh / workers;
            let (h0, h1) = (heads.start, heads.end);
            if heads.is_empty() {
                return;
            }
            let (mut pp, mut oo) = (vec![0f32; heads.len() * n_kv], vec![0f32; heads.len() * hd]);
            // This thread's lane accumulators, kept from call to call (`ATTN_SCRATCH`).
            let mut acc = ATTN_SCRATCH.take();
            // SAFETY: the workers' head ranges are disjoint, and heads' rows do not overlap.
            let mut ao = unsafe { att_out.rows(h0 * hd, h1 * hd) };
            let mut po = keep_probs
                // SAFETY: as above.
                .then(|| unsafe { probs_out.rows(h0 * n_kv, h1 * n_kv) });
            for i in 0..n {
                let limit = if crate::planted::on("causal_mask_missing") {
                    n_kv
                } else {
                    p0 + i + 1 // causal: positions 0..=p0+i
                };
                attend(
                    kernel,
                    &q[(i * nh + h0) * hd..(i * nh + h1) * hd],
                    cache,
                    heads.clone(),
                    group,
                    limit,
                    scale,
                    order,
                    prefetch,
                    &mut pp,
                    &mut oo,
                    &mut acc,
                );
                for (d, &v) in oo.iter().enumerate() {
                    ao.set(h0 * hd + d, i, v);
                }
                if let Some(po) = po.as_mut() {
                    for r in 0..heads.len() {
                        for j in 0..n_kv {
                            let pj = if j < limit { pp[r * limit + j] } else { 0.0 };
                            po.set((h0 + r) * n_kv + j, i, pj);
                        }
                    }
                }
            }
            ATTN_SCRATCH.set(acc);
        });
    }
    (cache, (att, probs))
}

/// The next f32 above `v` (one ulp up; for zero the smallest subnormal).
pub fn next_up(v: f32) -> f32 {
    if v.is_nan() || v == f32::INFINITY {
        return v;
    }
    if v == 0.0 {
        return f32::from_bits(1);
    }
    let b = v.to_bits();
    f32::from_bits(if v > 0.0 { b + 1 } else { b - 1 })
}

/// Bytes of one embedding row (F32, F16: `cols` elements; Q6_K: `cols/256` blocks).
fn emb_row_bytes(m: &Matrix) -> usize {
    m.data.len() / m.rows.max(1)
}

fn dequant_row(m: &Matrix, bytes: &[u8], out: &mut [f32]) {
    match m.ty {
        crate::gguf::GgmlType::F16 => {
            let flush = crate::planted::on("f16_subnormals_flushed");
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                let h = u16::from_le_bytes([b[0], b[1]]);
                *o = if flush && h & 0x7c00 == 0 {
                    0.0
                } else {
                    f16_to_f32(h)
                };
            }
        }
        crate::gguf::GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        // ggml's `get_rows` runs the type's `dequantize_row_*`.
        ty => out.copy_from_slice(
            &crate::quant::dequantize(ty, bytes, out.len())
                .expect("an embedding type the model loader accepts"),
        ),
    }
}

/// NEOX RoPE as ggml computes it: `theta_scale = powf(base, -2/n_rot)`, `theta` multiplied by it
/// pair after pair from `theta = pos`, pairs `(i, i + n_rot/2)` within each head of each of `xs`
/// (one position's query and key heads). The portable copy; [`rope_neox_with`] picks the FMA one.
pub fn rope_neox<const N: usize>(
    xs: [&mut [f32]; N],
    head_dim: usize,
    n_rot: usize,
    pos: f32,
    base: f32,
) {
    rope_neox_with(Kernel::Scalar, xs, head_dim, n_rot, pos, base);
}

/// [`rope_neox`] with the rotation compiled for `kernel` (the same bits: ggml's contraction is
/// one `mul_add` per output, fused in every copy).
pub fn rope_neox_with<const N: usize>(
    kernel: Kernel,
    xs: [&mut [f32]; N],
    head_dim: usize,
    n_rot: usize,
    pos: f32,
    base: f32,
) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let half = n_rot / 2;
    // The angles are the same for every head, query or key: their cosines and sines once per
    // position.
    let mut cs = Vec::with_capacity(half);
    let mut theta = pos;
    for _ in 0..half {
        cs.push((theta.cos(), theta.sin()));
        theta *= theta_scale;
    }
    // Planted: adjacent pairs `(2i, 2i+1)` (GGML_ROPE_TYPE_NORMAL) instead of NEOX's.
    let adjacent = crate::planted::on("rope_pairs_adjacent");
    for x in xs {
        crate::ggml_math::rope_rotate(kernel, x, head_dim, &cs, adjacent);
    }
}

/// Greedy argmax, ties to the lowest id.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod argmax_tests {
    use super::argmax;

    /// Greedy choice as llama.cpp's greedy sampler makes it (`llama_sampler_greedy_apply`: a later
    /// id replaces the choice only when strictly greater): ties go to the lowest id, and a NaN
    /// never wins. Hand-worked cases.
    #[test]
    fn ties_go_to_the_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[5.0, 5.0]), 0);
        assert_eq!(argmax(&[-1.0, -0.5, -0.5, -0.75]), 1);
        assert_eq!(argmax(&[0.0, -0.0]), 0);
        assert_eq!(argmax(&[1.0, f32::NAN, 2.0, 2.0]), 2);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }
}
