//! The CUDA kernels compiled for this CPU (`bodies.cuh` through `host.c`, built by the engine's
//! build script): `ffi` declares them, and the safe functions below check every slice's length
//! before handing its pointer over. Each call runs every work item of the kernel in a loop, so it
//! computes what the GPU launch would.

use crate::kernels::scalar::{BlockQ8K, QK_K, TQ1_0_BYTES, TQ2_0_BYTES};

/// The host copies' C signatures (see `bodies.cuh` for what each computes). Pointers are to
/// the element types the kernels read; `n` is the number of work items.
pub(crate) mod ffi {
    use crate::kernels::scalar::BlockQ8K;

    extern "C" {
        pub fn bn_q8k_quantize(n_blocks: u64, x: *const f32, y: *mut BlockQ8K);
        pub fn bn_i8s_quantize(
            n_tok: u64,
            x: *const f32,
            cols: u64,
            q: *mut i8,
            scales: *mut f32,
            sums: *mut i32,
        );
        pub fn bn_tq_matmul(
            n: u64,
            w: *const u8,
            a: *const BlockQ8K,
            rows: u64,
            nb: u64,
            tq1: i32,
            out: *mut f32,
        );
        pub fn bn_tq_lanes(
            n: u64,
            w: *const u8,
            a: *const BlockQ8K,
            rows: u64,
            nb: u64,
            tq1: i32,
            lanes: *mut i32,
        );
        pub fn bn_i2s_matmul(
            n: u64,
            w: *const u8,
            q: *const i8,
            scales: *const f32,
            sums: *const i32,
            rows: u64,
            cols: u64,
            w_scale: f32,
            out: *mut f32,
            dots: *mut i32,
        );
        pub fn bn_float_matmul(
            n: u64,
            w: *const u8,
            a: *const f32,
            rows: u64,
            cols: u64,
            f16: i32,
            lanes8: i32,
            out: *mut f32,
        );
        pub fn bn_round_f16(n: u64, x: *const f32, out: *mut f32);
        pub fn bn_embed(
            n: u64,
            tokens: *const u32,
            emb: *const u8,
            e: u64,
            f16: i32,
            out: *mut f32,
        );
        pub fn bn_rms_scale(n_rows: u64, x: *const f32, width: u64, eps: f32, scale: *mut f32);
        pub fn bn_rms_apply(
            n: u64,
            x: *const f32,
            w: *const f32,
            width: u64,
            scale: *const f32,
            out: *mut f32,
        );
        pub fn bn_rope_neox(n: u64, x: *mut f32, n_heads: u64, hd: u64, half: u64, cs: *const f32);
        pub fn bn_attn_scores(
            n: u64,
            q: *const f32,
            kc: *const f32,
            p: *mut f32,
            p0: u64,
            n_heads: u64,
            n_kv_heads: u64,
            hd: u64,
            n_kv: u64,
            scale: f32,
            kq_lanes8: i32,
        );
        pub fn bn_attn_softmax(n: u64, p: *mut f32, p0: u64, n_heads: u64, n_kv: u64);
        pub fn bn_attn_kqv(
            n: u64,
            p: *const f32,
            vc: *const f32,
            out: *mut f32,
            p0: u64,
            n_heads: u64,
            n_kv_heads: u64,
            hd: u64,
            n_kv: u64,
            kqv_lanes8: i32,
        );
        pub fn bn_swiglu(n: u64, gate: *const f32, up: *const f32, width: u64, out: *mut f32);
        pub fn bn_relu2_mul(n: u64, gate: *const f32, up: *const f32, out: *mut f32);
        pub fn bn_add(n: u64, x: *mut f32, y: *const f32);
        pub fn bn_scale(n: u64, x: *mut f32, s: f32);
        pub fn bn_read_sum(n: u64, buf: *const u64, partial: *mut u64);
    }
}

/// `quantize_row_q8_K_ref` of every 256 values of `x` (`x.len()` a multiple of 256).
pub fn q8k_quantize(x: &[f32]) -> Vec<BlockQ8K> {
    assert_eq!(x.len() % QK_K, 0, "whole Q8_K blocks");
    let mut y = vec![BlockQ8K::default(); x.len() / QK_K];
    // SAFETY: `x` holds `y.len()` blocks of 256 floats; `y` has room for them.
    unsafe { ffi::bn_q8k_quantize(y.len() as u64, x.as_ptr(), y.as_mut_ptr()) };
    y
}

/// bitnet.cpp's `quantize_row_i8_s` of each of the `x.len() / cols` tokens: the quants, each
/// token's scale and quant sum.
pub fn i8s_quantize(x: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    assert!(cols > 0 && x.len() % cols == 0, "whole tokens");
    let n_tok = x.len() / cols;
    let (mut q, mut s, mut sums) = (vec![0i8; x.len()], vec![0f32; n_tok], vec![0i32; n_tok]);
    // SAFETY: every buffer holds `n_tok` tokens of `cols` (or one value per token).
    unsafe {
        ffi::bn_i8s_quantize(
            n_tok as u64,
            x.as_ptr(),
            cols as u64,
            q.as_mut_ptr(),
            s.as_mut_ptr(),
            sums.as_mut_ptr(),
        )
    };
    (q, s, sums)
}

fn ternary_shape(w: &[u8], rows: usize, a: &[BlockQ8K], tq1: bool) -> (usize, usize) {
    let bs = if tq1 { TQ1_0_BYTES } else { TQ2_0_BYTES };
    assert!(
        rows > 0 && w.len() % (rows * bs) == 0,
        "rows of whole blocks"
    );
    let nb = w.len() / (rows * bs);
    assert!(nb > 0 && a.len() % nb == 0, "whole tokens of Q8_K blocks");
    (nb, a.len() / nb)
}

/// A TQ2_0 (or, with `tq1`, TQ1_0) matrix of `rows` rows against the Q8_K blocks of
/// `a.len() / nb` tokens: `out[t·rows + r]`.
pub fn tq_matmul(w: &[u8], rows: usize, a: &[BlockQ8K], tq1: bool) -> Vec<f32> {
    let (nb, n_tok) = ternary_shape(w, rows, a, tq1);
    let mut out = vec![0f32; n_tok * rows];
    // SAFETY: `w` holds `rows` rows of `nb` blocks, `a` `n_tok` tokens of `nb` blocks, `out`
    // one value per token and row (checked above).
    unsafe {
        ffi::bn_tq_matmul(
            out.len() as u64,
            w.as_ptr(),
            a.as_ptr(),
            rows as u64,
            nb as u64,
            tq1 as i32,
            out.as_mut_ptr(),
        )
    };
    out
}

/// The exact integer lanes of [`tq_matmul`]: 8 per (token, row, block), in that order.
pub fn tq_lanes(w: &[u8], rows: usize, a: &[BlockQ8K], tq1: bool) -> Vec<i32> {
    let (nb, n_tok) = ternary_shape(w, rows, a, tq1);
    let mut lanes = vec![0i32; n_tok * rows * nb * 8];
    // SAFETY: as in `tq_matmul`; `lanes` has 8 values per (token, row, block).
    unsafe {
        ffi::bn_tq_lanes(
            (n_tok * rows * nb) as u64,
            w.as_ptr(),
            a.as_ptr(),
            rows as u64,
            nb as u64,
            tq1 as i32,
            lanes.as_mut_ptr(),
        )
    };
    lanes
}

/// An I2_S matrix (`rows` rows of `cols/4` code bytes; its scale `w_scale`) against int8
/// activations from [`i8s_quantize`]: the values `out[t·rows + r]` and their exact integer
/// parts `Σ code·q`.
pub fn i2s_matmul(
    w: &[u8],
    rows: usize,
    cols: usize,
    w_scale: f32,
    q: &[i8],
    scales: &[f32],
    sums: &[i32],
) -> (Vec<f32>, Vec<i32>) {
    assert!(
        cols > 0 && cols % 128 == 0,
        "I2_S rows are whole groups of 128"
    );
    assert!(w.len() >= rows * cols / 4, "rows × cols/4 code bytes");
    let n_tok = q.len() / cols;
    assert!(q.len() == n_tok * cols && scales.len() == n_tok && sums.len() == n_tok);
    let mut out = vec![0f32; n_tok * rows];
    let mut dots = vec![0i32; n_tok * rows];
    // SAFETY: lengths checked above.
    unsafe {
        ffi::bn_i2s_matmul(
            out.len() as u64,
            w.as_ptr(),
            q.as_ptr(),
            scales.as_ptr(),
            sums.as_ptr(),
            rows as u64,
            cols as u64,
            w_scale,
            out.as_mut_ptr(),
            dots.as_mut_ptr(),
        )
    };
    (out, dots)
}

/// An F16 (`f16`) or F32 matrix (`rows` rows of `cols`, file bytes) against `a.len() / cols`
/// tokens, in tinyBLAS's order (`lanes8`) or `ggml_vec_dot_f16`'s: `out[t·rows + r]`.
pub fn float_matmul(
    w: &[u8],
    rows: usize,
    cols: usize,
    f16: bool,
    lanes8: bool,
    a: &[f32],
) -> Vec<f32> {
    let es = if f16 { 2 } else { 4 };
    assert!(cols > 0 && w.len() == rows * cols * es && a.len() % cols == 0);
    let mut out = vec![0f32; a.len() / cols * rows];
    // SAFETY: lengths checked above.
    unsafe {
        ffi::bn_float_matmul(
            out.len() as u64,
            w.as_ptr(),
            a.as_ptr(),
            rows as u64,
            cols as u64,
            f16 as i32,
            lanes8 as i32,
            out.as_mut_ptr(),
        )
    };
    out
}

/// Each value rounded to F16 and back.
pub fn round_f16(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    // SAFETY: equal lengths.
    unsafe { ffi::bn_round_f16(x.len() as u64, x.as_ptr(), out.as_mut_ptr()) };
    out
}

/// Rows `tokens` of an F16 (`f16`) or F32 embedding of rows of `e` values.
pub fn embed(tokens: &[u32], emb: &[u8], e: usize, f16: bool) -> Vec<f32> {
    let row = e * if f16 { 2 } else { 4 };
    assert!(tokens.iter().all(|&t| (t as usize + 1) * row <= emb.len()));
    let mut out = vec![0f32; tokens.len() * e];
    // SAFETY: every token's row lies inside `emb` (checked above).
    unsafe {
        ffi::bn_embed(
            out.len() as u64,
            tokens.as_ptr(),
            emb.as_ptr(),
            e as u64,
            f16 as i32,
            out.as_mut_ptr(),
        )
    };
    out
}

/// RMSNorm of each row of `x` (rows of `w.len()`) times `w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let width = w.len();
    assert!(width > 0 && x.len() % width == 0);
    let rows = x.len() / width;
    let (mut scale, mut out) = (vec![0f32; rows], vec![0f32; x.len()]);
    // SAFETY: `x` and `out` hold `rows` rows of `width`; `scale` one value per row.
    unsafe {
        ffi::bn_rms_scale(
            rows as u64,
            x.as_ptr(),
            width as u64,
            eps,
            scale.as_mut_ptr(),
        );
        ffi::bn_rms_apply(
            x.len() as u64,
            x.as_ptr(),
            w.as_ptr(),
            width as u64,
            scale.as_ptr(),
            out.as_mut_ptr(),
        );
    }
    out
}

/// NEOX RoPE in place: `x` holds tokens of `n_heads` heads of `hd` values; `cs` holds, per
/// token, `half` (cos, sin) pairs.
pub fn rope_neox(x: &mut [f32], n_heads: usize, hd: usize, cs: &[(f32, f32)], half: usize) {
    assert!(half > 0 && 2 * half <= hd && x.len() % (n_heads * hd) == 0);
    let n_tok = x.len() / (n_heads * hd);
    assert_eq!(cs.len(), n_tok * half, "one angle table per token");
    let flat: Vec<f32> = cs.iter().flat_map(|&(c, s)| [c, s]).collect();
    // SAFETY: `x` holds `n_tok · n_heads` heads of `hd`, `flat` `n_tok · half` pairs.
    unsafe {
        ffi::bn_rope_neox(
            (n_tok * n_heads * half) as u64,
            x.as_mut_ptr(),
            n_heads as u64,
            hd as u64,
            half as u64,
            flat.as_ptr(),
        )
    };
}

/// The shape of one attention pass for [`attention`].
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_tok: usize,
    /// Positions already cached before this pass.
    pub p0: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub hd: usize,
    pub scale: f32,
    pub kq_lanes8: bool,
    pub kqv_lanes8: bool,
}

/// Attention of `n_tok` queries (`q`: tokens × heads × hd) against a position-major KV cache
/// (`kc`, `vc`: `p0 + n_tok` positions × kv heads × hd): the output (tokens × heads·hd) and the
/// probabilities (tokens × heads × `p0 + n_tok`, zero past each token's position).
pub fn attention(q: &[f32], kc: &[f32], vc: &[f32], s: AttnShape) -> (Vec<f32>, Vec<f32>) {
    let n_kv = s.p0 + s.n_tok;
    assert!(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0);
    assert_eq!(q.len(), s.n_tok * s.n_heads * s.hd);
    assert!(kc.len() >= n_kv * s.n_kv_heads * s.hd && vc.len() >= n_kv * s.n_kv_heads * s.hd);
    let mut p = vec![0f32; s.n_tok * s.n_heads * n_kv];
    let mut out = vec![0f32; s.n_tok * s.n_heads * s.hd];
    let u = |v: usize| v as u64;
    // SAFETY: lengths checked above.
    unsafe {
        ffi::bn_attn_scores(
            u(p.len()),
            q.as_ptr(),
            kc.as_ptr(),
            p.as_mut_ptr(),
            u(s.p0),
            u(s.n_heads),
            u(s.n_kv_heads),
            u(s.hd),
            u(n_kv),
            s.scale,
            s.kq_lanes8 as i32,
        );
        ffi::bn_attn_softmax(
            u(s.n_tok * s.n_heads),
            p.as_mut_ptr(),
            u(s.p0),
            u(s.n_heads),
            u(n_kv),
        );
        ffi::bn_attn_kqv(
            u(out.len()),
            p.as_ptr(),
            vc.as_ptr(),
            out.as_mut_ptr(),
            u(s.p0),
            u(s.n_heads),
            u(s.n_kv_heads),
            u(s.hd),
            u(n_kv),
            s.kqv_lanes8 as i32,
        );
    }
    (out, p)
}

/// `silu(gate)·up` over rows of `width` (ggml's SwiGLU).
pub fn swiglu(gate: &[f32], up: &[f32], width: usize) -> Vec<f32> {
    assert!(gate.len() == up.len() && width > 0);
    let mut out = vec![0f32; gate.len()];
    // SAFETY: equal lengths.
    unsafe {
        ffi::bn_swiglu(
            out.len() as u64,
            gate.as_ptr(),
            up.as_ptr(),
            width as u64,
            out.as_mut_ptr(),
        )
    };
    out
}

/// `relu(gate)²·up`.
pub fn relu2_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len());
    let mut out = vec![0f32; gate.len()];
    // SAFETY: equal lengths.
    unsafe {
        ffi::bn_relu2_mul(
            out.len() as u64,
            gate.as_ptr(),
            up.as_ptr(),
            out.as_mut_ptr(),
        )
    };
    out
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    // SAFETY: equal lengths.
    unsafe { ffi::bn_add(x.len() as u64, x.as_mut_ptr(), y.as_ptr()) };
}

/// `x *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    // SAFETY: `x.len()` items.
    unsafe { ffi::bn_scale(x.len() as u64, x.as_mut_ptr(), s) };
}

/// The wrapping sum of `buf` (the bandwidth kernel, one work item on the host).
pub fn read_sum(buf: &[u64]) -> u64 {
    let mut partial = [0u64; 1];
    // SAFETY: a one-thread launch writes `partial[0]` only.
    unsafe { ffi::bn_read_sum(buf.len() as u64, buf.as_ptr(), partial.as_mut_ptr()) };
    partial[0]
}
