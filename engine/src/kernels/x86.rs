//! x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 (F, BW, VL, DQ, VNNI). Every function computes
//! exactly what its scalar specification in [`super::scalar`] computes: the integer lanes are exact
//! whatever instructions form them, and the float operations (FMA into 8 lanes, the final
//! horizontal sums) are the specification's, in its order. Checked by proptest against the scalar
//! kernels (`super::tests`).
//!
//! Callers must have checked the CPU features ([`super::Kernel::available`]); the functions are
//! `unsafe` for that reason only, and read nothing outside the slices they are given (lengths are
//! asserted on entry).

#![allow(clippy::missing_safety_doc)]
// Lane loops index several arrays in step, like the intrinsics they stand for.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::scalar::{BlockQ8K, QK_K};

pub(super) const TQ2_BYTES: usize = 66;
/// How far ahead of the block being read the ternary kernels prefetch (bytes), unless a tuned
/// plan says otherwise (decode products: [`super::plan::tune`] times several distances).
pub(super) const PREFETCH: usize = 2048;
pub(super) const TQ1_BYTES: usize = 54;
/// How far ahead the two-row decode kernel prefetches (bytes): its rows are short (a few hundred
/// bytes), so this reaches several row pairs ahead; 8 KiB streamed from memory faster than 2 KiB
/// in side-by-side runs (7 of 8 rounds).
pub(super) const PREFETCH_ROWS2: usize = 8192;

/// Ask for the cache line holding `p` (a hint: never faults, whatever the address, and changes
/// no result).
#[inline(always)]
pub fn prefetch_line(p: *const f32) {
    // SAFETY: a prefetch reads nothing the program sees and cannot fault, even for an address
    // outside every allocation; SSE is part of x86-64.
    unsafe { _mm_prefetch(p as *const i8, _MM_HINT_T0) }
}

/// Prefetch the cache lines `ahead` and `ahead + 64` bytes past `p` (`lines` of them, 1 or 2);
/// nothing when `ahead` is 0 (a plan that measured software prefetch as slower turns it off).
/// A hint: never faults, whatever the address, and changes no result.
#[inline(always)]
pub(super) fn prefetch_ahead(p: *const u8, ahead: usize, lines: usize) {
    if ahead != 0 {
        for l in 0..lines {
            prefetch_line(p.wrapping_add(ahead + 64 * l) as *const f32);
        }
    }
}

/// A block's F16 scale as f32, converted in-register (F16C; exact, as every F16 is an f32).
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn f16_scale(bytes: &[u8]) -> f32 {
    let h = u16::from_le_bytes([bytes[0], bytes[1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// `hsum_float_8`, as the specification's [`super::scalar::hsum8`].
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn hsum8(x: __m256) -> f32 {
    let mut r = _mm256_extractf128_ps(x, 1);
    r = _mm_add_ps(r, _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// The activations' sums over elements `32k..32k+32`, one per lane (from `bsums`).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn lane_ysums(y: &BlockQ8K) -> __m256i {
    let b = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    _mm256_madd_epi16(b, _mm256_set1_epi16(1))
}

/// One block into the 8 float lanes: `acc + (lanes − the activations' lane sums)·(y.d·d_w)`,
/// fused, as the specification's `accumulate_block`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn accumulate_block(
    acc: __m256,
    lanes: __m256i,
    y: &BlockQ8K,
    dw: f32,
) -> __m256 {
    let lanes = _mm256_sub_epi32(lanes, lane_ysums(y));
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(y.d * dw), acc)
}

/// [`accumulate_block`] from the block's 16-bit lane halves `s` (`vpmaddubsw` products summed in
/// 16 bits), as ggml's AVX2 ternary products finish a block: `bsums` subtracted in 16 bits, then
/// one `vpmaddwd` by ones. The integers are those of `madd(s) − madd(bsums)` (a 16-bit lane of `s`
/// sums at most eight `vpmaddubsw` pairs, 8·2·3·128 = 6144 in magnitude, and a `bsums` of a
/// quantized block at most 16·128, so nothing wraps), with one multiply instead of two.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn accumulate_block_i16(
    acc: __m256,
    s: __m256i,
    y: &BlockQ8K,
    dw: f32,
) -> __m256 {
    let b = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    let lanes = _mm256_madd_epi16(_mm256_sub_epi16(s, b), _mm256_set1_epi16(1));
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(y.d * dw), acc)
}

/// TQ2_0 × Q8_K, AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tq2_0_q8k_dot_avx2(row: &[u8], a: &[BlockQ8K], ahead: usize) -> f32 {
    assert_eq!(row.len(), a.len() * TQ2_BYTES);
    let m3 = _mm256_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in row.chunks_exact(TQ2_BYTES).zip(a) {
        prefetch_ahead(x.as_ptr(), ahead, 2);
        let mut s0 = _mm256_setzero_si256();
        let mut s1 = _mm256_setzero_si256();
        for j in [0usize, 32] {
            let q = _mm256_loadu_si256(x.as_ptr().add(j) as *const __m256i);
            let q0 = _mm256_and_si256(q, m3);
            let q1 = _mm256_and_si256(_mm256_srli_epi16(q, 2), m3);
            let q2 = _mm256_and_si256(_mm256_srli_epi16(q, 4), m3);
            let q3 = _mm256_and_si256(_mm256_srli_epi16(q, 6), m3);
            let yp = y.qs.as_ptr().add(4 * j);
            let p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256(yp as *const __m256i));
            let p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256(yp.add(32) as *const __m256i));
            let p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256(yp.add(64) as *const __m256i));
            let p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256(yp.add(96) as *const __m256i));
            s0 = _mm256_add_epi16(s0, _mm256_add_epi16(p0, p1));
            s1 = _mm256_add_epi16(s1, _mm256_add_epi16(p2, p3));
        }
        // 16-bit sums cannot overflow: at most 8 pairs of 2·127 per lane.
        acc = accumulate_block_i16(acc, _mm256_add_epi16(s0, s1), y, f16_scale(&x[64..]));
    }
    hsum8(acc)
}

/// [`tq2_0_q8k_dot_avx2`] over every row of `rows` (`out.len()` rows of `a.len()` blocks), two
/// rows per pass sharing each activation load (decode): one call per span instead of one per
/// row. Each row's result is the one-row kernel's (the same exact 16-bit lane sums, the same
/// block finish); an odd last row goes through the one-row kernel.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tq2_0_q8k_dot_span_avx2(rows: &[u8], a: &[BlockQ8K], ahead: usize, out: &mut [f32]) {
    let rb = a.len() * TQ2_BYTES;
    assert_eq!(rows.len(), out.len() * rb);
    let m3 = _mm256_set1_epi8(3);
    let shifts = [0, 2, 4, 6].map(|n| _mm_cvtsi32_si128(n));
    let pairs = out.len() / 2;
    for p in 0..pairs {
        let (x0, x1) = rows[2 * p * rb..(2 * p + 2) * rb].split_at(rb);
        let mut acc = [_mm256_setzero_ps(); 2];
        for (b, y) in a.iter().enumerate() {
            let xs = [&x0[b * TQ2_BYTES..], &x1[b * TQ2_BYTES..]];
            prefetch_ahead(xs[0].as_ptr(), ahead, 2);
            prefetch_ahead(xs[1].as_ptr(), ahead, 2);
            let mut s = [_mm256_setzero_si256(); 2];
            for j in [0usize, 32] {
                let q = xs.map(|x| _mm256_loadu_si256(x.as_ptr().add(j) as *const __m256i));
                let yp = y.qs.as_ptr().add(4 * j);
                for (k, shift) in shifts.iter().enumerate() {
                    let yk = _mm256_loadu_si256(yp.add(32 * k) as *const __m256i);
                    for r in 0..2 {
                        let c = _mm256_and_si256(_mm256_srl_epi16(q[r], *shift), m3);
                        s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(c, yk));
                    }
                }
            }
            for r in 0..2 {
                acc[r] = accumulate_block_i16(acc[r], s[r], y, f16_scale(&xs[r][64..]));
            }
        }
        out[2 * p] = hsum8(acc[0]);
        out[2 * p + 1] = if crate::planted::on("simd_decode_pair_lane_order") {
            // Planted: the second row's lanes summed in order, not ggml's pairwise tree.
            let lanes: [f32; 8] = std::mem::transmute(acc[1]);
            lanes.iter().sum()
        } else {
            hsum8(acc[1])
        };
    }
    if out.len() % 2 == 1 {
        let last = out.len() - 1;
        out[last] = tq2_0_q8k_dot_avx2(&rows[last * rb..], a, ahead);
    }
}

/// [`tq2_0_q8k_dot_avx2`] for `T` tokens at once (prefill): each block's codes are unpacked once
/// and paired with every token's activations. Each token's result is the one-token kernel's: the
/// same exact 16-bit lane sums (added in another grouping, which integers do not notice; at most
/// eight products of 3·128 per lane), the same block finish and the same lane reduction.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tq2_0_q8k_dot_tokens_avx2<const T: usize>(
    row: &[u8],
    a: [&[BlockQ8K]; T],
) -> [f32; T] {
    let nb = row.len() / TQ2_BYTES;
    assert_eq!(row.len(), nb * TQ2_BYTES);
    for at in &a {
        assert_eq!(at.len(), nb);
    }
    let m3 = _mm256_set1_epi8(3);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let x = &row[b * TQ2_BYTES..(b + 1) * TQ2_BYTES];
        let mut s = [_mm256_setzero_si256(); T];
        for j in [0usize, 32] {
            let q = _mm256_loadu_si256(x.as_ptr().add(j) as *const __m256i);
            let c = [
                _mm256_and_si256(q, m3),
                _mm256_and_si256(_mm256_srli_epi16(q, 2), m3),
                _mm256_and_si256(_mm256_srli_epi16(q, 4), m3),
                _mm256_and_si256(_mm256_srli_epi16(q, 6), m3),
            ];
            for (st, at) in s.iter_mut().zip(&a) {
                let yp = at[b].qs.as_ptr().add(4 * j);
                let y = |k: usize| _mm256_loadu_si256(yp.add(32 * k) as *const __m256i);
                let p01 = _mm256_add_epi16(
                    _mm256_maddubs_epi16(c[0], y(0)),
                    _mm256_maddubs_epi16(c[1], y(1)),
                );
                let p23 = _mm256_add_epi16(
                    _mm256_maddubs_epi16(c[2], y(2)),
                    _mm256_maddubs_epi16(c[3], y(3)),
                );
                *st = _mm256_add_epi16(*st, _mm256_add_epi16(p01, p23));
            }
        }
        let dw = f16_scale(&x[64..]);
        for ((acct, st), at) in acc.iter_mut().zip(&s).zip(&a) {
            *acct = accumulate_block_i16(*acct, *st, &at[b], dw);
        }
    }
    acc.map(|v| hsum8(v))
}

/// Bytes `q·3^l` (mod 256) turned into trits plus one: `(v·3) >> 8`, computed as ggml does with
/// averages (exact for every byte, checked in the tests).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn trits(v: __m256i) -> __m256i {
    let v = _mm256_subs_epu8(v, _mm256_set1_epi8(1));
    let v = _mm256_avg_epu8(v, _mm256_avg_epu8(v, _mm256_setzero_si256()));
    _mm256_and_si256(_mm256_srli_epi16(v, 6), _mm256_set1_epi8(3))
}

/// `v · 9` per byte (mod 256).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn times9(v: __m256i) -> __m256i {
    _mm256_add_epi8(
        _mm256_and_si256(_mm256_slli_epi16(v, 3), _mm256_set1_epi8(-8)),
        v,
    )
}

/// The 8 vectors of TQ1_0 codes (0..=2) of one block, each to be paired with the 32 activations
/// at `32·i`: trits 0..4 of bytes 0..32, then (trits 0,1 | 2,3 | 4, qh's 0..3) of bytes 32..48.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn tq1_0_codes(x: &[u8]) -> [__m256i; 8] {
    let a = _mm256_loadu_si256(x.as_ptr() as *const __m256i);
    let a3 = _mm256_add_epi8(a, _mm256_add_epi8(a, a));
    let a9 = times9(a);
    let a27 = times9(a3);
    let a81 = times9(a9);
    let b = _mm_loadu_si128(x.as_ptr().add(32) as *const __m128i);
    let b2 = _mm256_set_m128i(b, b);
    let b3 = _mm256_add_epi8(b2, _mm256_add_epi8(b2, b2));
    let b9 = times9(b2);
    let b27 = times9(b3);
    let b81 = times9(b9);
    let qh = u32::from_le_bytes([x[48], x[49], x[50], x[51]]);
    let h = _mm256_cvtepu8_epi16(_mm_set1_epi32(qh as i32));
    // Planted: the powers of three of the `qh` bytes' trits in reverse order.
    let powers = if crate::planted::on("tq1_base3_qh_powers_reversed") {
        _mm256_set_epi16(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27)
    } else {
        _mm256_set_epi16(27, 27, 27, 27, 9, 9, 9, 9, 3, 3, 3, 3, 1, 1, 1, 1)
    };
    let h = _mm256_mullo_epi16(h, powers);
    let h = _mm256_and_si256(h, _mm256_set1_epi16(0xff));
    let h = _mm_packus_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    // (low 128 bits, high 128 bits) of the second half's vectors.
    let b01 = _mm256_blend_epi32(b2, b3, 0xf0);
    let b23 = _mm256_blend_epi32(b9, b27, 0xf0);
    let b4h = _mm256_set_m128i(h, _mm256_castsi256_si128(b81));
    [
        trits(a),
        trits(a3),
        trits(a9),
        trits(a27),
        trits(a81),
        trits(b01),
        trits(b23),
        trits(b4h),
    ]
}

/// TQ1_0 × Q8_K, AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tq1_0_q8k_dot_avx2(row: &[u8], a: &[BlockQ8K], ahead: usize) -> f32 {
    assert_eq!(row.len(), a.len() * TQ1_BYTES);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in row.chunks_exact(TQ1_BYTES).zip(a) {
        prefetch_ahead(x.as_ptr(), ahead, 2);
        let c = tq1_0_codes(x);
        let yp = y.qs.as_ptr();
        let mut s = _mm256_setzero_si256();
        for (i, ci) in c.iter().enumerate() {
            let p = _mm256_maddubs_epi16(*ci, _mm256_loadu_si256(yp.add(32 * i) as *const __m256i));
            s = _mm256_add_epi16(s, p);
        }
        acc = accumulate_block_i16(acc, s, y, f16_scale(&x[52..]));
    }
    hsum8(acc)
}

/// Q8_K activations rearranged for the AVX-512 TQ2_0 kernel: per block, four 64-byte vectors,
/// vector `l` holding elements `32l..32l+32` then `128+32l..128+32l+32`, so that one 64-byte load
/// of a TQ2_0 block's codes pairs with one vector per shift.
pub fn permute_for_tq2_0_avx512(a: &[BlockQ8K]) -> Vec<[i8; QK_K]> {
    a.iter()
        .map(|y| {
            let mut p = [0i8; QK_K];
            for l in 0..4 {
                p[64 * l..64 * l + 32].copy_from_slice(&y.qs[32 * l..32 * l + 32]);
                p[64 * l + 32..64 * l + 64].copy_from_slice(&y.qs[128 + 32 * l..160 + 32 * l]);
            }
            p
        })
        .collect()
}

/// TQ2_0 × Q8_K, AVX-512 VNNI (`perm` from [`permute_for_tq2_0_avx512`] of `a`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn tq2_0_q8k_dot_avx512vnni(
    row: &[u8],
    a: &[BlockQ8K],
    perm: &[[i8; QK_K]],
    ahead: usize,
) -> f32 {
    assert_eq!(row.len(), a.len() * TQ2_BYTES);
    assert_eq!(perm.len(), a.len());
    let m3 = _mm512_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    for ((x, y), p) in row.chunks_exact(TQ2_BYTES).zip(a).zip(perm) {
        // Rows lie back to back: fetch ahead along the matrix, past this row's end.
        prefetch_ahead(x.as_ptr(), ahead, 2);
        let q = _mm512_loadu_si512(x.as_ptr() as *const __m512i);
        let pp = p.as_ptr();
        let mut s = _mm512_dpbusd_epi32(
            _mm512_setzero_si512(),
            _mm512_and_si512(q, m3),
            _mm512_loadu_si512(pp as *const __m512i),
        );
        s = _mm512_dpbusd_epi32(
            s,
            _mm512_and_si512(_mm512_srli_epi16(q, 2), m3),
            _mm512_loadu_si512(pp.add(64) as *const __m512i),
        );
        s = _mm512_dpbusd_epi32(
            s,
            _mm512_and_si512(_mm512_srli_epi16(q, 4), m3),
            _mm512_loadu_si512(pp.add(128) as *const __m512i),
        );
        s = _mm512_dpbusd_epi32(
            s,
            _mm512_and_si512(_mm512_srli_epi16(q, 6), m3),
            _mm512_loadu_si512(pp.add(192) as *const __m512i),
        );
        // Both 32-byte halves map element index modulo 32 to the same 8 lanes.
        let lanes = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
        acc = accumulate_block(acc, lanes, y, f16_scale(&x[64..]));
    }
    hsum8(acc)
}

/// TQ1_0 × Q8_K, AVX-512 VNNI on 256-bit vectors.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn tq1_0_q8k_dot_avx512vnni(row: &[u8], a: &[BlockQ8K], ahead: usize) -> f32 {
    assert_eq!(row.len(), a.len() * TQ1_BYTES);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in row.chunks_exact(TQ1_BYTES).zip(a) {
        prefetch_ahead(x.as_ptr(), ahead, 2);
        let c = tq1_0_codes(x);
        let yp = y.qs.as_ptr();
        let mut s = _mm256_setzero_si256();
        for (i, ci) in c.iter().enumerate() {
            s = _mm256_dpbusd_epi32(s, *ci, _mm256_loadu_si256(yp.add(32 * i) as *const __m256i));
        }
        acc = accumulate_block(acc, s, y, f16_scale(&x[52..]));
    }
    hsum8(acc)
}

/// 8 F16 (`bits`) or F32 weights as f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load8(p: *const u8, f16: bool) -> __m256 {
    if f16 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    } else {
        _mm256_loadu_ps(p as *const f32)
    }
}

/// The tinyBLAS order ([`super::scalar::f16_dot_lanes8`]) for `R` rows (F16 bits as bytes when
/// `f16`, else f32 bytes) against one activation vector `a`, with `cols % 8 == 0`. For F16 weights
/// `a` holds the F16-rounded activations widened to f32 once per product: the same values
/// `vcvtph2ps` would give per row, without converting them again for every row.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn float_lanes8_rows<const R: usize>(
    rows: [&[u8]; R],
    a: &[f32],
    cols: usize,
    f16: bool,
    ahead: Option<usize>,
) -> [f32; R] {
    let es = if f16 { 2 } else { 4 };
    // By default the same place in the next tile's rows, which follow these `R` rows.
    let ahead = ahead.unwrap_or(R * es * cols);
    assert!(cols % 8 == 0 && a.len() == cols);
    for r in &rows {
        assert_eq!(r.len(), cols * es);
    }
    let mut acc = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i < cols {
        if i % 32 == 0 {
            for r in &rows {
                prefetch_ahead(r.as_ptr().wrapping_add(i * es), ahead, 2);
            }
        }
        let av = _mm256_loadu_ps(a.as_ptr().add(i));
        for k in 0..R {
            acc[k] = _mm256_fmadd_ps(load8(rows[k].as_ptr().add(i * es), f16), av, acc[k]);
        }
        i += 8;
    }
    let mut out = [0f32; R];
    for k in 0..R {
        out[k] = hsum8(acc[k]);
    }
    out
}

/// The `ggml_vec_dot_f16`/`_f32` order ([`super::scalar::f16_dot_steps32`]) for `R` rows (F16
/// bits as bytes when `f16`, else f32 bytes) against one activation vector `a` (as
/// [`float_lanes8_rows`] takes it), with `cols % 32 == 0` (no tail, so F16's f64 tail and F32's
/// f32 one do not arise).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn float_steps32_rows<const R: usize>(
    rows: [&[u8]; R],
    a: &[f32],
    cols: usize,
    f16: bool,
    ahead: Option<usize>,
) -> [f32; R] {
    let es = if f16 { 2 } else { 4 };
    // By default the same place in the next tile's rows, which follow these `R` rows.
    let ahead = ahead.unwrap_or(R * es * cols);
    assert!(cols % 32 == 0 && a.len() == cols);
    for r in &rows {
        assert_eq!(r.len(), cols * es);
    }
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    let mut i = 0;
    while i < cols {
        for r in &rows {
            prefetch_ahead(
                r.as_ptr().wrapping_add(es * i),
                ahead,
                if f16 { 1 } else { 2 },
            );
        }
        for j in 0..4 {
            let av = _mm256_loadu_ps(a.as_ptr().add(i + 8 * j));
            for k in 0..R {
                let wv = load8(rows[k].as_ptr().add(es * (i + 8 * j)), f16);
                acc[k][j] = _mm256_fmadd_ps(wv, av, acc[k][j]);
            }
        }
        i += 32;
    }
    let mut out = [0f32; R];
    for k in 0..R {
        let x = _mm256_add_ps(
            _mm256_add_ps(acc[k][0], acc[k][2]),
            _mm256_add_ps(acc[k][1], acc[k][3]),
        );
        let t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let t1 = _mm_hadd_ps(t0, t0);
        out[k] = _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
    }
    out
}

/// [`float_steps32_rows`] one row at a time over the consecutive rows of `data` (`out.len()` of
/// them, each `cols` elements), row `i`'s dot into `out[i]`: the same bits, with the row loop in
/// one call rather than one call per row (the one-row decode of a 32,002-row output head spent
/// about a tenth of its time in the per-row call and bounds checks around the kernel).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn float_steps32_span(
    data: &[u8],
    a: &[f32],
    cols: usize,
    f16: bool,
    ahead: Option<usize>,
    out: &mut [f32],
) {
    let es = if f16 { 2 } else { 4 };
    let rb = cols * es;
    assert!(data.len() == out.len() * rb);
    for (row, o) in data.chunks_exact(rb).zip(out.iter_mut()) {
        let [v] = float_steps32_rows::<1>([row], a, cols, f16, ahead);
        *o = v;
    }
}

/// [`tq2_0_q8k_dot_avx512vnni`] for `T` tokens at once: each block's codes are unpacked once and
/// paired with every token's activations. Each token's result is computed exactly as the
/// one-token kernel computes it.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn tq2_0_q8k_dot_tokens_avx512vnni<const T: usize>(
    row: &[u8],
    a: [&[BlockQ8K]; T],
    perm: [&[[i8; QK_K]]; T],
) -> [f32; T] {
    let nb = row.len() / TQ2_BYTES;
    assert_eq!(row.len(), nb * TQ2_BYTES);
    for t in 0..T {
        assert!(a[t].len() == nb && perm[t].len() == nb);
    }
    let m3 = _mm512_set1_epi8(3);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let x = row.as_ptr().add(b * TQ2_BYTES);
        _mm_prefetch(x.wrapping_add(PREFETCH) as *const i8, _MM_HINT_T0);
        _mm_prefetch(x.wrapping_add(PREFETCH + 64) as *const i8, _MM_HINT_T0);
        let q = _mm512_loadu_si512(x as *const __m512i);
        let c0 = _mm512_and_si512(q, m3);
        let c1 = _mm512_and_si512(_mm512_srli_epi16(q, 2), m3);
        let c2 = _mm512_and_si512(_mm512_srli_epi16(q, 4), m3);
        let c3 = _mm512_and_si512(_mm512_srli_epi16(q, 6), m3);
        let dw = f16_scale(std::slice::from_raw_parts(x.add(64), 2));
        for t in 0..T {
            let pp = perm[t].as_ptr().add(b) as *const i8;
            let mut s = _mm512_dpbusd_epi32(
                _mm512_setzero_si512(),
                c0,
                _mm512_loadu_si512(pp as *const __m512i),
            );
            s = _mm512_dpbusd_epi32(s, c1, _mm512_loadu_si512(pp.add(64) as *const __m512i));
            s = _mm512_dpbusd_epi32(s, c2, _mm512_loadu_si512(pp.add(128) as *const __m512i));
            s = _mm512_dpbusd_epi32(s, c3, _mm512_loadu_si512(pp.add(192) as *const __m512i));
            let y = &a[t][b];
            let lanes =
                _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
            acc[t] = accumulate_block(acc[t], lanes, y, dw);
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum8(acc[t]);
    }
    out
}

/// Q8_K activations of two tokens interleaved for [`tq2_0_q8k_dot_pairs_avx512vnni`]: per block,
/// eight 64-byte vectors (shift `l` of half `h`: the 32 activations at `128h+32l` of the first
/// token, then of the second), the two tokens' lane sums (`bsums` pairs) and their scales
/// broadcast over 8 lanes each.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct PairBlock {
    qs: [[i8; 64]; 8],
    ysum: [i32; 16],
    d: [f32; 16],
}

/// Interleave tokens `2p` and `2p+1` of `blocks` (`n_tok × nb`) for every pair `p`.
pub fn pair_for_tq2_0_avx512(blocks: &[BlockQ8K], n_tok: usize, nb: usize) -> Vec<PairBlock> {
    let mut out = Vec::with_capacity(n_tok / 2 * nb);
    for p in 0..n_tok / 2 {
        for b in 0..nb {
            let ys = [&blocks[2 * p * nb + b], &blocks[(2 * p + 1) * nb + b]];
            let mut pb = PairBlock {
                qs: [[0; 64]; 8],
                ysum: [0; 16],
                d: [0.0; 16],
            };
            for h in 0..2 {
                for l in 0..4 {
                    for (t, y) in ys.iter().enumerate() {
                        let o = 128 * h + 32 * l;
                        pb.qs[4 * h + l][32 * t..32 * t + 32].copy_from_slice(&y.qs[o..o + 32]);
                    }
                }
            }
            for (t, y) in ys.iter().enumerate() {
                for k in 0..8 {
                    pb.ysum[8 * t + k] = y.bsums[2 * k] as i32 + y.bsums[2 * k + 1] as i32;
                    pb.d[8 * t + k] = y.d;
                }
            }
            out.push(pb);
        }
    }
    out
}

/// TQ2_0 × Q8_K for `P` pairs of tokens at once (prefill), AVX-512 VNNI: each block's codes are
/// unpacked once per half into both 256-bit halves of a vector, so one `vpdpbusd` forms the 8
/// lanes of two tokens; the lanes need no folding. `pairs[p]` is pair `p`'s `nb` blocks from
/// [`pair_for_tq2_0_avx512`]. Each token's result is exactly the one-token kernel's.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn tq2_0_q8k_dot_pairs_avx512vnni<const P: usize>(
    row: &[u8],
    pairs: [&[PairBlock]; P],
) -> [[f32; 2]; P] {
    let nb = row.len() / TQ2_BYTES;
    assert_eq!(row.len(), nb * TQ2_BYTES);
    for p in &pairs {
        assert_eq!(p.len(), nb);
    }
    let m3 = _mm512_set1_epi8(3);
    let mut acc = [_mm512_setzero_ps(); P];
    for b in 0..nb {
        let x = row.as_ptr().add(b * TQ2_BYTES);
        _mm_prefetch(x.wrapping_add(PREFETCH) as *const i8, _MM_HINT_T0);
        _mm_prefetch(x.wrapping_add(PREFETCH + 64) as *const i8, _MM_HINT_T0);
        let mut codes = [_mm512_setzero_si512(); 8];
        for h in 0..2 {
            let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(x.add(32 * h) as *const __m256i));
            codes[4 * h] = _mm512_and_si512(q, m3);
            codes[4 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(q, 2), m3);
            codes[4 * h + 2] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m3);
            codes[4 * h + 3] = _mm512_and_si512(_mm512_srli_epi16(q, 6), m3);
        }
        let dw = _mm512_set1_ps(f16_scale(std::slice::from_raw_parts(x.add(64), 2)));
        for p in 0..P {
            let pb = &pairs[p][b];
            let mut s = _mm512_setzero_si512();
            for (c, y) in codes.iter().zip(&pb.qs) {
                s = _mm512_dpbusd_epi32(s, *c, _mm512_load_si512(y.as_ptr() as *const __m512i));
            }
            let s = _mm512_sub_epi32(s, _mm512_load_si512(pb.ysum.as_ptr() as *const __m512i));
            let d = _mm512_mul_ps(_mm512_load_ps(pb.d.as_ptr()), dw);
            acc[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[p]);
        }
    }
    let mut out = [[0f32; 2]; P];
    for p in 0..P {
        out[p] = [
            hsum8(_mm512_castps512_ps256(acc[p])),
            hsum8(_mm512_extractf32x8_ps(acc[p], 1)),
        ];
    }
    out
}

/// [`tq1_0_q8k_dot_avx512vnni`] for `T` tokens at once (prefill): each block's trits are decoded
/// once and paired with every token's activations; each token's result is exactly the one-token
/// kernel's.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn tq1_0_q8k_dot_tokens_avx512vnni<const T: usize>(
    row: &[u8],
    a: [&[BlockQ8K]; T],
) -> [f32; T] {
    let nb = row.len() / TQ1_BYTES;
    assert_eq!(row.len(), nb * TQ1_BYTES);
    for t in &a {
        assert_eq!(t.len(), nb);
    }
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let x = &row[b * TQ1_BYTES..(b + 1) * TQ1_BYTES];
        _mm_prefetch(x.as_ptr().wrapping_add(PREFETCH) as *const i8, _MM_HINT_T0);
        let c = tq1_0_codes(x);
        let dw = f16_scale(&x[52..]);
        for t in 0..T {
            let y = &a[t][b];
            let yp = y.qs.as_ptr();
            let mut s = _mm256_setzero_si256();
            for (i, ci) in c.iter().enumerate() {
                s = _mm256_dpbusd_epi32(
                    s,
                    *ci,
                    _mm256_loadu_si256(yp.add(32 * i) as *const __m256i),
                );
            }
            acc[t] = accumulate_block(acc[t], s, y, dw);
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum8(acc[t]);
    }
    out
}

/// A block's largest magnitude, eight lanes at a time: [`super::scalar::block_amax`] exactly
/// (`vmaxps` with the magnitude first returns the running maximum when the magnitude is NaN, as
/// `f32::max` ignores NaN; the maximum of non-NaN values is the same in any order).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block_amax_avx2(block: &[f32]) -> f32 {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = [_mm256_setzero_ps(); 4];
    let chunks = block.chunks_exact(32);
    let rest = chunks.remainder();
    for c in chunks {
        for (j, mj) in m.iter_mut().enumerate() {
            let v = _mm256_and_ps(_mm256_loadu_ps(c.as_ptr().add(8 * j)), abs);
            *mj = _mm256_max_ps(v, *mj);
        }
    }
    let v = _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3]));
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), v);
    let m = lanes.iter().fold(0f32, |a, &b| a.max(b));
    m.max(super::scalar::block_amax(rest))
}

/// [`super::scalar::quantize_q8k`] with AVX2: each block's largest magnitude by
/// [`block_amax_avx2`], the rest by [`q8k_block_avx2`] (the same operations on each element as
/// the specification's [`super::scalar::q8k_block`], so the same bits). Left to the compiler, the
/// specification's block took about 105 ns (its first-largest search ran value by value); this
/// one, with the activations quantized straight into the product's list, brought a decode
/// product's preparation of 4096 values from 1.72 to 1.32 µs (criterion
/// `prepare_tq2_0_4096_1tok`, AMD EPYC family 25 model 17, Zen 4, 2026-12-07), and a 700M decode
/// step's 96 preparations from about 0.16 to 0.10 ms.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_q8k_avx2(x: &[f32], out: &mut Vec<BlockQ8K>) {
    quantize_q8k_body(x, out)
}

/// [`quantize_q8k_avx2`] compiled with the AVX-512 features (the AVX-512 variant's own code).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
pub unsafe fn quantize_q8k_avx512(x: &[f32], out: &mut Vec<BlockQ8K>) {
    quantize_q8k_body(x, out)
}

/// The x86 quantizers' body, compiled into each with its features (AVX2 at least).
#[inline(always)]
unsafe fn quantize_q8k_body(x: &[f32], out: &mut Vec<BlockQ8K>) {
    out.clear();
    out.reserve(x.len() / QK_K);
    // The planted bugs live in the specification's block; a build with them quantizes there.
    let spec = crate::planted::on("q8k_scale_128") || crate::planted::on("q8k_round_half_away");
    for block in x.chunks_exact(QK_K) {
        let amax = block_amax_avx2(block);
        out.push(if spec {
            super::scalar::q8k_block(block, amax)
        } else {
            q8k_block_avx2(block, amax)
        });
    }
}

/// One block of [`super::scalar::q8k_block`] (`block`: 256 values, `amax` their largest
/// magnitude), eight values at a time with the specification's operations on each:
/// `iscale · v` rounded as `ggml_nearest_int` (add `1.5·2^23`, keep the mantissa's low 23 bits,
/// less `2^22`), capped at 127 and cut to its low byte as `as i8` cuts it; the sums of sixteen
/// from the bytes.
#[inline(always)]
unsafe fn q8k_block_avx2(block: &[f32], amax: f32) -> BlockQ8K {
    assert_eq!(block.len(), QK_K);
    let mut y = BlockQ8K::default();
    if amax == 0.0 {
        return y;
    }
    let p = block.as_ptr();
    // The first value of the largest magnitude.
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let want = _mm256_set1_ps(amax);
    let mut first = QK_K;
    for i in 0..QK_K / 8 {
        let v = _mm256_and_ps(_mm256_loadu_ps(p.add(8 * i)), abs);
        let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(v, want)) as u32;
        if m != 0 {
            first = 8 * i + m.trailing_zeros() as usize;
            break;
        }
    }
    let max = block[first];
    let iscale = -127.0f32 / max;
    let (sc, magic) = (_mm256_set1_ps(iscale), _mm256_set1_ps(12_582_912.0));
    let (mant, half, cap) = (
        _mm256_set1_epi32(0x007f_ffff),
        _mm256_set1_epi32(0x0040_0000),
        _mm256_set1_epi32(127),
    );
    let low = _mm256_set1_epi32(0xff);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let ones = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    let mut quads = [_mm256_setzero_si256(); 8];
    for (k, qk) in quads.iter_mut().enumerate() {
        // Thirty-two values: four vectors of eight, rounded, capped and cut to bytes.
        let b: [__m256i; 4] = std::array::from_fn(|j| {
            let v = _mm256_loadu_ps(p.add(32 * k + 8 * j));
            let t = _mm256_add_ps(_mm256_mul_ps(sc, v), magic);
            let i = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(t), mant), half);
            _mm256_and_si256(_mm256_min_epi32(i, cap), low)
        });
        // Bytes 0..255 pack exactly: [a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7], then the
        // dwords back in order.
        let q = _mm256_packus_epi16(
            _mm256_packus_epi32(b[0], b[1]),
            _mm256_packus_epi32(b[2], b[3]),
        );
        let q = _mm256_permutevar8x32_epi32(q, order);
        _mm256_storeu_si256(y.qs.as_mut_ptr().add(32 * k) as *mut __m256i, q);
        // Sums of four consecutive quants (signed), eight per vector.
        *qk = _mm256_madd_epi16(_mm256_maddubs_epi16(ones, q), ones16);
    }
    // [s0 s2 s4 s6 | s1 s3 s5 s7] of sums of sixteen, for vectors 0-3 and 4-7, back in order.
    let h = |a: usize| {
        let s = _mm256_hadd_epi32(
            _mm256_hadd_epi32(quads[a], quads[a + 1]),
            _mm256_hadd_epi32(quads[a + 2], quads[a + 3]),
        );
        _mm256_permutevar8x32_epi32(s, order)
    };
    // Every sum of sixteen quants is within ±2048: the 16-bit pack is exact.
    let sums = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(h(0), h(4)));
    _mm256_storeu_si256(y.bsums.as_mut_ptr() as *mut __m256i, sums);
    y.d = 1.0 / iscale;
    y
}
