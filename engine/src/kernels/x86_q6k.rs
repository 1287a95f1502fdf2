//! x86-64 kernel for Q6_K weights (the tied output `llama-quantize` writes for TQ1_0/TQ2_0
//! BitNet files) against Q8_K activations, AVX2: the integer lanes of ggml's AVX2
//! `ggml_vec_dot_q6_K_q8_K`, so each lane's sum, and with it the float accumulation, is
//! [`super::scalar::q6_k_q8k_dot_scalar`]'s; `kernels/tests.rs` checks it by proptest. The AVX2
//! and VNNI256 variants run it as it is, the AVX-512 variant compiled with its features (the
//! product's 8-lane order leaves wider vectors nothing to add).
//!
//! A block's 6-bit codes come in two halves of 128: `ql` bytes `0..32` hold elements `0..32`
//! (low nibble) and `64..96` (high nibble), bytes `32..64` elements `32..64` and `96..128`;
//! `qh` byte `l` holds the top two bits of elements `l`, `l+32`, `l+64`, `l+96`.

//! Callers must have checked the CPU features; the function is `unsafe` for that reason only
//! and reads nothing outside the slices it is given (lengths are asserted on entry).

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use super::scalar::{BlockQ8K, QK_K};
use super::x86::hsum8;
use super::x86_i2s::hsum_i32;
use crate::quant::{f16_to_f32, Q6_K_BYTES};

/// Group scales `2g` (first 8 of 16 i16 lanes) and `2g + 1` (last 8) of a block's 16.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scale_pair(scales: __m128i, g: usize) -> __m256i {
    let lo = 0x0101_0101_0101_0101u64.wrapping_mul(2 * g as u64);
    let hi = 0x0101_0101_0101_0101u64.wrapping_mul(2 * g as u64 + 1);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
        scales,
        _mm_set_epi64x(hi as i64, lo as i64),
    ))
}

/// Q6_K × Q8_K over one row (`row.len() / 210` blocks, as many as `a`).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn q6_k_q8k_dot_avx2(row: &[u8], a: &[BlockQ8K]) -> f32 {
    assert_eq!(row.len(), a.len() * Q6_K_BYTES);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in row.chunks_exact(Q6_K_BYTES).zip(a) {
        let d = y.d * f16_to_f32(u16::from_le_bytes([x[208], x[209]]));
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(d),
            _mm256_cvtepi32_ps(block_lanes(x, y)),
            acc,
        );
    }
    hsum8(acc)
}

/// [`super::scalar::q6_k_q8k_dot_tiled_scalar`]'s order (ggml's tiled K-quant matmul, 8 tokens
/// and more): each block's lanes summed to one exact integer `s`, then
/// `acc = fma(d_w·(f32)s, d_a, acc)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn q6_k_q8k_dot_tiled_avx2(row: &[u8], a: &[BlockQ8K]) -> f32 {
    assert_eq!(row.len(), a.len() * Q6_K_BYTES);
    let mut acc = 0f32;
    for (x, y) in row.chunks_exact(Q6_K_BYTES).zip(a) {
        let s = hsum_i32(block_lanes(x, y));
        let dw = f16_to_f32(u16::from_le_bytes([x[208], x[209]]));
        acc = (dw * s as f32).mul_add(y.d, acc);
    }
    acc
}

/// One block's 8 exact integer lanes of `ggml_vec_dot_q6_K_q8_K`: lane `k` holds
/// `Σ scale·code·q` over the elements whose index modulo 32 lies in `4k..4k+4`, less
/// `32·Σ scale·bsum` over groups `2k` and `2k+1`; their total is `Σ scale·(code − 32)·q`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block_lanes(x: &[u8], y: &BlockQ8K) -> __m256i {
    debug_assert_eq!(x.len(), Q6_K_BYTES);
    let m3 = _mm256_set1_epi8(3);
    let m15 = _mm256_set1_epi8(15);
    {
        let xp = x.as_ptr();
        let q8 = y.qs.as_ptr();
        // The codes' −32: 32 · Σ scale·bsum over groups 2k and 2k+1 in lane k.
        let q8sums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        let scales = _mm_loadu_si128(xp.add(192) as *const __m128i);
        let offset = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, _mm256_cvtepi8_epi16(scales)), 5);
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let ql = xp.add(64 * half);
            let bits1 = _mm256_loadu_si256(ql as *const __m256i);
            let bits2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let high = _mm256_loadu_si256(xp.add(128 + 32 * half) as *const __m256i);
            let h0 = _mm256_slli_epi16(_mm256_and_si256(high, m3), 4);
            let h1 = _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(12)), 2);
            let h2 = _mm256_and_si256(high, _mm256_set1_epi8(48));
            let h3 = _mm256_srli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(-64)), 2);
            let codes = [
                _mm256_or_si256(_mm256_and_si256(bits1, m15), h0),
                _mm256_or_si256(_mm256_and_si256(bits2, m15), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m15), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m15), h3),
            ];
            let mut p = [_mm256_setzero_si256(); 4];
            for (v, c) in codes.iter().enumerate() {
                let act = _mm256_loadu_si256(q8.add(128 * half + 32 * v) as *const __m256i);
                // Codes ≤ 63 against |q| ≤ 128: pairs stay within i16, no saturation.
                let p16 = _mm256_maddubs_epi16(*c, act);
                p[v] = _mm256_madd_epi16(scale_pair(scales, 4 * half + v), p16);
            }
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[0], p[1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[2], p[3]));
        }
        _mm256_sub_epi32(sumi, offset)
    }
}

/// Every row of `rows` (each `a.len()` blocks) against one token's blocks, in ggml's
/// `vec_dot` order or, with `tiled`, its tiled matmul's.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn q6_k_q8k_rows_avx2(rows: &[u8], a: &[BlockQ8K], tiled: bool, out: &mut [f32]) {
    q6_k_rows(rows, a, tiled, out)
}

/// [`q6_k_q8k_rows_avx2`]'s body compiled for the AVX-512 variant (the compiler may use the
/// wider register file and EVEX forms; the operations and their order are the same).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub unsafe fn q6_k_q8k_rows_avx512(rows: &[u8], a: &[BlockQ8K], tiled: bool, out: &mut [f32]) {
    q6_k_rows(rows, a, tiled, out)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn q6_k_rows(rows: &[u8], a: &[BlockQ8K], tiled: bool, out: &mut [f32]) {
    let rb = a.len() * Q6_K_BYTES;
    assert_eq!(rows.len(), rb * out.len());
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(rb.max(1))) {
        *o = if tiled {
            q6_k_q8k_dot_tiled_avx2(row, a)
        } else {
            q6_k_q8k_dot_avx2(row, a)
        };
    }
}

const _: () = assert!(QK_K == 256);
