//! Scalar kernels: the specification every other variant is tested against. Each follows what
//! llama.cpp's x86 AVX2 build (the reference this project pins, `.cargo/config.toml`) executes for
//! the product it names, including the order of every float operation, so that the engine's
//! products equal the reference's bit for bit (checked against ggml itself in
//! `harness/tests/kernels_ggml.rs`):
//!
//! - Q8_K activation quantization: `quantize_row_q8_K_ref` (round half to even via ggml's
//!   `nearest_int`, scale `-127/max` of the signed extreme).
//! - Ternary dot products (`ggml_vec_dot_tq{1,2}_0_q8_K`, AVX2): each block's products go to 8
//!   integer lanes, lane `k` holding the elements whose index modulo 32 lies in `4k..4k+4`, less
//!   the activations' sum over elements `32k..32k+32` (ggml folds the weights' `+1` offset in through
//!   `bsums`). The integer lanes are exact; each is converted to f32 and accumulated across blocks
//!   as `acc[k] = fma(lane, d_a·d_w, acc[k])`; the 8 accumulators are summed as `hsum_float_8`:
//!   `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
//! - Q6_K (a tied embedding `llama-quantize` wrote) against Q8_K (`ggml_vec_dot_q6_K_q8_K`,
//!   AVX2): the same 8 lanes of `Σ scale·code·q`, less `32·Σ scale·bsum` for the codes' offset
//!   ([`q6_k_q8k_dot_scalar`]). From 8 tokens on ggml takes its tiled K-quant matmul instead:
//!   one exact integer per block, `acc = fma(d_w·s, d_a, acc)` in block order
//!   ([`q6_k_q8k_dot_tiled_scalar`]).
//! - I2_S (bitnet.cpp's x86 layout) against its per-token int8 activations: `quantize_row_i8_s`,
//!   the integer `Σ code·q` of `ggml_vec_dot_i2_i8_s`, exact here (bitnet.cpp's AVX2 kernel
//!   adds 256 products per 16-bit lane before widening, so it wraps where such a partial sum
//!   passes ±32767, e.g. long runs of activations at ±127; typical activations stay far below), and
//!   `mul_mat`'s finish `((f32)Σcode·q − (f32)Σq) / s · scale` ([`i2_s_finish`]).
//! - F16 and F32 weight products: ggml sends a product of two or more tokens with a matrix whose
//!   row count divides by 4 through tinyBLAS (`llamafile_sgemm`): one 8-lane FMA accumulator over
//!   the row (a ragged tail zero-padded), summed as above ([`f16_dot_lanes8`]). Other products go
//!   through `ggml_vec_dot_f16`/`_f32`: four 8-lane
//!   FMA accumulators over steps of 32, reduced `(a0+a2)+(a1+a3)`, then the 8 lanes as
//!   `(l0+l4)+(l1+l5) + ((l2+l6)+(l3+l7))` (`_mm_hadd_ps` twice), and the elements past the last
//!   full step added one by one (in f64 for F16, in f32 for F32) ([`f16_dot_steps32`]). F16
//!   activations are the f32 ones rounded to F16 first, as ggml converts them to the weights'
//!   `vec_dot_type`.

// The loops index like ggml's C so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use crate::quant::f16_to_f32;

/// Elements per Q8_K block.
pub const QK_K: usize = 256;

/// `block_q8_K`: f32 scale, 256 int8 quants, 16 partial sums of 16 quants.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// ggml's `nearest_int`: round to nearest, ties to even, through the float mantissa (valid for
/// magnitudes up to 2^22, as ggml asserts). Also the Q6_K quantizer's ([`crate::quant`]).
#[inline]
pub(crate) fn ggml_nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// [`ggml_nearest_int`] as the Q8_K quantizer rounds (where the planted rounding bug can live).
#[inline]
fn nearest_int(v: f32) -> i32 {
    if crate::planted::on("q8k_round_half_away") {
        return v.round() as i32;
    }
    ggml_nearest_int(v)
}

/// `quantize_row_q8_K_ref` for one row (`x.len()` a multiple of 256).
pub fn quantize_q8k(x: &[f32], out: &mut Vec<BlockQ8K>) {
    out.clear();
    for block in x.chunks_exact(QK_K) {
        out.push(q8k_block(block, block_amax(block)));
    }
}

/// A block's largest magnitude, NaNs ignored (0 when every value is 0 or NaN).
pub fn block_amax(block: &[f32]) -> f32 {
    block.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// One block of `quantize_row_q8_K_ref` given its largest magnitude `amax` ([`block_amax`]). Its
/// element loops are plain enough for the compiler to vectorise, exactly (the same operations
/// on each element): the x86 quantizers compile it again with their features.
#[inline(always)]
pub fn q8k_block(block: &[f32], amax: f32) -> BlockQ8K {
    // ggml keeps the first value whose magnitude beats every earlier one: the first value of the
    // largest magnitude (NaNs never win).
    let max = if amax > 0.0 {
        *block
            .iter()
            .find(|v| v.abs() == amax)
            .expect("amax is one of the magnitudes")
    } else {
        0.0
    };
    let mut y = BlockQ8K::default();
    if amax != 0.0 {
        let iscale = if crate::planted::on("q8k_scale_128") {
            -128.0f32 / max
        } else {
            -127.0f32 / max
        };
        for (q, &v) in y.qs.iter_mut().zip(block) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, chunk) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *s = chunk.iter().map(|&q| q as i16).sum();
        }
        y.d = 1.0 / iscale;
    }
    y
}

/// `hsum_float_8`: the 8 lanes summed `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
#[inline]
pub fn hsum8(a: [f32; 8]) -> f32 {
    let r = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// The 8 lanes summed as two `_mm_hadd_ps` do (`GGML_F32x8_REDUCE`'s tail).
#[inline]
pub fn hadd8(a: [f32; 8]) -> f32 {
    let t = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// Accumulate one block's integer lanes into the float lanes: `acc[k] = fma(lane_k, d, acc[k])`,
/// after subtracting the activations' sums over elements `32k..32k+32` (the weights' `+1`).
#[inline]
pub fn accumulate_block(acc: &mut [f32; 8], lanes: &[i32; 8], y: &BlockQ8K, dw: f32) {
    let d = y.d * dw;
    for k in 0..8 {
        let lane = lanes[k] - (y.bsums[2 * k] as i32 + y.bsums[2 * k + 1] as i32);
        acc[k] = (lane as f32).mul_add(d, acc[k]);
    }
}

/// TQ2_0 block's weight at element `e` plus one (0, 1 or 2): element `e` of a block is bits
/// `2l..2l+2` of byte `32·(e/128) + e%32`, with `l = (e%128)/32`.
#[inline]
pub fn tq2_0_code(qs: &[u8], e: usize) -> u8 {
    (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3
}

/// A ternary row of blocks of `block` bytes (codes, then the F16 scale) against Q8_K blocks,
/// `code(block, e)` giving element `e`'s weight plus one: 8 exact lanes per block, accumulated
/// as [`accumulate_block`] and summed as [`hsum8`].
fn ternary_dot(row: &[u8], a: &[BlockQ8K], block: usize, code: fn(&[u8], usize) -> u8) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in row.chunks_exact(block).zip(a) {
        let mut lanes = [0i32; 8];
        for e in 0..QK_K {
            lanes[(e % 32) / 4] += code(x, e) as i32 * y.qs[e] as i32;
        }
        let dw = f16_to_f32(u16::from_le_bytes([x[block - 2], x[block - 1]]));
        accumulate_block(&mut acc, &lanes, y, dw);
    }
    hsum8(acc)
}

/// TQ2_0 × Q8_K over one row of `row.len()/66` blocks.
pub fn tq2_0_q8k_dot_scalar(row: &[u8], a: &[BlockQ8K]) -> f32 {
    ternary_dot(row, a, 66, tq2_0_code)
}

/// Q6_K × Q8_K over one row of `row.len()/210` blocks (`ggml_vec_dot_q6_K_q8_K`, AVX2): lane `k`
/// of a block holds `Σ scale·code·q` over the elements whose index modulo 32 lies in `4k..4k+4`
/// (codes 0..63, unsigned), less `32·Σ scale·bsum` over the activations' sums of groups `2k` and
/// `2k+1` (ggml folds the codes' −32 offset in through `bsums`); accumulated as
/// [`accumulate_block`]'s `fma` with `d_a·d_w` and summed as [`hsum8`].
pub fn q6_k_q8k_dot_scalar(row: &[u8], a: &[BlockQ8K]) -> f32 {
    use crate::quant::{q6_k_codes, q6_k_d, q6_k_scales, Q6_K_BYTES};
    let mut acc = [0f32; 8];
    for (x, y) in row.chunks_exact(Q6_K_BYTES).zip(a) {
        let (codes, sc) = (q6_k_codes(x), q6_k_scales(x));
        let mut lanes = [0i32; 8];
        for e in 0..QK_K {
            lanes[(e % 32) / 4] += sc[e / 16] as i32 * codes[e] as i32 * y.qs[e] as i32;
        }
        let d = y.d * q6_k_d(x);
        for k in 0..8 {
            let offset = y.bsums[2 * k] as i32 * sc[2 * k] as i32
                + y.bsums[2 * k + 1] as i32 * sc[2 * k + 1] as i32;
            acc[k] = d.mul_add((lanes[k] - 32 * offset) as f32, acc[k]);
        }
    }
    hsum8(acc)
}

/// From this many tokens on, ggml computes a Q6_K product with its tiled K-quant matmul
/// (`ggml-cpu/tiled`, `ggml_tiled_min_batch`) instead of `ggml_vec_dot_q6_K_q8_K`.
pub const Q6_K_TILED_MIN_TOKENS: usize = 8;

/// Q6_K × Q8_K as ggml's tiled K-quant matmul sums it (AVX2 + FMA build,
/// `tiled_run_microtile_avx2`): per block the exact integer `s = Σ scale·(code − 32)·q`, then
/// `acc = fma(d_w·(f32)s, d_a, acc)` block after block from zero.
pub fn q6_k_q8k_dot_tiled_scalar(row: &[u8], a: &[BlockQ8K]) -> f32 {
    use crate::quant::{q6_k_codes, q6_k_d, q6_k_scales, Q6_K_BYTES};
    let mut acc = 0f32;
    for (x, y) in row.chunks_exact(Q6_K_BYTES).zip(a) {
        let (codes, sc) = (q6_k_codes(x), q6_k_scales(x));
        let s: i32 = (0..QK_K)
            .map(|e| sc[e / 16] as i32 * (codes[e] as i32 - 32) * y.qs[e] as i32)
            .sum();
        acc = (q6_k_d(x) * s as f32).mul_add(y.d, acc);
    }
    acc
}

/// One trit of a TQ1_0 byte plus one (0, 1 or 2): `((uint8)(q · 3^l) · 3) >> 8`.
#[inline]
pub fn trit(q: u8, pow3: u8) -> u8 {
    ((q.wrapping_mul(pow3) as u16 * 3) >> 8) as u8
}

/// TQ1_0 block's weight at element `e` plus one: elements `0..160` are trit `e/32` of byte
/// `e%32`; `160..240` trit `(e-160)/16` of byte `32 + (e-160)%16`; `240..256` trit `(e-240)/4` of
/// byte `48 + (e-240)%4` (`qh`).
#[inline]
pub fn tq1_0_code(x: &[u8], e: usize) -> u8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    match e {
        0..160 => trit(x[e % 32], POW3[e / 32]),
        160..240 => trit(x[32 + (e - 160) % 16], POW3[(e - 160) / 16]),
        _ => trit(x[48 + (e - 240) % 4], POW3[(e - 240) / 4]),
    }
}

/// TQ1_0 × Q8_K over one row of `row.len()/54` blocks.
pub fn tq1_0_q8k_dot_scalar(row: &[u8], a: &[BlockQ8K]) -> f32 {
    ternary_dot(row, a, 54, tq1_0_code)
}

/// Bytes of a TQ1_0 block (48 base-3 code bytes, 4 `qh` bytes, the F16 scale) and of a TQ2_0
/// block (64 bytes of 2-bit codes, the F16 scale).
pub const TQ1_0_BYTES: usize = 54;
pub const TQ2_0_BYTES: usize = 66;

/// The five trits (plus one) of every byte value, as [`trit`] reads them.
const TRITS: [[u8; 5]; 256] = {
    let mut t = [[0u8; 5]; 256];
    let mut q = 0;
    while q < 256 {
        let mut l = 0;
        let mut pow3: u8 = 1;
        while l < 5 {
            t[q][l] = (((q as u8).wrapping_mul(pow3) as u16 * 3) >> 8) as u8;
            pow3 = pow3.wrapping_mul(3);
            l += 1;
        }
        q += 1;
    }
    t
};

/// TQ1_0 blocks rewritten as TQ2_0 blocks with the same weights and scales: element `e` of each
/// block gets code [`tq1_0_code`]`(e)` at its TQ2_0 place. A TQ2_0 product over the result equals
/// the TQ1_0 product over `row` bit for bit: both read each element's code into the same lane
/// (`e % 32 / 4`) and finish the block the same way (`ternary_dot`). The engine reads TQ1_0
/// weights this way on x86, where the 2-bit codes unpack several times faster than base 3.
pub fn tq1_0_to_tq2_0(data: &[u8]) -> Vec<u8> {
    assert_eq!(data.len() % TQ1_0_BYTES, 0, "whole TQ1_0 blocks");
    let mut out = vec![0u8; data.len() / TQ1_0_BYTES * TQ2_0_BYTES];
    for (x, y) in data
        .chunks_exact(TQ1_0_BYTES)
        .zip(out.chunks_exact_mut(TQ2_0_BYTES))
    {
        let mut put = |e: usize, code: u8| {
            y[32 * (e / 128) + e % 32] |= code << (2 * ((e % 128) / 32));
        };
        for j in 0..32 {
            for (l, &c) in TRITS[x[j] as usize].iter().enumerate() {
                put(32 * l + j, c);
            }
        }
        for j in 0..16 {
            for (l, &c) in TRITS[x[32 + j] as usize].iter().enumerate() {
                put(160 + 16 * l + j, c);
            }
        }
        for j in 0..4 {
            for (l, &c) in TRITS[x[48 + j] as usize][..4].iter().enumerate() {
                put(240 + 4 * l + j, c);
            }
        }
        y[64..].copy_from_slice(&x[52..]);
    }
    out
}

/// Elements per I2_S packing group (bitnet.cpp's x86 `QK_I2_S`).
pub const QK_I2_S: usize = 128;

/// bitnet.cpp's `quantize_row_i8_s` for one token: one scale per token,
/// `s = (float)(127 / max(1e-5, max |x|))` with the maximum taken in double,
/// `q = clamp(nearest_int(x·s), −128, 127)` (`x·s` in f32, ties to even), and the exact sum of the
/// quants, which the product subtracts to undo the weights' `+1` offset. Returns `(s, Σq)`.
pub fn quantize_i8s(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert_eq!(x.len(), q.len());
    let mut max = 0.00001f64;
    for &v in x {
        let a = (v as f64).abs();
        // C's `MAX(max, a)`: `max > a ? max : a`.
        max = if max > a { max } else { a };
    }
    let s = (127.0 / max) as f32;
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        let n = nearest_int(v * s).clamp(-128, 127);
        sum += n;
        *o = n as i8;
    }
    (s, sum)
}

/// I2_S weight at element `e` of a row plus one (0, 1 or 2): element `e` is bits
/// `6−2l..8−2l` of byte `32·(e/128) + e%32`, with `l = (e%128)/32`.
#[inline]
pub fn i2_s_code(row: &[u8], e: usize) -> u8 {
    (row[32 * (e / QK_I2_S) + e % 32] >> (6 - 2 * ((e % QK_I2_S) / 32))) & 3
}

/// `Σ code·q` over one I2_S row (`ggml_vec_dot_i2_i8_s`'s integer result), exact in i32.
pub fn i2_s_i8_dot_scalar(row: &[u8], q: &[i8]) -> i32 {
    (0..q.len())
        .map(|e| i2_s_code(row, e) as i32 * q[e] as i32)
        .sum()
}

/// The product's value from its integer parts, as bitnet.cpp's `mul_mat` finishes it:
/// `((float)Σcode·q − (float)Σq) / s · scale`, each step in f32.
#[inline]
pub fn i2_s_finish(dot: i32, sum: i32, s: f32, w_scale: f32) -> f32 {
    (dot as f32 - sum as f32) / s * w_scale
}

/// Weights of an F16 or F32 row, read as f32.
pub trait FloatRow {
    fn n_elems(&self) -> usize;
    fn at(&self, i: usize) -> f32;
}

/// An F16 row in file bytes.
pub struct F16Bytes<'a>(pub &'a [u8]);
/// An F32 row in file bytes.
pub struct F32Bytes<'a>(pub &'a [u8]);

impl FloatRow for F16Bytes<'_> {
    fn n_elems(&self) -> usize {
        self.0.len() / 2
    }
    fn at(&self, i: usize) -> f32 {
        f16_to_f32(u16::from_le_bytes([self.0[2 * i], self.0[2 * i + 1]]))
    }
}

impl FloatRow for F32Bytes<'_> {
    fn n_elems(&self) -> usize {
        self.0.len() / 4
    }
    fn at(&self, i: usize) -> f32 {
        f32::from_le_bytes(self.0[4 * i..4 * i + 4].try_into().unwrap())
    }
}

/// tinyBLAS order: one 8-lane FMA accumulator over the row, a ragged tail as a zero-padded step,
/// summed as [`hsum8`]. `a` holds the activations as f32 (F16-rounded ones for F16 weights).
pub fn f16_dot_lanes8(w: &impl FloatRow, a: &[f32]) -> f32 {
    let n = w.n_elems();
    let mut acc = [0f32; 8];
    let mut i = 0;
    while i < n {
        for l in 0..8 {
            let (x, y) = if i + l < n {
                (w.at(i + l), a[i + l])
            } else {
                (0.0, 0.0)
            };
            acc[l] = x.mul_add(y, acc[l]);
        }
        i += 8;
    }
    hsum8(acc)
}

/// `ggml_vec_dot_f16`/`_f32` order (AVX2): four 8-lane FMA accumulators over steps of 32, reduced
/// `(a0+a2)+(a1+a3)` and [`hadd8`]; the remaining elements' f32 products added one by one, in f64
/// (`wide_tail`, F16) or in f32 (F32, [`super::ggml_math::f32_tail`]).
pub fn f16_dot_steps32(w: &impl FloatRow, a: &[f32], wide_tail: bool) -> f32 {
    let n = w.n_elems();
    let np = n & !31;
    let mut acc = [[0f32; 8]; 4];
    for i in (0..np).step_by(32) {
        for (j, accj) in acc.iter_mut().enumerate() {
            for l in 0..8 {
                let e = i + 8 * j + l;
                accj[l] = w.at(e).mul_add(a[e], accj[l]);
            }
        }
    }
    let mut r = [0f32; 8];
    for l in 0..8 {
        r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let head = hadd8(r);
    if wide_tail {
        let mut sum = head as f64;
        for e in np..n {
            sum += (w.at(e) * a[e]) as f64;
        }
        sum as f32
    } else {
        super::ggml_math::f32_tail(head, np, n, |e| (w.at(e), a[e]))
    }
}

/// Whether ggml takes tinyBLAS's order for a product of `n_tok` tokens with a float matrix of
/// `rows` rows (`llamafile_sgemm` declines single tokens and row counts not divisible by 4).
pub fn tiny_blas_order(rows: usize, n_tok: usize) -> bool {
    n_tok >= 2 && rows % 4 == 0
}

/// The order ggml uses for a product of `n_tok` tokens with a float matrix of `rows` rows.
pub fn float_dot(w: &impl FloatRow, a: &[f32], rows: usize, n_tok: usize, wide_tail: bool) -> f32 {
    if tiny_blas_order(rows, n_tok) {
        f16_dot_lanes8(w, a)
    } else {
        f16_dot_steps32(w, a, wide_tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;
    use crate::quant::{dequantize, quantize};
    use proptest::prelude::*;

    /// Dequantize the weights and recompute the lanes from their definition: lane `k` holds
    /// `(t+1)·y` over the elements whose index modulo 32 is in `4k..4k+4`, less `y` summed over
    /// elements `32k..32k+32`. The kernels must equal this exactly.
    fn reference_dot(ty: GgmlType, row: &[u8], a: &[BlockQ8K], n: usize) -> f32 {
        let w = dequantize(ty, row, n).unwrap();
        let bs = ty.type_size();
        let mut acc = [0f32; 8];
        for (b, y) in a.iter().enumerate() {
            let dw = f16_to_f32(u16::from_le_bytes([
                row[b * bs + bs - 2],
                row[b * bs + bs - 1],
            ]));
            let mut lanes = [0i64; 8];
            for e in 0..QK_K {
                let t = if dw == 0.0 { 0.0 } else { w[b * QK_K + e] / dw };
                lanes[(e % 32) / 4] += (t as i64 + 1) * y.qs[e] as i64;
                lanes[e / 32] -= y.qs[e] as i64;
            }
            for k in 0..8 {
                acc[k] = (lanes[k] as f32).mul_add(y.d * dw, acc[k]);
            }
        }
        let r: Vec<f32> = (0..4).map(|k| acc[k] + acc[k + 4]).collect();
        (r[0] + r[2]) + (r[1] + r[3])
    }

    #[test]
    fn q8k_hand_worked() {
        // max = -2 (largest magnitude, negative): iscale = 63.5, d = 1/63.5.
        let mut x = vec![0f32; 256];
        x[0] = -2.0;
        x[1] = 1.0;
        x[2] = 0.5 / 63.5; // 0.5 after scaling: ties to even -> 0
        x[3] = 1.5 / 63.5; // 1.5 -> 2
        let mut q = Vec::new();
        quantize_q8k(&x, &mut q);
        assert_eq!(q[0].qs[..4], [-127, 64, 0, 2]);
        assert_eq!(q[0].d, 1.0 / 63.5);
        assert_eq!(q[0].bsums[0], -127 + 64 + 2);
        let mut z = Vec::new();
        quantize_q8k(&[0.0; 256], &mut z);
        assert_eq!(z[0], BlockQ8K::default());
    }

    proptest! {
        #[test]
        fn ternary_dots_equal_the_dequantized_reference(
            seed in any::<u64>(), blocks in 1usize..4, scale in 0.001f32..4.0, tq1 in any::<bool>()
        ) {
            let n = blocks * QK_K;
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1); (s >> 33) as u32 };
            let w: Vec<f32> = (0..n).map(|_| ((next() % 3) as f32 - 1.0) * scale).collect();
            let x: Vec<f32> = (0..n).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let ty = if tq1 { GgmlType::TQ1_0 } else { GgmlType::TQ2_0 };
            let row = quantize(ty, &w).unwrap();
            let mut a = Vec::new();
            quantize_q8k(&x, &mut a);
            let got = if tq1 { tq1_0_q8k_dot_scalar(&row, &a) } else { tq2_0_q8k_dot_scalar(&row, &a) };
            prop_assert_eq!(got.to_bits(), reference_dot(ty, &row, &a, n).to_bits());
        }
    }

    #[test]
    fn edge_blocks_all_minus_one_zero_plus_one() {
        for v in [-1.0f32, 0.0, 1.0] {
            for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
                let row = quantize(ty, &[v; 512]).unwrap();
                let mut a = Vec::new();
                quantize_q8k(&[1.0; 512], &mut a); // every quant -127, d = -1/127
                let got = if ty == GgmlType::TQ1_0 {
                    tq1_0_q8k_dot_scalar(&row, &a)
                } else {
                    tq2_0_q8k_dot_scalar(&row, &a)
                };
                // Σ v·1 over 512 elements: exactly v·512 up to the scale's rounding.
                assert!((got - v * 512.0).abs() <= 512.0 * 1e-6, "{ty} {v}: {got}");
            }
        }
    }
}
