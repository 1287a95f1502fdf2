//! The RMS norm's sum of squares, `Σ (x_i·x_i as f64)` added one term at a time from the first
//! (ggml's `ggml_compute_forward_rms_norm_f32`), computed thirty-two terms at a time where that gives
//! the same bits, checked against the one-at-a-time specification
//! ([`super::ggml_math::sum_squares`]) by proptest below.
//!
//! The one-at-a-time sum is a chain of dependent f64 additions, bound by the addition's latency
//! (about 3.3 cycles a term on Zen 4: 1.4 µs for 1536 values, 0.2 ms of a 700M decode step). Every
//! addition of it is exact, and so any order gives the same bits, when every term and the running
//! sum are whole multiples of the last bit of every partial sum. The terms are squares, never
//! negative, so the partial sums only grow: a block of terms is added as a tree and then to the
//! running sum, and kept when the block's terms and the running sum are multiples of `2^(E − 52)`,
//! the last bit of the new running sum as computed (`E` its exponent). Rounding is monotone and
//! every operand is at least zero, so a computed sum below `2^(E + 1)` means the true one is below
//! it too (the first partial sum at or past a power of two would have rounded to at least that
//! power, and every sum above it with it); then the true new sum and every partial sum on the way,
//! in either order, are multiples of `2^(E − 52)` below `2^(E + 1)`, representable, so no addition
//! rounded, and the computed sum is the specification's. A block that fails the check, or holds an
//! infinite or NaN square, is added one term at a time, as is the tail past the last block.
//!
//! The check fails only where a square is far below the running sum (2^29 times smaller and
//! more, a value below about 1/20,000 of the row's root mean square): rare in activations, and
//! then that block costs what it always did.

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use super::ggml_math::sum_squares as sum_squares_seq;

/// Terms per block.
const BLOCK: usize = 32;

/// `Σ (x·x as f64)` with exactly [`super::ggml_math::sum_squares`]'s bits (see the module docs). The caller must
/// have checked AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn sum_squares(x: &[f32]) -> f64 {
    sum_squares_counted(x).0
}

/// [`sum_squares`] and the number of blocks it added whole.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sum_squares_counted(x: &[f32]) -> (f64, usize) {
    let mut whole = 0;
    let mut s = 0f64;
    let mut blocks = x.chunks_exact(BLOCK);
    let (zero, inf) = (_mm256_setzero_ps(), _mm256_set1_ps(f32::INFINITY));
    for b in &mut blocks {
        let p = b.as_ptr();
        let t: [__m256; 4] = std::array::from_fn(|i| {
            let v = _mm256_loadu_ps(p.add(8 * i));
            _mm256_mul_ps(v, v)
        });
        // The smallest nonzero square bounds the block's last bits (zeros add nothing: counted
        // as infinity here). An infinite or NaN square makes the block's sum infinite or NaN,
        // which `exact_step` refuses.
        let nz = |t: __m256| _mm256_blendv_ps(t, inf, _mm256_cmp_ps::<_CMP_EQ_OQ>(t, zero));
        let m = _mm256_min_ps(
            _mm256_min_ps(nz(t[0]), nz(t[1])),
            _mm256_min_ps(nz(t[2]), nz(t[3])),
        );
        let m = _mm_min_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_min_ss(m, _mm_movehdup_ps(m));
        let emin = ((_mm_cvtss_f32(m).to_bits() >> 23) & 0xff).min(255);
        // The block as a tree of f64 additions: its eighths, then the lanes.
        let w = |t: __m256, hi: bool| {
            _mm256_cvtps_pd(if hi {
                _mm256_extractf128_ps::<1>(t)
            } else {
                _mm256_castps256_ps128(t)
            })
        };
        let q: [__m256d; 4] = std::array::from_fn(|i| _mm256_add_pd(w(t[i], false), w(t[i], true)));
        let q = _mm256_add_pd(_mm256_add_pd(q[0], q[1]), _mm256_add_pd(q[2], q[3]));
        let h = _mm_add_pd(_mm256_castpd256_pd128(q), _mm256_extractf128_pd::<1>(q));
        let bsum = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
        let new = s + bsum;
        if exact_step(s, new, emin) {
            s = new;
            whole += 1;
            continue;
        }
        s = sum_squares_seq(b, s);
    }
    (sum_squares_seq(blocks.remainder(), s), whole)
}

/// Whether `new` (the running sum `s` plus a block of squares, computed) is exact: `s` and every
/// nonzero square (its smallest biased f32 exponent `emin`, 255 when there is none) are multiples
/// of `2^(E − 52)`, `E` the exponent of `new`.
#[inline(always)]
fn exact_step(s: f64, new: f64, emin: u32) -> bool {
    let nb = new.to_bits();
    let ne = ((nb >> 52) & 0x7ff) as i64;
    if ne == 0 || ne == 0x7ff {
        // Zero (nothing added yet: exact), a subnormal, or an overflow: the exact path only for
        // zero.
        return new == 0.0;
    }
    let unit = ne - 1023 - 52;
    // A square's last bit: 2^(e − 150) for a normal f32 exponent e (subnormals: 2^−149, below).
    if emin < 255 && (emin.max(1) as i64) - 150 < unit {
        return false;
    }
    if s == 0.0 {
        return true;
    }
    let sb = s.to_bits();
    let se = ((sb >> 52) & 0x7ff) as i64;
    if se == 0 {
        return false;
    }
    // `s`'s last possible bit is 2^(se − 1023 − 52); the bits below `unit` must be zero.
    let low = unit - (se - 1023 - 52);
    if low <= 0 {
        return true;
    }
    if low > 53 {
        return false;
    }
    let m = (sb & ((1u64 << 52) - 1)) | (1u64 << 52);
    m & ((1u64 << low) - 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn avx2() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    /// Values from bit patterns: every exponent, signs, zeros, subnormals, infinities, NaNs.
    fn any_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -4.0f32..4.0,
            2 => any::<u32>().prop_map(f32::from_bits),
            1 => (-30i32..5, -1.0f32..1.0).prop_map(|(e, m)| m * 2f32.powi(e)),
            1 => prop::sample::select(vec![0.0f32, -0.0, 1e-30, f32::MIN_POSITIVE, 1e-45]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn blocks_give_the_one_at_a_time_bits(x in prop::collection::vec(any_f32(), 0..200)) {
            prop_assume!(avx2());
            let want = sum_squares_seq(&x, 0.0);
            // SAFETY: AVX2 checked.
            let got = unsafe { sum_squares(&x) };
            // A NaN's payload is whichever operand's the compiler put first (in C too): NaN is
            // all that is specified.
            if want.is_nan() {
                prop_assert!(got.is_nan(), "{:?}: {}", x, got);
            } else {
                prop_assert_eq!(got.to_bits(), want.to_bits(), "{:?}", x);
            }
        }

        /// Rows like a layer's activations: most values of one scale, a few far smaller (each
        /// forcing its block onto the one-at-a-time path), and long rows whose running sum
        /// crosses many powers of two.
        #[test]
        fn activation_rows_give_the_one_at_a_time_bits(
            seed in any::<u64>(), n in 1usize..5000, scale in -8i32..8, tiny in 0usize..6,
        ) {
            prop_assume!(avx2());
            let mut s = seed | 1;
            let mut f = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0 };
            let mut x: Vec<f32> = (0..n).map(|_| f() * 2f32.powi(scale)).collect();
            for k in 0..tiny {
                let i = (k * 7919 + seed as usize) % n;
                x[i] *= 2f32.powi(-20 - 5 * k as i32);
            }
            let want = sum_squares_seq(&x, 0.0);
            // SAFETY: AVX2 checked.
            let got = unsafe { sum_squares(&x) };
            prop_assert_eq!(got.to_bits(), want.to_bits());
        }
    }

    #[test]
    fn rows_of_one_scale_are_added_block_by_block() {
        if !avx2() {
            return;
        }
        // 1536 values between 0.25 and 1: every square within 2^4 of the others, the sum below
        // 2^11, so every block is exact and taken whole (the tail of 0 values too: none).
        let x: Vec<f32> = (0..1536).map(|i| 0.25 + (i % 97) as f32 / 130.0).collect();
        // SAFETY: AVX2 checked.
        let (got, whole) = unsafe { sum_squares_counted(&x) };
        assert_eq!(whole, 1536 / BLOCK);
        assert_eq!(got.to_bits(), sum_squares_seq(&x, 0.0).to_bits());
        // One value 2^-20 of the others puts its block on the one-at-a-time path, which leaves
        // the running sum's last bit set half the time: a later block that carries the sum past
        // a power of two is then added one at a time too (here two of the blocks after it).
        let mut y = x.clone();
        y[100] *= 2f32.powi(-20);
        // SAFETY: AVX2 checked.
        let (got, whole) = unsafe { sum_squares_counted(&y) };
        assert!((1536 / BLOCK - 4..1536 / BLOCK).contains(&whole), "{whole}");
        assert_eq!(got.to_bits(), sum_squares_seq(&y, 0.0).to_bits());
    }

    #[test]
    fn a_sum_that_crosses_a_power_of_two_with_its_last_bit_set_is_not_taken_whole() {
        // Hand-worked: 1 + 2^-52 (the running sum after the first block, its last bit set) plus
        // a block that carries it past 2 must round as the one-at-a-time sum does; 1 + 2^-52
        // plus a block that keeps it below 2 is exact.
        if !avx2() {
            return;
        }
        let mut x = vec![0f32; 32];
        x[0] = 1.0;
        // 2^-26 squared is 2^-52.
        x[1] = 2f32.powi(-26);
        x[16] = 1.0;
        let want = sum_squares_seq(&x, 0.0);
        // SAFETY: AVX2 checked.
        let got = unsafe { sum_squares(&x) };
        assert_eq!(got.to_bits(), want.to_bits());
        // The running sum 1 + 2^-52 plus 1 rounds: the last bit is lost.
        assert_eq!(want, 2.0);
        assert!(!exact_step(1.0 + f64::EPSILON, 2.0, 127));
        assert!(exact_step(1.0, 2.0, 127));
        assert!(exact_step(1.0 + f64::EPSILON, 1.5 + f64::EPSILON, 126));
        // A square whose last bit (2^(e − 150), e = 97: 2^-53) is below the sum's (2^-52).
        assert!(!exact_step(1.0, 1.5, 97));
        assert!(exact_step(1.0, 1.5, 98));
    }
}
