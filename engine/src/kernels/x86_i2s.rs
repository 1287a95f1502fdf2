//! x86-64 kernels for I2_S weights (bitnet.cpp's x86 layout) against per-token int8 activations:
//! AVX2, AVX-512 VNNI, and AVX-512 VNNI on 256-bit vectors; for decode, AVX2 and the 256-bit
//! VNNI forms also take several rows per call. Each returns the exact integer `Σ code·q` of
//! [`super::scalar::i2_s_i8_dot_scalar`] (the float finish is shared, [`super::scalar::i2_s_finish`]),
//! so every variant is bit-identical to the specification; `kernels/tests.rs` checks them by
//! proptest.
//!
//! A group of 128 weights is 32 bytes: byte `j` holds element `j` in bits 6..8, `j+32` in 4..6,
//! `j+64` in 2..4 and `j+96` in 0..2, so one 32-byte load shifted by 6, 4, 2 and 0 gives the
//! codes of four runs of 32 consecutive elements.

//! Callers must have checked the CPU features; the functions are `unsafe` for that reason only
//! and read nothing outside the slices they are given (lengths are asserted on entry).

#![allow(clippy::missing_safety_doc)]
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::scalar::QK_I2_S;

/// Bytes of one group of 128 codes.
const GROUP: usize = 32;
/// How far ahead of the group being read the kernels prefetch (bytes), unless a tuned plan
/// chooses another distance for decode.
pub(super) const PREFETCH: usize = 1024;

/// Rows per decode call ([`i2_s_i8_rows_avx2`], [`i2_s_i8_rows_vnni256`]) unless a plan chooses
/// another of [`super::I2S_ROWS`].
pub(super) const DECODE_ROWS: usize = 4;
/// How far ahead of a block of rows the several-row decode kernels prefetch (bytes), unless a
/// plan chooses: without it, four rows of 2560 columns streamed at 7 GB/s on Zen 4, with a block
/// or two ahead at 32-34.
pub(super) const ROWS_PREFETCH: usize = 4096;

/// The sum of 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// The row's groups of 128 codes, each token's activations asserted to match them.
fn groups_of(row: &[u8], q: &[&[i8]]) -> usize {
    let ng = row.len() / GROUP;
    for a in q {
        assert_eq!(a.len(), ng * QK_I2_S);
    }
    ng
}

/// The four code vectors of one 32-byte group: vector `l` holds the codes of elements
/// `32l..32l+32`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn codes(p: *const u8) -> [__m256i; 4] {
    let mask = _mm256_set1_epi8(3);
    let x = _mm256_loadu_si256(p as *const __m256i);
    [
        _mm256_and_si256(_mm256_srli_epi16(x, 6), mask),
        _mm256_and_si256(_mm256_srli_epi16(x, 4), mask),
        _mm256_and_si256(_mm256_srli_epi16(x, 2), mask),
        _mm256_and_si256(x, mask),
    ]
}

/// Groups whose 16-bit sums the AVX2 kernels ([`i2_s_i8_dot_avx2`], [`i2_s_i8_rows_avx2`]) add
/// up before one `madd` widens them to i32: a group adds at most `4·2·3·128 = 3072` in magnitude
/// to a 16-bit lane (four `maddubs` of pairs; a code is at most 3, an activation −128..127, so
/// no `maddubs` saturates), eight groups at most 24576. One `madd` per eight groups where there
/// was one per group: 33 multiplies per eight groups and token in place of 40.
const AVX2_WIDEN: usize = 8;

/// The 16-bit sums of one group of codes `c` against the activations at `y` (four `maddubs`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn group_sums(c: &[__m256i; 4], y: [__m256i; 4]) -> __m256i {
    let p0 = _mm256_maddubs_epi16(c[0], y[0]);
    let p1 = _mm256_maddubs_epi16(c[1], y[1]);
    let p2 = _mm256_maddubs_epi16(c[2], y[2]);
    let p3 = _mm256_maddubs_epi16(c[3], y[3]);
    _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3))
}

/// `Σ code·q` of one I2_S row against `T` tokens' activations, AVX2: each group's codes are
/// unpacked once; `maddubs` products summed in 16 bits over [`AVX2_WIDEN`] groups, then widened
/// to i32 by `madd`.
#[target_feature(enable = "avx2")]
pub unsafe fn i2_s_i8_dot_avx2<const T: usize>(
    row: &[u8],
    q: [&[i8]; T],
    ahead: usize,
) -> [i32; T] {
    let ng = groups_of(row, &q);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); T];
    for g0 in (0..ng).step_by(AVX2_WIDEN) {
        let mut s = [_mm256_setzero_si256(); T];
        for g in g0..(g0 + AVX2_WIDEN).min(ng) {
            let p = row.as_ptr().add(g * GROUP);
            super::x86::prefetch_ahead(p, ahead, 1);
            let c = codes(p);
            for t in 0..T {
                let y = q[t].as_ptr().add(g * QK_I2_S) as *const __m256i;
                let ys = [0, 1, 2, 3].map(|l| _mm256_loadu_si256(y.add(l)));
                s[t] = _mm256_add_epi16(s[t], group_sums(&c, ys));
            }
        }
        for t in 0..T {
            acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(s[t], ones));
        }
    }
    let mut out = [0i32; T];
    for t in 0..T {
        out[t] = hsum_i32(acc[t]);
    }
    out
}

/// Groups [`i2_s_i8_dot_vnni256`] sums before folding its plane accumulators into the total: a
/// lane of a plane's accumulator gains at most `4·192·128` per group (the top plane's codes come
/// scaled by 64), so `2^31 / 98304 > 21845` groups fit; folding every 8192 keeps any row exact.
const VNNI256_FOLD: usize = 8192;

/// `Σ code·q` of one I2_S row against `T` tokens' activations, on the 256-bit forms of AVX-512
/// VNNI (for CPUs whose 512-bit operations are double-pumped): each plane of a group's codes is
/// masked in place (`x & 3 << 2s`: its codes come scaled by `4^s`), with no shift, into an
/// accumulator of its own (`vpdpbusd`, unsigned codes × signed activations, exact); the planes'
/// sums are divided by their scales at the end (arithmetic shifts of exact multiples). `q[t]` is
/// token `t`'s activations in their own order.
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2")]
pub unsafe fn i2_s_i8_dot_vnni256<const T: usize>(
    row: &[u8],
    q: [&[i8]; T],
    ahead: usize,
) -> [i32; T] {
    let ng = groups_of(row, &q);
    // Plane `l` (elements `32l..32l+32` of a group) sits in bits `6 - 2l..8 - 2l`.
    let masks = [-64i8, 48, 12, 3].map(|m| _mm256_set1_epi8(m));
    let mut total = [_mm256_setzero_si256(); T];
    let mut g = 0;
    while g < ng {
        let end = ng.min(g + VNNI256_FOLD);
        let mut acc = [[_mm256_setzero_si256(); 4]; T];
        while g < end {
            let p = row.as_ptr().add(g * GROUP);
            super::x86::prefetch_ahead(p, ahead, 1);
            let x = _mm256_loadu_si256(p as *const __m256i);
            let c = masks.map(|m| _mm256_and_si256(x, m));
            for t in 0..T {
                let y = q[t].as_ptr().add(g * QK_I2_S) as *const __m256i;
                for l in 0..4 {
                    acc[t][l] = _mm256_dpbusd_epi32(acc[t][l], c[l], _mm256_loadu_si256(y.add(l)));
                }
            }
            g += 1;
        }
        for t in 0..T {
            total[t] = _mm256_add_epi32(total[t], fold_planes(&acc[t]));
        }
    }
    let mut out = [0i32; T];
    for t in 0..T {
        out[t] = hsum_i32(total[t]);
    }
    out
}

/// The rows of a decode call ([`i2_s_i8_rows_avx2`], [`i2_s_i8_rows_vnni256`]): `out.len()` rows
/// of `row_bytes` back to back in `rows`, against `q`; the groups per row.
fn rows_groups_of(rows: &[u8], row_bytes: usize, q: &[i8], out: &[i32]) -> usize {
    assert!(row_bytes % GROUP == 0 && rows.len() == out.len() * row_bytes);
    assert_eq!(q.len(), row_bytes / GROUP * QK_I2_S);
    row_bytes / GROUP
}

/// Prefetch the lines of `R` interleaved rows' group `g` from a block starting at `base`, as if
/// the block were read front to back: `R·32` bytes per group, `ahead` bytes past
/// `base + g·R·32`. Over the block's groups this covers every byte of it once, in address
/// order, one block or more ahead (the distance a plan chose). Nothing when `ahead` is 0 or a
/// row's group is less than a line (`R` = 1: the one-row kernels prefetch themselves).
#[inline(always)]
fn prefetch_block<const R: usize>(base: *const u8, g: usize, ahead: usize) {
    super::x86::prefetch_ahead(base.wrapping_add(g * GROUP * R), ahead, R / 2);
}

/// Decode: `out[i] = Σ code·q` of row `i` of `rows` (`out.len()` rows of `row_bytes`, back to
/// back) against one token's activations `q`, AVX2, `R` rows at a time with their groups
/// interleaved: each activation vector is loaded once for the `R` rows, and the block of `R`
/// rows (one contiguous run) is prefetched front to back `ahead` bytes ahead
/// ([`prefetch_block`]); the hardware prefetchers alone fall far behind `R` streams a row apart.
/// The last `out.len() % R` rows go one at a time. Each sum is exactly
/// [`i2_s_i8_dot_avx2`]'s.
#[target_feature(enable = "avx2")]
pub unsafe fn i2_s_i8_rows_avx2<const R: usize>(
    rows: &[u8],
    row_bytes: usize,
    q: &[i8],
    ahead: usize,
    out: &mut [i32],
) {
    let ng = rows_groups_of(rows, row_bytes, q, out);
    let ones = _mm256_set1_epi16(1);
    let whole = out.len() / R * R;
    for r in (0..whole).step_by(R) {
        let base = rows.as_ptr().add(r * row_bytes);
        let mut acc = [_mm256_setzero_si256(); R];
        for g0 in (0..ng).step_by(AVX2_WIDEN) {
            // As in `i2_s_i8_dot_avx2`: 16-bit sums over at most `AVX2_WIDEN` groups.
            let mut s = [_mm256_setzero_si256(); R];
            for g in g0..(g0 + AVX2_WIDEN).min(ng) {
                prefetch_block::<R>(base, g, ahead);
                let y = q.as_ptr().add(g * QK_I2_S) as *const __m256i;
                let ys = [0, 1, 2, 3].map(|l| _mm256_loadu_si256(y.add(l)));
                for (i, si) in s.iter_mut().enumerate() {
                    let c = codes(base.add(i * row_bytes + g * GROUP));
                    *si = _mm256_add_epi16(*si, group_sums(&c, ys));
                }
            }
            for (a, si) in acc.iter_mut().zip(&s) {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(*si, ones));
            }
        }
        for (i, a) in acc.iter().enumerate() {
            out[r + i] = hsum_i32(*a);
        }
    }
    for r in whole..out.len() {
        let row = &rows[r * row_bytes..(r + 1) * row_bytes];
        out[r] = i2_s_i8_dot_avx2::<1>(row, [q], ahead)[0];
    }
}

/// Decode on the 256-bit forms of AVX-512 VNNI: [`i2_s_i8_rows_avx2`]'s rows, blocks and
/// prefetch with [`i2_s_i8_dot_vnni256`]'s masked planes, one accumulator per row and plane,
/// folded every [`VNNI256_FOLD`] groups. Each sum is exactly [`i2_s_i8_dot_vnni256`]'s.
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2")]
pub unsafe fn i2_s_i8_rows_vnni256<const R: usize>(
    rows: &[u8],
    row_bytes: usize,
    q: &[i8],
    ahead: usize,
    out: &mut [i32],
) {
    let ng = rows_groups_of(rows, row_bytes, q, out);
    let masks = [-64i8, 48, 12, 3].map(|m| _mm256_set1_epi8(m));
    let whole = out.len() / R * R;
    for r in (0..whole).step_by(R) {
        let base = rows.as_ptr().add(r * row_bytes);
        let mut total = [_mm256_setzero_si256(); R];
        let mut g = 0;
        while g < ng {
            let end = ng.min(g + VNNI256_FOLD);
            let mut acc = [[_mm256_setzero_si256(); 4]; R];
            while g < end {
                prefetch_block::<R>(base, g, ahead);
                let y = q.as_ptr().add(g * QK_I2_S) as *const __m256i;
                let ys = [0, 1, 2, 3].map(|l| _mm256_loadu_si256(y.add(l)));
                for (i, a) in acc.iter_mut().enumerate() {
                    let p = base.add(i * row_bytes + g * GROUP);
                    let x = _mm256_loadu_si256(p as *const __m256i);
                    for l in 0..4 {
                        a[l] = _mm256_dpbusd_epi32(a[l], _mm256_and_si256(x, masks[l]), ys[l]);
                    }
                }
                g += 1;
            }
            for (t, a) in total.iter_mut().zip(&acc) {
                *t = _mm256_add_epi32(*t, fold_planes(a));
            }
        }
        for (i, t) in total.iter().enumerate() {
            out[r + i] = hsum_i32(*t);
        }
    }
    for r in whole..out.len() {
        let row = &rows[r * row_bytes..(r + 1) * row_bytes];
        out[r] = i2_s_i8_dot_vnni256::<1>(row, [q], ahead)[0];
    }
}

/// The four masked planes' accumulators of [`i2_s_i8_dot_vnni256`] divided by their scales
/// (`4^3`, `4^2`, `4`, 1: arithmetic shifts of exact multiples) and summed.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn fold_planes(a: &[__m256i; 4]) -> __m256i {
    _mm256_add_epi32(
        _mm256_add_epi32(_mm256_srai_epi32::<6>(a[0]), _mm256_srai_epi32::<4>(a[1])),
        _mm256_add_epi32(_mm256_srai_epi32::<2>(a[2]), a[3]),
    )
}

/// Activations rearranged for [`i2_s_i8_dot_avx512vnni`]: per pair of groups, four 64-byte
/// vectors, vector `l` holding elements `32l..32l+32` of the first group and then of the second,
/// so that one 64-byte load of two groups' codes pairs with one vector per shift. A last unpaired
/// group is copied as it is.
pub fn permute_for_i2_s_avx512(q: &[i8]) -> Vec<i8> {
    let mut out = Vec::with_capacity(q.len());
    let mut pairs = q.chunks_exact(2 * QK_I2_S);
    for pair in &mut pairs {
        for l in 0..4 {
            out.extend_from_slice(&pair[32 * l..32 * l + 32]);
            out.extend_from_slice(&pair[QK_I2_S + 32 * l..QK_I2_S + 32 * l + 32]);
        }
    }
    out.extend_from_slice(pairs.remainder());
    out
}

/// `Σ code·q` of one I2_S row against `T` tokens' activations, AVX-512 VNNI: two groups' codes
/// per 64-byte load, `vpdpbusd` (unsigned codes × signed activations, four products per i32 lane,
/// exact). `q[t]` is token `t`'s activations from [`permute_for_i2_s_avx512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
pub unsafe fn i2_s_i8_dot_avx512vnni<const T: usize>(
    row: &[u8],
    q: [&[i8]; T],
    ahead: usize,
) -> [i32; T] {
    let ng = groups_of(row, &q);
    let mask = _mm512_set1_epi8(3);
    // One accumulator per shift, so the four `vpdpbusd` of a step do not wait on each other.
    let mut acc = [[_mm512_setzero_si512(); 4]; T];
    let mut g = 0;
    while g + 2 <= ng {
        let p = row.as_ptr().add(g * GROUP);
        super::x86::prefetch_ahead(p, ahead, 1);
        let x = _mm512_loadu_si512(p as *const __m512i);
        let c = [
            _mm512_and_si512(_mm512_srli_epi16(x, 6), mask),
            _mm512_and_si512(_mm512_srli_epi16(x, 4), mask),
            _mm512_and_si512(_mm512_srli_epi16(x, 2), mask),
            _mm512_and_si512(x, mask),
        ];
        for t in 0..T {
            let y = q[t].as_ptr().add(g * QK_I2_S) as *const __m512i;
            for (l, cl) in c.iter().enumerate() {
                acc[t][l] = _mm512_dpbusd_epi32(acc[t][l], *cl, _mm512_loadu_si512(y.add(l)));
            }
        }
        g += 2;
    }
    let mut out = [0i32; T];
    for t in 0..T {
        let sum = _mm512_add_epi32(
            _mm512_add_epi32(acc[t][0], acc[t][1]),
            _mm512_add_epi32(acc[t][2], acc[t][3]),
        );
        let lo = _mm512_castsi512_si256(sum);
        let hi = _mm512_extracti64x4_epi64(sum, 1);
        let mut a = _mm256_add_epi32(lo, hi);
        if g < ng {
            let c = codes(row.as_ptr().add(g * GROUP));
            let y = q[t].as_ptr().add(g * QK_I2_S) as *const __m256i;
            for (l, cl) in c.iter().enumerate() {
                a = _mm256_dpbusd_epi32(a, *cl, _mm256_loadu_si256(y.add(l)));
            }
        }
        out[t] = hsum_i32(a);
    }
    out
}
