//! The engine's non-matrix ops against ggml itself (the llama.cpp build the harness links, AVX2 +
//! FMA as pinned in `.cargo/config.toml`), one ggml graph per op, shaped as llama.cpp's `bitnet`
//! graph shapes them: NEOX RoPE (`ggml_rope_ext`), the attention block (`mul_mat(k, q)`,
//! `soft_max_ext` with a causal mask over a KV length padded to 256, `mul_mat(v, kq)` over a
//! transposed V), SwiGLU (`ggml_swiglu_split`) and RMSNorm times its weight. Every value must be
//! equal bit for bit, for every kernel variant this CPU runs. The expected values are ggml's.

use bitnet_engine::attention::{attend, AttnOrder, KvType, LayerCache, PREFETCH};
use bitnet_engine::forward::{rms_norm, rope_neox, rope_neox_with};
use bitnet_engine::ggml_math::swiglu;
use bitnet_engine::kernels::Kernel;
use llama_cpp_sys_2 as sys;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn f(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
}

/// A ggml context for one small graph; freed on drop.
struct Ctx(*mut sys::ggml_context);

impl Ctx {
    fn new(mb: usize) -> Ctx {
        // SAFETY: ggml_cpu_init fills lookup tables (idempotent); ggml_init allocates the context.
        let ctx = unsafe {
            sys::ggml_cpu_init();
            sys::ggml_init(sys::ggml_init_params {
                mem_size: mb << 20,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: false,
            })
        };
        assert!(!ctx.is_null());
        Ctx(ctx)
    }

    /// An F16 tensor of shape `ne` (ggml order, innermost first) holding `data` rounded by ggml's
    /// own `ggml_fp32_to_fp16_row`.
    fn f16(&self, ne: &[i64], data: &[f32]) -> *mut sys::ggml_tensor {
        assert_eq!(ne.iter().product::<i64>() as usize, data.len());
        assert_eq!(ne.len(), 3);
        // SAFETY: the tensor is allocated in the context with `data.len()` halves.
        unsafe {
            let t = sys::ggml_new_tensor_3d(self.0, sys::GGML_TYPE_F16, ne[0], ne[1], ne[2]);
            sys::ggml_fp32_to_fp16_row(
                data.as_ptr(),
                sys::ggml_get_data(t) as *mut _,
                data.len() as i64,
            );
            t
        }
    }

    /// An F32 tensor of shape `ne` (ggml order, innermost first) holding `data`.
    fn f32(&self, ne: &[i64], data: &[f32]) -> *mut sys::ggml_tensor {
        assert_eq!(ne.iter().product::<i64>() as usize, data.len());
        // SAFETY: the tensor is allocated in the context with `data.len()` floats.
        unsafe {
            let t = match ne.len() {
                1 => sys::ggml_new_tensor_1d(self.0, sys::GGML_TYPE_F32, ne[0]),
                2 => sys::ggml_new_tensor_2d(self.0, sys::GGML_TYPE_F32, ne[0], ne[1]),
                _ => sys::ggml_new_tensor_3d(self.0, sys::GGML_TYPE_F32, ne[0], ne[1], ne[2]),
            };
            std::ptr::copy_nonoverlapping(data.as_ptr(), sys::ggml_get_data_f32(t), data.len());
            t
        }
    }

    /// Compute `out` with `threads` threads and return its values (contiguous).
    fn compute(&self, out: *mut sys::ggml_tensor, threads: i32) -> Vec<f32> {
        // SAFETY: `out` belongs to this context; the graph is built and computed inside it.
        unsafe {
            let g = sys::ggml_new_graph(self.0);
            sys::ggml_build_forward_expand(g, out);
            let status = sys::ggml_graph_compute_with_ctx(self.0, g, threads);
            assert_eq!(status, sys::GGML_STATUS_SUCCESS);
            let n = sys::ggml_nelements(out) as usize;
            std::slice::from_raw_parts(sys::ggml_get_data_f32(out), n).to_vec()
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the context was made by ggml_init and is freed once.
        unsafe { sys::ggml_free(self.0) };
    }
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: engine {g:e} vs ggml {w:e}"
        );
    }
}

const GGML_ROPE_TYPE_NEOX: i32 = 2;

#[test]
fn rope_neox_equals_ggml_rope_ext() {
    let mut rng = Rng(11);
    for (hd, n_head, base) in [
        (64usize, 4usize, 10000f32),
        (96, 3, 500000.0),
        (128, 2, 500000.0),
        (6, 2, 10000.0),
    ] {
        for positions in [
            vec![0i32, 1, 2, 3, 4],
            vec![7],
            vec![127, 128, 1000, 4095, 65000],
        ] {
            let n_tok = positions.len();
            let x = rng.vec(hd * n_head * n_tok, 3.0);
            let ctx = Ctx::new(64);
            let t = ctx.f32(&[hd as i64, n_head as i64, n_tok as i64], &x);
            // SAFETY: tensors of this context; positions are an I32 vector of n_tok.
            let want = unsafe {
                let pos = sys::ggml_new_tensor_1d(ctx.0, sys::GGML_TYPE_I32, n_tok as i64);
                std::ptr::copy_nonoverlapping(
                    positions.as_ptr(),
                    sys::ggml_get_data(pos) as *mut i32,
                    n_tok,
                );
                let r = sys::ggml_rope_ext(
                    ctx.0,
                    t,
                    pos,
                    std::ptr::null_mut(),
                    hd as i32,
                    GGML_ROPE_TYPE_NEOX,
                    0,
                    base,
                    1.0,
                    0.0,
                    1.0,
                    32.0,
                    1.0,
                );
                ctx.compute(r, 2)
            };
            let mut got = x.clone();
            for (i, &p) in positions.iter().enumerate() {
                let row = &mut got[i * n_head * hd..(i + 1) * n_head * hd];
                rope_neox([row], hd, hd, p as f32, base);
            }
            assert_bits(
                &got,
                &want,
                &format!("rope hd {hd} base {base} at {positions:?}"),
            );
            for k in Kernel::available() {
                let mut got = x.clone();
                for (i, &p) in positions.iter().enumerate() {
                    let row = &mut got[i * n_head * hd..(i + 1) * n_head * hd];
                    rope_neox_with(k, [row], hd, hd, p as f32, base);
                }
                assert_bits(&got, &want, &format!("rope {k:?} hd {hd} at {positions:?}"));
            }
        }
    }
}

#[test]
fn swiglu_equals_ggml_swiglu_split() {
    let mut rng = Rng(12);
    for (width, rows) in [(512usize, 3usize), (20, 4), (1537, 2), (7, 1)] {
        let gate = rng.vec(width * rows, 12.0);
        let up = rng.vec(width * rows, 2.0);
        let ctx = Ctx::new(64);
        let g = ctx.f32(&[width as i64, rows as i64], &gate);
        let u = ctx.f32(&[width as i64, rows as i64], &up);
        // SAFETY: tensors of this context of the same shape.
        let want = ctx.compute(unsafe { sys::ggml_swiglu_split(ctx.0, g, u) }, 2);
        for k in Kernel::available() {
            let mut got = vec![0f32; width * rows];
            swiglu(k, &gate, &up, &mut got, width, 0);
            assert_bits(&got, &want, &format!("swiglu {width}x{rows} {k:?}"));
            // A share starting mid-row computes what the whole does.
            let at = (width + 3).min(got.len() - 1);
            let mut part = vec![0f32; got.len() - at];
            swiglu(k, &gate[at..], &up[at..], &mut part, width, at);
            assert_bits(&part, &want[at..], &format!("swiglu share {width} {k:?}"));
        }
    }
}

#[test]
fn rms_norm_times_weight_equals_ggml() {
    let mut rng = Rng(13);
    for (n, rows, eps) in [(256usize, 3usize, 1e-5f32), (1536, 2, 1e-6), (100, 1, 1e-5)] {
        let x = rng.vec(n * rows, 4.0);
        let w = rng.vec(n, 1.5);
        let ctx = Ctx::new(64);
        let tx = ctx.f32(&[n as i64, rows as i64], &x);
        let tw = ctx.f32(&[n as i64], &w);
        // SAFETY: tensors of this context; the weight broadcasts over the rows.
        let want = ctx.compute(
            unsafe { sys::ggml_mul(ctx.0, sys::ggml_rms_norm(ctx.0, tx, eps), tw) },
            2,
        );
        let mut got = vec![0f32; n * rows];
        rms_norm(&x, &w, eps, &mut got);
        assert_bits(&got, &want, &format!("rms_norm {n}x{rows}"));
    }
}

/// llama.cpp's attention without flash attention over a cache of type `ty` (F32, or F16 filled by
/// ggml's own conversion) of `n_kv_pad` cells (a multiple of 256; cells past `n_past + n_tok`
/// zero), for a pass of `n_tok` new tokens after `n_past`: returns the probabilities
/// `[n_tok, n_head, n_kv_pad]` and outputs `[n_tok, n_head, hd]`.
#[allow(clippy::too_many_arguments)]
fn ggml_attention(
    ty: KvType,
    q: &[f32],
    ks: &[f32],
    vs: &[f32],
    hd: usize,
    n_head: usize,
    n_kv_head: usize,
    n_past: usize,
    n_tok: usize,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let n_cells = n_past + n_tok;
    let n_kv = n_cells.div_ceil(256) * 256;
    // K cache: [hd, n_kv, n_kv_head]; V transposed: [n_kv, hd, n_kv_head]. `ks`/`vs` are
    // [n_cells, n_kv_head, hd] as the engine computes them.
    let mut kc = vec![0f32; hd * n_kv * n_kv_head];
    let mut vt = vec![0f32; n_kv * hd * n_kv_head];
    for p in 0..n_cells {
        for g in 0..n_kv_head {
            for d in 0..hd {
                kc[(g * n_kv + p) * hd + d] = ks[(p * n_kv_head + g) * hd + d];
                vt[(g * hd + d) * n_kv + p] = vs[(p * n_kv_head + g) * hd + d];
            }
        }
    }
    let mut mask = vec![f32::NEG_INFINITY; n_kv * n_tok];
    for i in 0..n_tok {
        for j in 0..=n_past + i {
            mask[i * n_kv + j] = 0.0;
        }
    }
    let ctx = Ctx::new(256);
    let tq = ctx.f32(&[hd as i64, n_head as i64, n_tok as i64], q);
    let (tk, tv) = match ty {
        KvType::F32 => (
            ctx.f32(&[hd as i64, n_kv as i64, n_kv_head as i64], &kc),
            ctx.f32(&[n_kv as i64, hd as i64, n_kv_head as i64], &vt),
        ),
        KvType::F16 => (
            ctx.f16(&[hd as i64, n_kv as i64, n_kv_head as i64], &kc),
            ctx.f16(&[n_kv as i64, hd as i64, n_kv_head as i64], &vt),
        ),
    };
    let tm = ctx.f32(&[n_kv as i64, n_tok as i64], &mask);
    // SAFETY: tensors of this context, shaped as llama-graph's build_attn_mha shapes them.
    unsafe {
        let qp = sys::ggml_permute(ctx.0, tq, 0, 2, 1, 3);
        let kq = sys::ggml_mul_mat(ctx.0, tk, qp);
        let sm = sys::ggml_soft_max_ext(ctx.0, kq, tm, scale, 0.0);
        let kqv = sys::ggml_mul_mat(ctx.0, tv, sm);
        let out = sys::ggml_cont(ctx.0, sys::ggml_permute(ctx.0, kqv, 0, 2, 1, 3));
        let g = sys::ggml_new_graph(ctx.0);
        sys::ggml_build_forward_expand(g, out);
        assert_eq!(
            sys::ggml_graph_compute_with_ctx(ctx.0, g, 2),
            sys::GGML_STATUS_SUCCESS
        );
        let probs = std::slice::from_raw_parts(sys::ggml_get_data_f32(sm), n_kv * n_tok * n_head);
        // [n_head][n_tok][n_kv] → [n_tok][n_head][n_kv]
        let mut p = vec![0f32; probs.len()];
        for h in 0..n_head {
            for i in 0..n_tok {
                let src = (h * n_tok + i) * n_kv;
                let dst = (i * n_head + h) * n_kv;
                p[dst..dst + n_kv].copy_from_slice(&probs[src..src + n_kv]);
            }
        }
        let o = std::slice::from_raw_parts(sys::ggml_get_data_f32(out), hd * n_head * n_tok);
        (p, o.to_vec())
    }
}

#[test]
fn attention_equals_ggml_mul_mat_soft_max_mul_mat() {
    let mut rng = Rng(14);
    // (hd, n_head, n_kv_head, n_past, n_tok): prefill, decode, chunked, GQA, one head, a head
    // size with a tail, a cache past 256 cells; each over an F32 and an F16 cache.
    for (hd, n_head, n_kv_head, n_past, n_tok) in [
        (64usize, 4usize, 4usize, 0usize, 9usize),
        (64, 4, 4, 9, 1),
        (40, 2, 2, 3, 1),
        (40, 2, 2, 0, 4),
        (64, 8, 2, 5, 7),
        (96, 3, 1, 0, 5),
        (64, 1, 1, 0, 6),
        (64, 1, 1, 6, 1),
        (32, 2, 2, 250, 12),
        (128, 2, 1, 300, 1),
        // Head sizes of no whole group of 8 (tinyBLAS pads a ragged length) with one head and
        // with GQA, and of no whole group of 4 (tinyBLAS declines the outputs' product).
        (20, 1, 1, 0, 4),
        (20, 2, 1, 2, 3),
        (18, 2, 2, 1, 3),
        (18, 2, 2, 4, 1),
    ] {
        for ty in KvType::ALL {
            let n_cells = n_past + n_tok;
            let ks = rng.vec(n_cells * n_kv_head * hd, 2.0);
            let vs = rng.vec(n_cells * n_kv_head * hd, 1.0);
            let q = rng.vec(n_tok * n_head * hd, 2.0);
            let scale = 1.0 / (hd as f32).sqrt();
            let (wp, wo) = ggml_attention(
                ty, &q, &ks, &vs, hd, n_head, n_kv_head, n_past, n_tok, scale,
            );
            let n_kv = n_cells.div_ceil(256) * 256;
            let mut cache = LayerCache::new_typed(n_kv_head, hd, ty);
            for p in 0..n_cells {
                let r = p * n_kv_head * hd..(p + 1) * n_kv_head * hd;
                cache.push(&ks[r.clone()], &vs[r]);
            }
            let order = AttnOrder::for_cache(ty, n_tok, n_head, hd);
            let group = n_head / n_kv_head;
            for k in Kernel::available() {
                let (mut pp, mut oo, mut acc) = (
                    vec![0f32; n_head * n_cells],
                    vec![0f32; n_head * hd],
                    Vec::new(),
                );
                for i in 0..n_tok {
                    let limit = n_past + i + 1;
                    // Every head at once, as a one-thread pass takes them.
                    let qi = &q[i * n_head * hd..(i + 1) * n_head * hd];
                    attend(
                        k,
                        qi,
                        &cache,
                        0..n_head,
                        group,
                        limit,
                        scale,
                        order,
                        PREFETCH,
                        &mut pp,
                        &mut oo,
                        &mut acc,
                    );
                    for h in 0..n_head {
                        let (pp, oo) = (&pp[h * limit..(h + 1) * limit], &oo[h * hd..(h + 1) * hd]);
                        let what = format!(
                        "{ty:?} cache, hd {hd} heads {n_head}/{n_kv_head} past {n_past} tokens {n_tok} {k:?}: token {i} head {h}"
                    );
                        let wrow = &wp[(i * n_head + h) * n_kv..][..limit];
                        assert_bits(&pp[..limit], wrow, &format!("{what}: probabilities"));
                        let orow = &wo[(i * n_head + h) * hd..][..hd];
                        assert_bits(oo, orow, &format!("{what}: output"));
                    }
                }
            }
        }
    }
}
