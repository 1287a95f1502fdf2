//! The attention's row operations in AVX2 + FMA, each exactly its portable specification in
//! [`super::ggml_math`] / [`crate::attention`] (the same fused multiply-adds into the same lanes,
//! summed in the same order), checked by proptest below:
//!
//! - [`dot_steps32`]: `ggml_vec_dot_f32`'s order ([`super::ggml_math::dot_steps32`]);
//! - [`dot_lanes8`]: tinyBLAS's order ([`super::ggml_math::dot_lanes8`]);
//! - [`axpy`]: `acc[d] = fma(v[d], p, acc[d])`, one output lane's step of the weighted sum;
//! - [`reduce_lanes`]: the lane accumulators of every output element summed in ggml's order;
//! - [`dot_steps32_f16`], [`dot_lanes8_f16`], [`axpy_f16`]: the same over an F16 cache (AVX2 +
//!   FMA + F16C: the halves widened by `vcvtph2ps`, exactly).
//!
//! Written out with intrinsics because the compiler's own vectorisation of the portable code
//! split each dot product into 128-bit halves and spilled its accumulators: a decode step's
//! attention streams the whole KV cache and its compute must stay well under the memory time.
//!
//! Callers must have checked AVX2 and FMA (and F16C for the `_f16` functions); the functions are `unsafe` for that reason only and
//! read nothing outside the slices they are given.

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

/// `ggml_vec_dot_f32` (AVX2) of `x` and `y` (the shorter length): four 8-lane FMA accumulators
/// over steps of 32, reduced `(a0+a2)+(a1+a3)` then `(t0+t1)+(t2+t3)` of the halves' sums, the
/// elements past the last whole step added one by one (the last `n % 4` fused).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_steps32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !31;
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    let mut a = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, aj) in a.iter_mut().enumerate() {
            *aj = _mm256_fmadd_ps(
                _mm256_loadu_ps(xp.add(i + 8 * j)),
                _mm256_loadu_ps(yp.add(i + 8 * j)),
                *aj,
            );
        }
        i += 32;
    }
    let r = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
    // hadd8: t = [r0+r4, r1+r5, r2+r6, r3+r7], then (t0+t1)+(t2+t3).
    let t = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
    let t = _mm_hadd_ps(t, t);
    super::ggml_math::f32_tail(_mm_cvtss_f32(_mm_hadd_ps(t, t)), np, n, |k| (x[k], y[k]))
}

/// tinyBLAS's order (AVX2) of `x` and `y` (the shorter length): one 8-lane FMA accumulator, a
/// ragged tail as a zero-padded step, summed as `hsum_float_8`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_lanes8(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let n8 = n & !7;
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < n8 {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)), acc);
        i += 8;
    }
    if n8 < n {
        // The specification adds `fma(x, y, lane)` to the tail's lanes only; a zero product
        // added to the others leaves them as they are (a lane that started at +0 is never −0).
        let (mut xt, mut yt) = ([0f32; 8], [0f32; 8]);
        xt[..n - n8].copy_from_slice(&x[n8..n]);
        yt[..n - n8].copy_from_slice(&y[n8..n]);
        acc = _mm256_fmadd_ps(
            _mm256_loadu_ps(xt.as_ptr()),
            _mm256_loadu_ps(yt.as_ptr()),
            acc,
        );
    }
    super::x86::hsum8(acc)
}

/// `acc[d] = fma(v[d], p, acc[d])` for every `d` (the shorter length).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy(acc: &mut [f32], v: &[f32], p: f32) {
    let n = acc.len().min(v.len());
    let n8 = n & !7;
    let (ap, vp) = (acc.as_mut_ptr(), v.as_ptr());
    let pv = _mm256_set1_ps(p);
    let mut i = 0;
    while i < n8 {
        let s = _mm256_fmadd_ps(_mm256_loadu_ps(vp.add(i)), pv, _mm256_loadu_ps(ap.add(i)));
        _mm256_storeu_ps(ap.add(i), s);
        i += 8;
    }
    for d in n8..n {
        acc[d] = v[d].mul_add(p, acc[d]);
    }
}

/// Eight IEEE halves from `p`, widened to f32 (exactly).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8_f16(p: *const u16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// `ggml_vec_dot_f16` (AVX2 + F16C) of `x` and `y` (the shorter length), halves as bits:
/// [`dot_steps32`]'s accumulators and reduction on the widened halves, the elements past the last
/// whole step added in f64 ([`super::ggml_math::dot_steps32_f16`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_steps32_f16(x: &[u16], y: &[u16]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !31;
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    let mut a = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, aj) in a.iter_mut().enumerate() {
            *aj = _mm256_fmadd_ps(
                load8_f16(xp.add(i + 8 * j)),
                load8_f16(yp.add(i + 8 * j)),
                *aj,
            );
        }
        i += 32;
    }
    let r = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
    let t = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
    let t = _mm_hadd_ps(t, t);
    let mut sum = _mm_cvtss_f32(_mm_hadd_ps(t, t)) as f64;
    let h = crate::quant::f16_to_f32;
    for k in np..n {
        sum += (h(x[k]) * h(y[k])) as f64;
    }
    sum as f32
}

/// tinyBLAS's order (AVX2 + F16C) of `x` and `y` (the shorter length), halves as bits: one 8-lane
/// FMA accumulator over the widened halves, a ragged tail as a zero-padded step, `hsum_float_8`
/// ([`super::ggml_math::dot_lanes8_f16`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_lanes8_f16(x: &[u16], y: &[u16]) -> f32 {
    let n = x.len().min(y.len());
    let n8 = n & !7;
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < n8 {
        acc = _mm256_fmadd_ps(load8_f16(xp.add(i)), load8_f16(yp.add(i)), acc);
        i += 8;
    }
    if n8 < n {
        // As in `dot_lanes8`: zero products leave the other lanes as they are.
        let (mut xt, mut yt) = ([0u16; 8], [0u16; 8]);
        xt[..n - n8].copy_from_slice(&x[n8..n]);
        yt[..n - n8].copy_from_slice(&y[n8..n]);
        acc = _mm256_fmadd_ps(load8_f16(xt.as_ptr()), load8_f16(yt.as_ptr()), acc);
    }
    super::x86::hsum8(acc)
}

/// `acc[d] = fma(v[d], p, acc[d])` for every `d` (the shorter length), `v` IEEE halves as bits
/// widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_f16(acc: &mut [f32], v: &[u16], p: f32) {
    let n = acc.len().min(v.len());
    let n8 = n & !7;
    let (ap, vp) = (acc.as_mut_ptr(), v.as_ptr());
    let pv = _mm256_set1_ps(p);
    let mut i = 0;
    while i < n8 {
        let s = _mm256_fmadd_ps(load8_f16(vp.add(i)), pv, _mm256_loadu_ps(ap.add(i)));
        _mm256_storeu_ps(ap.add(i), s);
        i += 8;
    }
    for d in n8..n {
        acc[d] = crate::quant::f16_to_f32(v[d]).mul_add(p, acc[d]);
    }
}

/// Every output element `d < o.len()` from its lane accumulators (lane `l` of element `d` at
/// `acc[l·hd + d]`, `hd = o.len()`): with 8 lanes `hsum_float_8` of them, with 32 lanes
/// `ggml_vec_dot_f32`'s reduction (`(l + l16) + (l8 + l24)` for `l < 8`, then `hadd8`). Each
/// element's sums are its own, so eight elements go through them side by side.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn reduce_lanes(acc: &[f32], lanes8: bool, o: &mut [f32]) {
    let hd = o.len();
    let lanes = if lanes8 { 8 } else { 32 };
    assert!(acc.len() >= lanes * hd);
    let ap = acc.as_ptr();
    let lane = |l: usize, d: usize| _mm256_loadu_ps(ap.add(l * hd + d));
    let d8 = hd & !7;
    let mut d = 0;
    while d < d8 {
        let r: [__m256; 8] = if lanes8 {
            std::array::from_fn(|l| lane(l, d))
        } else {
            std::array::from_fn(|l| {
                _mm256_add_ps(
                    _mm256_add_ps(lane(l, d), lane(16 + l, d)),
                    _mm256_add_ps(lane(8 + l, d), lane(24 + l, d)),
                )
            })
        };
        let s = if lanes8 {
            // hsum8: q = [r4+r0, r5+r1, r6+r2, r7+r3], then (q0+q2)+(q1+q3).
            let q: [__m256; 4] = std::array::from_fn(|m| _mm256_add_ps(r[m + 4], r[m]));
            _mm256_add_ps(_mm256_add_ps(q[0], q[2]), _mm256_add_ps(q[1], q[3]))
        } else {
            // hadd8: t = [r0+r4, r1+r5, r2+r6, r3+r7], then (t0+t1)+(t2+t3).
            let t: [__m256; 4] = std::array::from_fn(|m| _mm256_add_ps(r[m], r[m + 4]));
            _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3]))
        };
        _mm256_storeu_ps(o.as_mut_ptr().add(d), s);
        d += 8;
    }
    for (d, od) in o.iter_mut().enumerate().skip(d8) {
        *od = crate::attention::reduce_lane_sums(acc, hd, d, lanes8);
    }
}

/// A KV cache element the block kernels below read: F32, or an IEEE half as its bits.
pub trait Elem: Copy {
    /// Eight elements from `p`, as f32 (exactly).
    unsafe fn load8(p: *const Self) -> __m256;
    /// A probability as ggml multiplies it by a value of this type: unchanged for F32, rounded
    /// to F16 and widened back for F16.
    fn weight(p: f32) -> f32;
    /// [`Elem::weight`] of `p` in all eight lanes (for F16 by F16C's conversions, the instruction
    /// [`crate::quant::f32_to_f16`] runs where F16C is present, without its per-call check).
    unsafe fn weight8(p: f32) -> __m256;
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    fn weight(p: f32) -> f32 {
        p
    }
    #[inline(always)]
    unsafe fn weight8(p: f32) -> __m256 {
        _mm256_set1_ps(p)
    }
}

impl Elem for u16 {
    #[inline(always)]
    unsafe fn load8(p: *const u16) -> __m256 {
        load8_f16(p)
    }
    #[inline(always)]
    fn weight(p: f32) -> f32 {
        crate::quant::f16_to_f32(crate::quant::f32_to_f16(p))
    }
    #[inline(always)]
    unsafe fn weight8(p: f32) -> __m256 {
        weight8_f16(p)
    }
}

/// `p` rounded to an IEEE half (to nearest even) and widened back, in all eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weight8_f16(p: f32) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
        _mm256_set1_ps(p),
    ))
}

/// The head sizes [`dots8_steps32`] takes: whole steps of 32, at most four of them.
pub fn dots8_fits(hd: usize) -> bool {
    hd % 32 == 0 && (32..=128).contains(&hd)
}

/// Eight scores at once: `out[i]` = [`dot_steps32`] (or [`dot_steps32_f16`]) of the key
/// `keys[i·hd..(i+1)·hd]` and `q` (`hd` long, [`dots8_fits`]). Each key's four accumulators run
/// as in the one-key form, with the query's vectors held in registers; the eight keys' final
/// reductions go through one transposed reduction, each lane summing its own key in the one-key
/// order (`(a0+a2)+(a1+a3)`, then the halves' sums `t`, then `(t0+t1)+(t2+t3)`), so every score has
/// the one-key form's bits. With no tail past the last step, the F16 form's f64 tail sum is the
/// f32 sum itself.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dots8_steps32<E: Elem>(keys: &[E], q: &[E], out: &mut [f32; 8]) {
    let hd = q.len();
    assert!(dots8_fits(hd) && keys.len() >= 8 * hd);
    match hd / 32 {
        1 => dots8::<E, 1>(keys.as_ptr(), q.as_ptr(), out),
        2 => dots8::<E, 2>(keys.as_ptr(), q.as_ptr(), out),
        3 => dots8::<E, 3>(keys.as_ptr(), q.as_ptr(), out),
        _ => dots8::<E, 4>(keys.as_ptr(), q.as_ptr(), out),
    }
}

/// [`dots8_steps32`] for `hd = 32·S` (`keys`: eight rows of `hd`; `q`: `hd`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots8<E: Elem, const S: usize>(keys: *const E, q: *const E, out: &mut [f32; 8]) {
    let hd = 32 * S;
    let qv: [[__m256; 4]; S] =
        std::array::from_fn(|s| std::array::from_fn(|j| E::load8(q.add(32 * s + 8 * j))));
    let mut r = [_mm256_setzero_ps(); 8];
    for (i, ri) in r.iter_mut().enumerate() {
        let k = keys.add(i * hd);
        let mut a = [_mm256_setzero_ps(); 4];
        for (s, qs) in qv.iter().enumerate() {
            for (j, aj) in a.iter_mut().enumerate() {
                *aj = _mm256_fmadd_ps(E::load8(k.add(32 * s + 8 * j)), qs[j], *aj);
            }
        }
        *ri = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
    }
    // Keys 2m and 2m+1: [lo | lo] + [hi | hi] = [t of 2m | t of 2m+1].
    let t: [__m256; 4] = std::array::from_fn(|m| {
        let (a, b) = (r[2 * m], r[2 * m + 1]);
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    });
    // [t0+t1, t2+t3] of keys 0, 2 | 1, 3, then of 4, 6 | 5, 7; then the pairs' sums:
    // [k0, k2, k4, k6 | k1, k3, k5, k7].
    let w = _mm256_hadd_ps(_mm256_hadd_ps(t[0], t[1]), _mm256_hadd_ps(t[2], t[3]));
    let w = _mm256_permutevar8x32_ps(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_ps(out.as_mut_ptr(), w);
}

/// One query head's lane accumulators of the weighted sum of values, each lane in registers:
/// lane `l < lanes` of output element `d` (at `acc[l·hd + d]`, `hd` = `acc.len() / lanes`, a
/// multiple of 8) is `fma(v_j[d], p'_j, ·)` over the positions `j ≡ l (mod lanes)` in increasing
/// order from +0, `p'_j` = [`Elem::weight`] of `p[j]`: what [`axpy`] into the lane rows
/// position by position leaves there, bit for bit. `spans` are the cache's rows by runs of
/// consecutive positions (`(first position, rows)`, rows of `hd`, in increasing order, covering
/// `0..p.len()`). Lanes are written whole, zeros where no position falls. `prefetch` (bytes, 0:
/// none) is a hint ahead of each row read; `next`, the spans the next call will read (the next KV
/// head's), are prefetched into L2 in order, as many bytes as this call reads (hints only: they
/// change no result). On Zen 4 (one core, 160 positions of 16 KV heads × 96, 48 layers' caches
/// read in turn, 2026-12-07) this pass took 39-44 µs a layer with `next` against 46-54 without.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn weighted_lanes<E: Elem>(
    spans: &[(usize, &[E])],
    p: &[f32],
    lanes: usize,
    acc: &mut [f32],
    prefetch: usize,
    next: &[(usize, &[E])],
) {
    let mut ahead = Ahead::new(prefetch, next);
    assert!(lanes > 0 && acc.len() % lanes == 0);
    let hd = acc.len() / lanes;
    assert!(hd % 8 == 0);
    for &(start, rows) in spans {
        assert!(start + rows.len() / hd.max(1) <= p.len() && rows.len() % hd.max(1) == 0);
    }
    let mut d0 = 0;
    while d0 < hd {
        // Blocks of at most 12 vectors, so a lane's accumulators stay in registers.
        let left = (hd - d0) / 8;
        let take = match left {
            12..=15 | 17.. => 12,
            8.. => 8,
            4.. => 4,
            2.. => 2,
            _ => 1,
        };
        match take {
            12 => lanes_block::<E, 12>(spans, p, lanes, acc, hd, d0, &mut ahead),
            8 => lanes_block::<E, 8>(spans, p, lanes, acc, hd, d0, &mut ahead),
            4 => lanes_block::<E, 4>(spans, p, lanes, acc, hd, d0, &mut ahead),
            2 => lanes_block::<E, 2>(spans, p, lanes, acc, hd, d0, &mut ahead),
            _ => lanes_block::<E, 1>(spans, p, lanes, acc, hd, d0, &mut ahead),
        }
        d0 += 8 * take;
    }
}

/// [`weighted_lanes`]'s prefetches: `distance` bytes past each row it reads (0: none), and a
/// cursor over the rows the next call reads, prefetched into L2 as this one reads as many
/// elements of its own. One head's lane passes read their rows out of order (lane by lane, each
/// every `lanes`-th row), which the hardware prefetcher does not follow, so the next head's come
/// in ahead, in order.
struct Ahead<'a, E> {
    distance: usize,
    spans: &'a [(usize, &'a [E])],
    span: usize,
    at: usize,
    /// Bytes of elements counted but not yet prefetched (below a line).
    owed: usize,
}

impl<'a, E> Ahead<'a, E> {
    fn new(distance: usize, spans: &'a [(usize, &'a [E])]) -> Self {
        Ahead {
            distance,
            spans,
            span: 0,
            at: 0,
            owed: 0,
        }
    }

    /// Prefetch the next `n` elements' lines.
    #[inline(always)]
    fn step(&mut self, n: usize) {
        if self.span >= self.spans.len() {
            return;
        }
        self.owed += n * std::mem::size_of::<E>();
        while self.owed >= 64 {
            let Some(&(_, s)) = self.spans.get(self.span) else {
                return;
            };
            let bytes = std::mem::size_of_val(s);
            if self.at >= bytes {
                self.span += 1;
                self.at = 0;
                continue;
            }
            // SAFETY: a prefetch of an address inside the slice; it reads nothing the program
            // sees and cannot fault.
            unsafe { _mm_prefetch((s.as_ptr() as *const i8).add(self.at), _MM_HINT_T1) };
            self.at += 64;
            self.owed -= 64;
        }
    }
}

/// Output elements `d0..d0 + 8·D` of [`weighted_lanes`] (its checks made).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes_block<E: Elem, const D: usize>(
    spans: &[(usize, &[E])],
    p: &[f32],
    lanes: usize,
    acc: &mut [f32],
    hd: usize,
    d0: usize,
    ahead: &mut Ahead<'_, E>,
) {
    for l in 0..lanes {
        let mut r = [_mm256_setzero_ps(); D];
        for &(start, rows) in spans {
            let end = start + rows.len() / hd;
            let mut j = start + (l + lanes - start % lanes) % lanes;
            while j < end {
                let v = rows.as_ptr().add((j - start) * hd + d0);
                if ahead.distance > 0 {
                    let at = (v as *const u8).wrapping_add(ahead.distance);
                    for b in (0..8 * D * std::mem::size_of::<E>()).step_by(64) {
                        super::x86::prefetch_line(at.wrapping_add(b) as *const f32);
                    }
                }
                ahead.step(8 * D);
                let pv = E::weight8(*p.get_unchecked(j));
                for (d, rd) in r.iter_mut().enumerate() {
                    *rd = _mm256_fmadd_ps(E::load8(v.add(8 * d)), pv, *rd);
                }
                j += lanes;
            }
        }
        let o = acc.as_mut_ptr().add(l * hd + d0);
        for (d, rd) in r.iter().enumerate() {
            _mm256_storeu_ps(o.add(8 * d), *rd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ggml_math;
    use proptest::prelude::*;

    fn avx2() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
            })
            .collect()
    }

    proptest! {
        #[test]
        fn row_operations_equal_their_specification(
            seed in any::<u64>(), n in 0usize..140, m in 0usize..140, p in -4f32..4.0,
        ) {
            if !avx2() {
                return Ok(());
            }
            let (x, y) = (values(seed, n, 3.0), values(seed ^ 0x55, m, 2.0));
            // SAFETY: AVX2 and FMA were detected.
            let (s32, l8) = unsafe { (dot_steps32(&x, &y), dot_lanes8(&x, &y)) };
            prop_assert_eq!(s32.to_bits(), ggml_math::dot_steps32(&x, &y).to_bits());
            prop_assert_eq!(l8.to_bits(), ggml_math::dot_lanes8(&x, &y).to_bits());
            let mut want = y.clone();
            for (a, &v) in want.iter_mut().zip(&x) {
                *a = v.mul_add(p, *a);
            }
            let mut got = y.clone();
            // SAFETY: as above.
            unsafe { axpy(&mut got, &x, p) };
            prop_assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }

        #[test]
        fn half_row_operations_equal_their_specification(
            seed in any::<u64>(), n in 0usize..140, m in 0usize..140, p in -4f32..4.0,
            special in any::<bool>(),
        ) {
            if !(avx2() && is_x86_feature_detected!("f16c")) {
                return Ok(());
            }
            let half = |v: Vec<f32>| -> Vec<u16> {
                v.into_iter().map(crate::quant::f32_to_f16).collect()
            };
            let (mut x, y) = (half(values(seed, n, 300.0)), half(values(seed ^ 0x55, m, 2.0)));
            if special && !x.is_empty() {
                // A subnormal, a negative zero and the largest half.
                let k = x.len();
                x[seed as usize % k] = 0x0001;
                x[(seed >> 8) as usize % k] = 0x8000;
                x[(seed >> 16) as usize % k] = 0x7bff;
            }
            // SAFETY: AVX2, FMA and F16C were detected.
            let (s32, l8) = unsafe { (dot_steps32_f16(&x, &y), dot_lanes8_f16(&x, &y)) };
            prop_assert_eq!(s32.to_bits(), ggml_math::dot_steps32_f16(&x, &y).to_bits());
            prop_assert_eq!(l8.to_bits(), ggml_math::dot_lanes8_f16(&x, &y).to_bits());
            let acc0 = values(seed ^ 0xaa, m, 2.0);
            let mut want = acc0.clone();
            for (a, &v) in want.iter_mut().zip(&x) {
                *a = crate::quant::f16_to_f32(v).mul_add(p, *a);
            }
            let mut got = acc0;
            // SAFETY: as above.
            unsafe { axpy_f16(&mut got, &x, p) };
            prop_assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }

        #[test]
        fn lane_reduction_equals_its_specification(
            seed in any::<u64>(), hd in 1usize..70, lanes8 in any::<bool>(),
        ) {
            if !avx2() {
                return Ok(());
            }
            let lanes = if lanes8 { 8 } else { 32 };
            let acc = values(seed, lanes * hd, 5.0);
            let want: Vec<u32> = (0..hd)
                .map(|d| crate::attention::reduce_lane_sums(&acc, hd, d, lanes8).to_bits())
                .collect();
            let mut o = vec![0f32; hd];
            // SAFETY: AVX2 and FMA were detected.
            unsafe { reduce_lanes(&acc, lanes8, &mut o) };
            prop_assert_eq!(o.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
        }
    }
}
