//! ggml's `ggml_v_expf` (AVX2 + FMA) on eight lanes at once, and the two loops of the decode step
//! built on it: the SiLU of `ggml_vec_swiglu_f32`'s vector groups and the exponentials of
//! `ggml_vec_soft_max_f32`. Each is the specification's operations in its order ([`expf_lane`],
//! [`silu_lane`] and [`super::ggml_math::softmax`]'s groups, lane by lane), so the same bits;
//! held to it by proptest below (with arguments past both of `ggml_v_expf`'s range limits) and
//! through [`super::ggml_math`]'s tests.
//!
//! The lane-by-lane specification compiled for AVX2 was left scalar by the compiler (its
//! branches for large arguments): 6-8 µs for the 700M shape's 4096 SwiGLU elements and 8 µs for
//! 16 heads' softmax over 193 positions, about 0.4 ms of a one-thread decode step.
//!
//! Callers must have checked AVX2 and FMA; the functions are `unsafe` for that reason only and
//! read and write nothing outside the slices they are given.
//!
//! [`expf_lane`]: super::ggml_math::expf_lane
//! [`silu_lane`]: super::ggml_math::silu_lane

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

/// `ggml_v_expf` (ggml-cpu `vec.h`, AVX2 + FMA): a degree-5 polynomial on the argument reduced by
/// `n·ln 2`, scaled by `2^n` through the exponent bits; lanes with `|n| > 126` take the scaling in
/// two factors, and those with `|n| > 192` saturate (`s1²`: 0 or +∞).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn expf8(x: __m256) -> __m256 {
    let r = _mm256_set1_ps(f32::from_bits(0x4b40_0000)); // 0x1.8p23
    let z = _mm256_fmadd_ps(x, _mm256_set1_ps(f32::from_bits(0x3fb8_aa3b)), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(
        n,
        _mm256_set1_ps(f32::from_bits(0x35bf_be8e)),
        _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x3f31_7200)), x),
    );
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_castps_si256(_mm256_set1_ps(1.0)),
    ));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let c = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let p = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(p(0x3c07_2010), b, p(0x3d2b_9f17)),
            u,
            _mm256_fmadd_ps(p(0x3e2a_af33), b, p(0x3eff_fedb)),
        ),
        u,
        _mm256_mul_ps(p(0x3f7f_fff6), b),
    );
    if _mm256_movemask_ps(c) == 0 {
        return _mm256_fmadd_ps(j, k, k);
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let d = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    _mm256_or_ps(
        _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(
            d,
            _mm256_or_ps(
                _mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)),
            ),
        ),
    )
}

/// `ggml_v_silu`: `x / (1 + ggml_v_expf(0 − x))`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu8(x: __m256) -> __m256 {
    let e = expf8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// `out[i] = silu_lane(gate[i]) · up[i]` for every `i` of the shortest of the three: eight at a
/// time, the last few through a padded group (each lane is its own chain, so where the groups
/// fall changes nothing).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = out.len().min(gate.len()).min(up.len());
    let n8 = n & !7;
    let (g, u, o) = (gate.as_ptr(), up.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i < n8 {
        let y = _mm256_mul_ps(silu8(_mm256_loadu_ps(g.add(i))), _mm256_loadu_ps(u.add(i)));
        _mm256_storeu_ps(o.add(i), y);
        i += 8;
    }
    if n8 < n {
        let (mut gt, mut ut, mut ot) = ([0f32; 8], [0f32; 8], [0f32; 8]);
        gt[..n - n8].copy_from_slice(&gate[n8..n]);
        ut[..n - n8].copy_from_slice(&up[n8..n]);
        let y = _mm256_mul_ps(
            silu8(_mm256_loadu_ps(gt.as_ptr())),
            _mm256_loadu_ps(ut.as_ptr()),
        );
        _mm256_storeu_ps(ot.as_mut_ptr(), y);
        out[n8..n].copy_from_slice(&ot[..n - n8]);
    }
}

/// The softmax's whole groups: `p[i] = ggml_v_expf(p[i] − max)` for the first `p.len() / 8 · 8`
/// values, and each group's sum ([`super::x86::hsum8`]: `(r0 + r2) + (r1 + r3)` of
/// `r = hi + lo`, as `ggml_vec_soft_max_f32` reduces it) added in turn to an f64 total, which is
/// returned.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp_groups(p: &mut [f32], max: f32) -> f64 {
    let n8 = p.len() & !7;
    let m = _mm256_set1_ps(max);
    let ptr = p.as_mut_ptr();
    let mut sum = 0f64;
    let mut i = 0;
    while i < n8 {
        let v = expf8(_mm256_sub_ps(_mm256_loadu_ps(ptr.add(i)), m));
        _mm256_storeu_ps(ptr.add(i), v);
        sum += super::x86::hsum8(v) as f64;
        i += 8;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ggml_math::{expf_lane, silu_lane};
    use crate::kernels::scalar::hsum8;
    use proptest::prelude::*;

    fn avx2() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    /// Arguments across `ggml_v_expf`'s ranges: ordinary, past `|n| > 126` (about |x| > 87.3)
    /// and past `|n| > 192` (|x| > 133), the infinities, NaN, zeros and subnormals.
    fn arg() -> impl Strategy<Value = f32> {
        prop_oneof![
            -20f32..20.0,
            -200f32..200.0,
            prop::sample::select(vec![
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                f32::MIN_POSITIVE / 4.0,
                87.0,
                -87.5,
                88.8,
                -103.9,
                133.0,
                -133.5,
                f32::MAX,
                f32::MIN,
            ]),
            any::<f32>(),
        ]
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn lanes_are_the_scalar_specification(xs in prop::collection::vec(arg(), 8)) {
            if !avx2() {
                return Ok(());
            }
            let mut e = [0f32; 8];
            let mut s = [0f32; 8];
            // SAFETY: AVX2 and FMA detected.
            unsafe {
                let x = _mm256_loadu_ps(xs.as_ptr());
                _mm256_storeu_ps(e.as_mut_ptr(), expf8(x));
                _mm256_storeu_ps(s.as_mut_ptr(), silu8(x));
            }
            let want_e: Vec<f32> = xs.iter().map(|&x| expf_lane(x)).collect();
            let want_s: Vec<f32> = xs.iter().map(|&x| silu_lane(x)).collect();
            prop_assert_eq!(bits(&e), bits(&want_e), "expf of {:?}", xs);
            prop_assert_eq!(bits(&s), bits(&want_s), "silu of {:?}", xs);
        }

        #[test]
        fn loops_are_the_scalar_specification(
            xs in prop::collection::vec(arg(), 0..70),
            max in -30f32..30.0,
        ) {
            if !avx2() {
                return Ok(());
            }
            let up: Vec<f32> = xs.iter().enumerate().map(|(i, x)| x * 0.37 - i as f32).collect();
            let mut got = vec![0f32; xs.len()];
            // SAFETY: AVX2 and FMA detected.
            unsafe { silu_mul(&xs, &up, &mut got) };
            let want: Vec<f32> = xs.iter().zip(&up).map(|(&g, &u)| silu_lane(g) * u).collect();
            prop_assert_eq!(bits(&got), bits(&want));

            let mut p = xs.clone();
            // SAFETY: as above.
            let sum = unsafe { exp_groups(&mut p, max) };
            let n8 = xs.len() / 8 * 8;
            let mut want_sum = 0f64;
            let mut want_p = xs.clone();
            for c in want_p[..n8].chunks_exact_mut(8) {
                let mut v = [0f32; 8];
                for l in 0..8 {
                    v[l] = expf_lane(c[l] - max);
                }
                c.copy_from_slice(&v);
                want_sum += hsum8(v) as f64;
            }
            prop_assert_eq!(bits(&p), bits(&want_p));
            prop_assert_eq!(sum.to_bits(), want_sum.to_bits());
        }
    }

    /// Hand-worked values: e^0 = 1, e^1 within the polynomial's error of e, saturation to 0 and
    /// +∞ beyond the range, NaN carried.
    #[test]
    fn hand_cases() {
        if !avx2() {
            return;
        }
        let x = [0.0, 1.0, -200.0, 200.0, f32::NAN, -1.0, 10.0, -0.0];
        let mut e = [0f32; 8];
        // SAFETY: AVX2 and FMA detected.
        unsafe { _mm256_storeu_ps(e.as_mut_ptr(), expf8(_mm256_loadu_ps(x.as_ptr()))) };
        assert_eq!(e[0], 1.0);
        assert!((e[1] - std::f32::consts::E).abs() < 1e-6);
        assert_eq!(e[2], 0.0);
        assert_eq!(e[3], f32::INFINITY);
        assert!(e[4].is_nan());
        assert!((e[5] - (-1f32).exp()).abs() < 1e-7);
        assert!((e[6] - 10f32.exp()).abs() / 10f32.exp() < 1e-6);
        assert_eq!(e[7], 1.0);
    }
}
