//! x86-64 AVX-512 VNNI decode kernels: two ternary rows (TQ2_0, TQ1_0) against one token's Q8_K
//! activations, duplicated into both 256-bit halves of each vector so that one `vpdpbusd` forms
//! both rows' lanes. Every function computes exactly what its scalar specification in
//! [`super::scalar`] computes (the integer lanes are exact whatever instructions form them; the
//! float operations are the specification's, in its order). Checked by proptest against the
//! scalar kernels (`super::tests`).
//!
//! Callers must have checked the CPU features ([`super::Kernel::available`]); the functions are
//! `unsafe` for that reason only, and read nothing outside the slices they are given (lengths are
//! asserted on entry).

#![allow(clippy::missing_safety_doc)]
// Lane loops index several arrays in step, like the intrinsics they stand for.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::scalar::BlockQ8K;
use super::x86::{hsum8, prefetch_ahead, TQ1_BYTES, TQ2_BYTES};

/// One token's Q8_K block duplicated into both 256-bit halves for
/// [`tq2_0_q8k_dot_rows2_avx512vnni`]: eight 64-byte vectors (shift `l` of half `h`: the 32
/// activations at `128h+32l`, twice), the lane sums twice, and the block scale.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct DupBlock {
    qs: [[i8; 64]; 8],
    ysum: [i32; 16],
    d: f32,
}

/// Duplicate every block of `blocks` (any number of tokens, in order).
pub fn dup_for_tq2_0_avx512(blocks: &[BlockQ8K]) -> Vec<DupBlock> {
    blocks
        .iter()
        .map(|y| {
            let mut b = DupBlock {
                qs: [[0; 64]; 8],
                ysum: [0; 16],
                d: y.d,
            };
            for h in 0..2 {
                for l in 0..4 {
                    let o = 128 * h + 32 * l;
                    b.qs[4 * h + l][..32].copy_from_slice(&y.qs[o..o + 32]);
                    b.qs[4 * h + l][32..].copy_from_slice(&y.qs[o..o + 32]);
                }
            }
            for k in 0..8 {
                let s = y.bsums[2 * k] as i32 + y.bsums[2 * k + 1] as i32;
                b.ysum[k] = s;
                b.ysum[8 + k] = s;
            }
            b
        })
        .collect()
}

/// One block of two rows into their 8 float lanes each (row 0 in the low half): the exact
/// integer lanes `s` less the activations' lane sums, converted and accumulated by FMA with
/// `y.d · d_w` of each row (`scales`: each row's F16 scale bytes), as the one-row kernel does.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
unsafe fn accumulate_rows2(
    acc: __m512,
    s: __m512i,
    y: &DupBlock,
    scales: [*const u8; 2],
) -> __m512 {
    let s = _mm512_sub_epi32(s, _mm512_load_si512(y.ysum.as_ptr() as *const __m512i));
    let scale = |p: *const u8| u16::from_le_bytes([*p, *p.add(1)]) as i16;
    // d = y.d · d_w per row, each broadcast over its half.
    let dw = _mm_cvtph_ps(_mm_set_epi16(
        0,
        0,
        0,
        0,
        0,
        0,
        scale(scales[1]),
        scale(scales[0]),
    ));
    let dwd = _mm_mul_ps(dw, _mm_set1_ps(y.d));
    let d = _mm512_insertf32x8(
        _mm512_castps256_ps512(_mm256_broadcastss_ps(dwd)),
        _mm256_broadcastss_ps(_mm_movehdup_ps(dwd)),
        1,
    );
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc)
}

/// The two rows' results from their lanes (`hsum_float_8` of each half).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx2")]
unsafe fn hsum8_rows2(acc: __m512) -> [f32; 2] {
    [
        hsum8(_mm512_castps512_ps256(acc)),
        hsum8(_mm512_extractf32x8_ps(acc, 1)),
    ]
}

/// TQ2_0 × Q8_K for two rows against one token (decode), AVX-512 VNNI: the two rows' codes fill
/// the two 256-bit halves of each vector, so one `vpdpbusd` forms both rows' 8 lanes with no
/// folding. Each row's result is exactly the one-row kernel's.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn tq2_0_q8k_dot_rows2_avx512vnni(
    rows: [&[u8]; 2],
    a: &[DupBlock],
    ahead: usize,
) -> [f32; 2] {
    let nb = a.len();
    assert!(rows[0].len() == nb * TQ2_BYTES && rows[1].len() == nb * TQ2_BYTES);
    let m3 = _mm512_set1_epi8(3);
    let mut acc = _mm512_setzero_ps();
    for (b, y) in a.iter().enumerate() {
        let x0 = rows[0].as_ptr().add(b * TQ2_BYTES);
        let x1 = rows[1].as_ptr().add(b * TQ2_BYTES);
        prefetch_ahead(x0, ahead, 1);
        prefetch_ahead(x1, ahead, 1);
        let mut s = _mm512_setzero_si512();
        for h in 0..2 {
            let q = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256(x0.add(32 * h) as *const __m256i)),
                _mm256_loadu_si256(x1.add(32 * h) as *const __m256i),
                1,
            );
            let yq = &y.qs[4 * h..4 * h + 4];
            s = _mm512_dpbusd_epi32(
                s,
                _mm512_and_si512(q, m3),
                _mm512_load_si512(yq[0].as_ptr() as *const __m512i),
            );
            s = _mm512_dpbusd_epi32(
                s,
                _mm512_and_si512(_mm512_srli_epi16(q, 2), m3),
                _mm512_load_si512(yq[1].as_ptr() as *const __m512i),
            );
            s = _mm512_dpbusd_epi32(
                s,
                _mm512_and_si512(_mm512_srli_epi16(q, 4), m3),
                _mm512_load_si512(yq[2].as_ptr() as *const __m512i),
            );
            s = _mm512_dpbusd_epi32(
                s,
                _mm512_and_si512(_mm512_srli_epi16(q, 6), m3),
                _mm512_load_si512(yq[3].as_ptr() as *const __m512i),
            );
        }
        acc = accumulate_rows2(acc, s, y, [x0.add(64), x1.add(64)]);
    }
    hsum8_rows2(acc)
}

/// The two-row decode kernels over consecutive rows: `out[i]` gets row `i` of `rows` (rows of
/// `a.len()` blocks, `out.len()` of them, an even count) against one token. One call per span
/// keeps the per-pair dispatch out of the weight stream; each result is exactly the two-row
/// kernel's.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn ternary_q8k_dot_span_avx512vnni(
    tq2: bool,
    rows: &[u8],
    a: &[DupBlock],
    ahead: usize,
    out: &mut [f32],
) {
    let rb = a.len() * if tq2 { TQ2_BYTES } else { TQ1_BYTES };
    assert!(out.len() % 2 == 0 && rows.len() == out.len() * rb);
    for (o, pair) in out.chunks_exact_mut(2).zip(rows.chunks_exact(2 * rb)) {
        let (x0, x1) = pair.split_at(rb);
        let got = if tq2 {
            tq2_0_q8k_dot_rows2_avx512vnni([x0, x1], a, ahead)
        } else {
            tq1_0_q8k_dot_rows2_avx512vnni([x0, x1], a, ahead)
        };
        o.copy_from_slice(&got);
    }
}

/// `v · 9` per byte (mod 256), 512-bit.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn times9_512(v: __m512i) -> __m512i {
    _mm512_add_epi8(
        _mm512_and_si512(_mm512_slli_epi16(v, 3), _mm512_set1_epi8(-8)),
        v,
    )
}

/// [`super::x86::trits`], 512-bit.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn trits_512(v: __m512i) -> __m512i {
    let v = _mm512_subs_epu8(v, _mm512_set1_epi8(1));
    let v = _mm512_avg_epu8(v, _mm512_avg_epu8(v, _mm512_setzero_si512()));
    _mm512_and_si512(_mm512_srli_epi16(v, 6), _mm512_set1_epi8(3))
}

/// The qh trits' bytes of one TQ1_0 block: `qh[j]·3^l` at byte `4l + j`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tq1_0_qh_bytes(x: &[u8]) -> __m128i {
    let qh = u32::from_le_bytes([x[48], x[49], x[50], x[51]]);
    let h = _mm256_cvtepu8_epi16(_mm_set1_epi32(qh as i32));
    let h = _mm256_mullo_epi16(
        h,
        _mm256_set_epi16(27, 27, 27, 27, 9, 9, 9, 9, 3, 3, 3, 3, 1, 1, 1, 1),
    );
    let h = _mm256_and_si256(h, _mm256_set1_epi16(0xff));
    _mm_packus_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1))
}

/// [`super::x86::tq1_0_codes`] of two rows' blocks at once: vector `i` holds row 0's codes for activations
/// `32i..32i+32` in its low half and row 1's in its high half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2")]
unsafe fn tq1_0_codes2(x0: &[u8], x1: &[u8]) -> [__m512i; 8] {
    let a = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(x0.as_ptr() as *const __m256i)),
        _mm256_loadu_si256(x1.as_ptr() as *const __m256i),
        1,
    );
    let a3 = _mm512_add_epi8(a, _mm512_add_epi8(a, a));
    let a9 = times9_512(a);
    let a27 = times9_512(a3);
    let a81 = times9_512(a9);
    let b0 = _mm_loadu_si128(x0.as_ptr().add(32) as *const __m128i);
    let b1 = _mm_loadu_si128(x1.as_ptr().add(32) as *const __m128i);
    // 128-bit lanes: row 0's bytes 32..48 twice, then row 1's twice.
    let b = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_set_m128i(b0, b0)),
        _mm256_set_m128i(b1, b1),
        1,
    );
    let b3 = _mm512_add_epi8(b, _mm512_add_epi8(b, b));
    let b9 = times9_512(b);
    let b27 = times9_512(b3);
    let b81 = times9_512(b9);
    // Lanes 1 and 3 (dwords 4..8, 12..16) from the second operand.
    let b01 = _mm512_mask_blend_epi32(0xf0f0, b, b3);
    let b23 = _mm512_mask_blend_epi32(0xf0f0, b9, b27);
    let b4h = _mm512_inserti32x4(
        _mm512_inserti32x4(b81, tq1_0_qh_bytes(x0), 1),
        tq1_0_qh_bytes(x1),
        3,
    );
    [
        trits_512(a),
        trits_512(a3),
        trits_512(a9),
        trits_512(a27),
        trits_512(a81),
        trits_512(b01),
        trits_512(b23),
        trits_512(b4h),
    ]
}

/// TQ1_0 × Q8_K for two rows against one token (decode), AVX-512 VNNI, with the activations of
/// [`dup_for_tq2_0_avx512`] (the same duplicated layout: vector `i` is activations `32i..32i+32`
/// twice). Each row's result is exactly the one-row kernel's.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn tq1_0_q8k_dot_rows2_avx512vnni(
    rows: [&[u8]; 2],
    a: &[DupBlock],
    ahead: usize,
) -> [f32; 2] {
    let nb = a.len();
    assert!(rows[0].len() == nb * TQ1_BYTES && rows[1].len() == nb * TQ1_BYTES);
    let mut acc = _mm512_setzero_ps();
    for (b, y) in a.iter().enumerate() {
        let x0 = &rows[0][b * TQ1_BYTES..(b + 1) * TQ1_BYTES];
        let x1 = &rows[1][b * TQ1_BYTES..(b + 1) * TQ1_BYTES];
        prefetch_ahead(x0.as_ptr(), ahead, 1);
        prefetch_ahead(x1.as_ptr(), ahead, 1);
        let c = tq1_0_codes2(x0, x1);
        let mut s = _mm512_setzero_si512();
        for (ci, yq) in c.iter().zip(&y.qs) {
            s = _mm512_dpbusd_epi32(s, *ci, _mm512_load_si512(yq.as_ptr() as *const __m512i));
        }
        acc = accumulate_rows2(acc, s, y, [x0.as_ptr().add(52), x1.as_ptr().add(52)]);
    }
    hsum8_rows2(acc)
}
