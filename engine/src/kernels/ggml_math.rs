//! ggml's CPU element-wise math, bit for bit as the llama.cpp build this project pins executes
//! it (x86-64 AVX2 + FMA, `.cargo/config.toml`): the scalar specification of the softmax, SiLU and
//! the attention's float products. Each function is written lane by lane, with `mul_add` wherever
//! ggml issues an FMA instruction, so it gives the same bits on every target; the x86 copies
//! (the same bodies compiled with AVX2 + FMA, picked by [`Kernel`]; SwiGLU's and the softmax's
//! exponentials eight lanes at a time in [`super::x86_expf`]) are held to the portable ones by
//! proptest (`tests` below).
//!
//! - [`expf_lane`]: one lane of `ggml_v_expf` (ggml-cpu `vec.h`, the AVX2/FMA version adapted from
//!   Arm's optimized routines: a degree-5 polynomial on a reduced argument, with its own handling of
//!   large magnitudes). It is *not* libm's `expf`: the two differ in the last bits.
//! - [`silu_lane`]: `ggml_v_silu`, `x / (1 + ggml_v_expf(0 − x))`.
//! - [`swiglu`]: `ggml_vec_swiglu_f32`: the elements of a row in whole groups of 8 from its start
//!   take [`silu_lane`]; the rest `ggml_silu_f32` (`x / (1 + expf(−x))` with libm's `expf`).
//! - [`softmax`]: `ggml_vec_soft_max_f32` after `ggml_vec_max_f32`: groups of 8 positions from
//!   position 0, each exponentiated by [`expf_lane`], summed as `hsum8` in f32 and added to an f64
//!   total; then every value times `(float)(1.0 / total)`. The reference's rows are padded to a
//!   multiple of 256 positions with masked (−∞) entries, whose exponentials are exactly 0, so every
//!   real position falls in a whole group.
//! - [`dot_steps32`] / [`dot_lanes8`]: the two orders of an F32 dot product in ggml's matrix
//!   products: `ggml_vec_dot_f32` (four 8-lane FMA accumulators over steps of 32, reduced
//!   `(a0+a2)+(a1+a3)`, the lanes summed as two `_mm_hadd_ps`, a tail added in f32) and tinyBLAS
//!   (`llamafile_sgemm`: one 8-lane FMA accumulator, summed as `hsum8`), which ggml takes for a
//!   product of two or more columns whose row count divides by 4 and length by 8.
//! - [`sum_squares`]: the RMS norm's `Σ (x·x as f64)` (`ggml_compute_forward_rms_norm_f32`), one
//!   term at a time from the first (block by block where that is exact: [`super::x86_norm`]).
//! - [`dot_steps32_f16`] / [`dot_lanes8_f16`]: the same two orders over an F16 cache
//!   (`ggml_vec_dot_f16`, whose tail is summed in f64, and tinyBLAS's F16 × F16 form), which ggml
//!   takes after rounding the F32 operand (the query, the probabilities) to F16.

use crate::kernels::scalar::{hadd8, hsum8};
use crate::kernels::Kernel;

const R: u32 = 0x4b40_0000; // 0x1.8p23
const LOG2E: u32 = 0x3fb8_aa3b; // 0x1.715476p+0
const LN2_HI: u32 = 0x3f31_7200; // 0x1.62e4p-1
const LN2_LO: u32 = 0x35bf_be8e; // 0x1.7f7d1cp-20
const P5: u32 = 0x3c07_2010; // 0x1.0e4020p-7
const P4: u32 = 0x3d2b_9f17; // 0x1.573e2ep-5
const P3: u32 = 0x3e2a_af33; // 0x1.555e66p-3
const P2: u32 = 0x3eff_fedb; // 0x1.fffdb6p-2
const P1: u32 = 0x3f7f_fff6; // 0x1.ffffecp-1

#[inline(always)]
fn f(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// `s` plus `Σ (v·v as f64)` over `x`, one term at a time from the first: the RMS norm's sum of
/// squares as ggml adds it (from `s` = 0).
pub fn sum_squares(x: &[f32], mut s: f64) -> f64 {
    for &v in x {
        s += (v * v) as f64;
    }
    s
}

/// One lane of ggml's `ggml_v_expf` (AVX2 + FMA).
#[inline(always)]
pub fn expf_lane(x: f32) -> f32 {
    let r = f(R);
    let z = x.mul_add(f(LOG2E), r);
    let n = z - r;
    // _mm256_fnmadd_ps(a, b, c) = −(a·b) + c, one rounding.
    let b = (-n).mul_add(f(LN2_LO), (-n).mul_add(f(LN2_HI), x));
    let e = z.to_bits() << 23;
    let k = f(e.wrapping_add(1f32.to_bits()));
    let c = n.abs() > 126.0;
    let u = b * b;
    let j = f(P5)
        .mul_add(b, f(P4))
        .mul_add(u, f(P3).mul_add(b, f(P2)))
        .mul_add(u, f(P1) * b);
    if !c {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f(g.wrapping_add(0x7f00_0000));
    let s2 = f(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// One lane of `ggml_v_silu`.
#[inline(always)]
pub fn silu_lane(x: f32) -> f32 {
    x / (1.0 + expf_lane(0.0 - x))
}

/// `ggml_silu_f32`: the scalar tail of ggml's vector loops (libm's `expf`).
#[inline(always)]
pub fn silu_tail(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Whether the x86 AVX2 + FMA copies may run for `kernel`.
#[inline]
fn use_fma(kernel: Kernel) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        matches!(kernel, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        false
    }
}

/// Defines `$name(kernel, args...)`: the portable `$body` function, or its AVX2 + FMA copy when
/// `kernel` allows (same operations, so the same bits; checked by the tests below).
macro_rules! dispatch {
    ($(#[$m:meta])* pub fn $name:ident / $body:ident / $avx:ident ($($a:ident : $t:ty),*) $(-> $r:ty)?) => {
        $(#[$m])*
        pub fn $name(kernel: Kernel, $($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if use_fma(kernel) {
                // SAFETY: AVX2 and FMA were detected on this CPU (`use_fma`).
                return unsafe { $avx($($a),*) };
            }
            let _ = kernel;
            $body($($a),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx($($a: $t),*) $(-> $r)? {
            $body($($a),*)
        }
    };
}

/// [`swiglu`]'s rows: `groups(gate, up, out)` computes `silu_lane(gate)·up` over each row's
/// elements before its last whole group of 8 ends, [`silu_tail`] the rest.
#[inline(always)]
fn swiglu_runs(
    gate: &[f32],
    up: &[f32],
    out: &mut [f32],
    width: usize,
    first: usize,
    mut groups: impl FnMut(&[f32], &[f32], &mut [f32]),
) {
    let vec_end = width & !7;
    // Element `first + i` of the flattened rows sits at column `(first + i) % width`.
    let mut col = first % width;
    let mut i = 0;
    let n = out.len();
    while i < n {
        let run = (width - col).min(n - i);
        let split = vec_end.saturating_sub(col).min(run);
        groups(
            &gate[i..i + split],
            &up[i..i + split],
            &mut out[i..i + split],
        );
        for t in i + split..i + run {
            out[t] = silu_tail(gate[t]) * up[t];
        }
        i += run;
        col = 0;
    }
}

fn swiglu_body(gate: &[f32], up: &[f32], out: &mut [f32], width: usize, first: usize) {
    swiglu_runs(gate, up, out, width, first, |g, u, o| {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = silu_lane(g) * u;
        }
    });
}

/// `ggml_vec_swiglu_f32` over flattened rows of `width` elements: `out[i] =
/// silu(gate[i])·up[i]`, where `gate`, `up` and `out` start at element `first` of the rows (so a
/// thread's share of the elements computes what the whole would). Where `kernel` allows, the
/// vector groups run eight lanes at once ([`super::x86_expf::silu_mul`], the same bits).
pub fn swiglu(
    kernel: Kernel,
    gate: &[f32],
    up: &[f32],
    out: &mut [f32],
    width: usize,
    first: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if use_fma(kernel) {
        return swiglu_runs(gate, up, out, width, first, |g, u, o| {
            // SAFETY: AVX2 and FMA were detected on this CPU (`use_fma`).
            unsafe { super::x86_expf::silu_mul(g, u, o) }
        });
    }
    let _ = kernel;
    swiglu_body(gate, up, out, width, first)
}

/// bitnet.cpp's ReLU² FFN gate (LLM_FFN_RELU_SQR, then LLM_FFN_PAR): `ggml_relu` (`x > 0 ? x :
/// 0`, so −0 and NaN give +0), `ggml_sqr` (`r·r`) and `ggml_mul` by `up`, each rounded to f32.
/// Element by element, so any split over threads or vector lanes gives the same bits.
pub fn relu2_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let r = if g > 0.0 { g } else { 0.0 };
        *o = (r * r) * u;
    }
}

/// [`softmax`] with `groups(values, max)` exponentiating the whole groups of 8 from the start and
/// returning their sums (each group's `hsum8` added in turn to an f64 total).
#[inline(always)]
fn softmax_with(p: &mut [f32], groups: impl FnOnce(&mut [f32], f32) -> f64) {
    let mut max = f32::NEG_INFINITY;
    for &v in p.iter() {
        // ggml_vec_max_f32: MAX(max, x) = (max > x ? max : x).
        max = if max > v { max } else { v };
    }
    let n8 = p.len() / 8 * 8;
    let (whole, rest) = p.split_at_mut(n8);
    let mut sum = groups(whole, max);
    if !rest.is_empty() {
        // The reference's row goes on with masked positions (exponentials exactly 0) to a multiple
        // of 8: the group is whole there too.
        let mut vals = [0f32; 8];
        for (l, v) in rest.iter().enumerate() {
            vals[l] = expf_lane(v - max);
        }
        rest.copy_from_slice(&vals[..rest.len()]);
        sum += hsum8(vals) as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in p.iter_mut() {
        *v *= inv;
    }
}

#[inline(always)]
pub(crate) fn softmax_body(p: &mut [f32]) {
    softmax_with(p, |whole, max| {
        let mut sum = 0f64;
        for c in whole.chunks_exact_mut(8) {
            let mut vals = [0f32; 8];
            for l in 0..8 {
                vals[l] = expf_lane(c[l] - max);
            }
            c.copy_from_slice(&vals);
            sum += hsum8(vals) as f64;
        }
        sum
    })
}

/// [`softmax_body`] with its groups eight lanes at once ([`super::x86_expf::exp_groups`], the
/// same bits). The caller must have checked AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn softmax_fma(p: &mut [f32]) {
    // SAFETY: the caller checked AVX2 and FMA.
    softmax_with(p, |whole, max| unsafe {
        super::x86_expf::exp_groups(whole, max)
    })
}

/// Softmax of the scaled, unmasked scores `p` in place, as ggml's `soft_max_f32` computes a row
/// whose other entries are masked.
pub fn softmax(kernel: Kernel, p: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if use_fma(kernel) {
        // SAFETY: AVX2 and FMA were detected on this CPU (`use_fma`).
        return unsafe { softmax_fma(p) };
    }
    let _ = kernel;
    softmax_body(p)
}

#[inline(always)]
fn rope_rotate_body(x: &mut [f32], head_dim: usize, cs: &[(f32, f32)], adjacent: bool) {
    let half = cs.len();
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(c, s)) in cs.iter().enumerate() {
            let (i, half) = if adjacent { (2 * i, 1) } else { (i, half) };
            let (a, b) = (head[i], head[i + half]);
            // ggml's rotate_pairs, `x0·cos − x1·sin` and `x0·sin + x1·cos`, as GCC contracts
            // them (-ffp-contract=fast with FMA): the first product fused into the sum.
            head[i] = a.mul_add(c, -(b * s));
            head[i + half] = a.mul_add(s, b * c);
        }
    }
}

dispatch! {
    /// The NEOX rotation of every head (`head_dim` values) of `x` by the angles' `(cos, sin)`,
    /// pairs `(i, i + cs.len())` (or `(2i, 2i+1)` with `adjacent`, a planted bug's pairing).
    pub fn rope_rotate / rope_rotate_body / rope_rotate_avx2(x: &mut [f32], head_dim: usize, cs: &[(f32, f32)], adjacent: bool)
}

/// `ggml_vec_dot_f32`'s order (AVX2): four 8-lane FMA accumulators over steps of 32, reduced
/// `(a0+a2)+(a1+a3)` and [`hadd8`], the elements past the last whole step added one by one in f32
/// ([`f32_tail`]: the last `n % 4` of them fused).
#[inline(always)]
pub fn dot_steps32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !31;
    let mut acc = [[0f32; 8]; 4];
    let (xs, ys) = (&x[..np], &y[..np]);
    for (xc, yc) in xs.chunks_exact(32).zip(ys.chunks_exact(32)) {
        for j in 0..4 {
            for l in 0..8 {
                acc[j][l] = xc[8 * j + l].mul_add(yc[8 * j + l], acc[j][l]);
            }
        }
    }
    let mut r = [0f32; 8];
    for l in 0..8 {
        r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    f32_tail(hadd8(r), np, n, |i| (x[i], y[i]))
}

/// The elements `np..n` of `ggml_vec_dot_f32` (`sumf += x[i]*y[i]`) added to `sum` as the pinned
/// build's GCC compiles the loop (`-ffp-contract=fast`, checked in its object code): the products
/// of each whole group of 8, then of a group of 4, rounded (`vmulps`) and added one by one; the
/// last `(n − np) % 4` fused into the sum (`vfmadd231ss`).
#[inline(always)]
pub fn f32_tail(mut sum: f32, np: usize, n: usize, xy: impl Fn(usize) -> (f32, f32)) -> f32 {
    let fused_from = n - (n - np) % 4;
    for i in np..n {
        let (a, b) = xy(i);
        sum = if i < fused_from {
            sum + a * b
        } else {
            a.mul_add(b, sum)
        };
    }
    sum
}

/// tinyBLAS's order (AVX2): one 8-lane FMA accumulator, a ragged tail as a zero-padded step,
/// summed as [`hsum8`].
#[inline(always)]
pub fn dot_lanes8(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = [0f32; 8];
    let mut xc = x[..n].chunks_exact(8);
    let mut yc = y[..n].chunks_exact(8);
    for (a, b) in (&mut xc).zip(&mut yc) {
        for l in 0..8 {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    for (l, (a, b)) in xc.remainder().iter().zip(yc.remainder()).enumerate() {
        acc[l] = a.mul_add(*b, acc[l]);
    }
    hsum8(acc)
}

/// `ggml_vec_dot_f16`'s order (AVX2 + F16C) of two rows of IEEE halves (bits): the halves widened
/// to f32 (exactly), then [`dot_steps32`]'s four 8-lane FMA accumulators and reduction, except that
/// the elements past the last whole step are added in f64 (ggml's `ggml_float` total), each
/// product rounded to f32 first, and the total rounded to f32 once at the end.
#[inline(always)]
pub fn dot_steps32_f16(x: &[u16], y: &[u16]) -> f32 {
    let h = crate::quant::f16_to_f32;
    let n = x.len().min(y.len());
    let np = n & !31;
    let mut acc = [[0f32; 8]; 4];
    for i in (0..np).step_by(32) {
        for (j, accj) in acc.iter_mut().enumerate() {
            for (l, a) in accj.iter_mut().enumerate() {
                let k = i + 8 * j + l;
                *a = h(x[k]).mul_add(h(y[k]), *a);
            }
        }
    }
    let mut r = [0f32; 8];
    for l in 0..8 {
        r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut sum = hadd8(r) as f64;
    for i in np..n {
        sum += (h(x[i]) * h(y[i])) as f64;
    }
    sum as f32
}

/// tinyBLAS's order (AVX2 + F16C) of two rows of IEEE halves (bits): [`dot_lanes8`] on the halves
/// widened to f32 (`load` is `_mm256_cvtph_ps`; a ragged tail is loaded zero-padded by
/// `load_partial`).
#[inline(always)]
pub fn dot_lanes8_f16(x: &[u16], y: &[u16]) -> f32 {
    let h = crate::quant::f16_to_f32;
    let n = x.len().min(y.len());
    let mut acc = [0f32; 8];
    for i in 0..n {
        acc[i % 8] = h(x[i]).mul_add(h(y[i]), acc[i % 8]);
    }
    hsum8(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Hand-worked values: e^0 = 1 exactly (b = 0, j = 0, k = 1); e^−∞ = 0 (the masked
    /// entries); large arguments overflow to +∞ and very negative ones flush to 0, as ggml's
    /// comments say (above 88.38, beneath −103.97).
    #[test]
    fn expf_lane_hand_cases() {
        assert_eq!(expf_lane(0.0), 1.0);
        assert_eq!(expf_lane(-0.0), 1.0);
        assert_eq!(expf_lane(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf_lane(89.0), f32::INFINITY);
        assert_eq!(expf_lane(-104.0), 0.0);
        assert!(expf_lane(f32::NAN).is_nan());
        // Within ggml's stated error (1.45 ulp + 0.5) of the f64 exponential.
        for i in -2000..2000 {
            let x = i as f32 * 0.0437;
            let want = (x as f64).exp();
            let got = expf_lane(x) as f64;
            let ulp = (want as f32).abs() * f32::EPSILON;
            assert!(
                (got - want).abs() <= 2.0 * ulp as f64,
                "{x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn silu_lane_hand_cases() {
        assert_eq!(silu_lane(0.0), 0.0);
        // silu(x) → x for large x, → −0 for very negative x.
        assert_eq!(silu_lane(200.0), 200.0);
        assert_eq!(silu_lane(-200.0), -0.0);
    }

    proptest! {
        #[test]
        fn compiled_copies_equal_the_portable_bodies(
            xs in proptest::collection::vec(-120f32..120.0, 1..200),
            width in 1usize..40,
            first in 0usize..100,
        ) {
            let up: Vec<f32> = xs.iter().map(|x| x * 0.37 - 1.0).collect();
            let mut want = vec![0f32; xs.len()];
            swiglu_body(&xs, &up, &mut want, width, first);
            // Element by element from the definition.
            for (i, w) in want.iter().enumerate() {
                let col = (first + i) % width;
                let e = if col < (width & !7) { silu_lane(xs[i]) } else { silu_tail(xs[i]) } * up[i];
                prop_assert_eq!(w.to_bits(), e.to_bits());
            }
            let cs: Vec<(f32, f32)> = (0..3).map(|i| ((i as f32).cos(), (i as f32).sin())).collect();
            let mut rope_want = xs.clone();
            rope_rotate_body(&mut rope_want, 6, &cs, false);
            for k in Kernel::available() {
                let mut r = xs.clone();
                rope_rotate(k, &mut r, 6, &cs, false);
                prop_assert_eq!(bits(&r), bits(&rope_want), "rope {:?}", k);
            }
            let mut sm = xs.clone();
            softmax_body(&mut sm);
            let d1 = dot_steps32(&xs, &up);
            let d2 = dot_lanes8(&xs, &up);
            for k in Kernel::available() {
                let mut got = vec![0f32; xs.len()];
                swiglu(k, &xs, &up, &mut got, width, first);
                prop_assert_eq!(bits(&got), bits(&want), "swiglu {:?}", k);
                let mut s = xs.clone();
                softmax(k, &mut s);
                prop_assert_eq!(bits(&s), bits(&sm), "softmax {:?}", k);
            }
            #[cfg(target_arch = "x86_64")]
            if use_fma(Kernel::Avx2) {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn dots(x: &[f32], y: &[f32]) -> (f32, f32) {
                    (dot_steps32(x, y), dot_lanes8(x, y))
                }
                // SAFETY: AVX2 and FMA detected.
                let (a, b) = unsafe { dots(&xs, &up) };
                prop_assert_eq!((a.to_bits(), b.to_bits()), (d1.to_bits(), d2.to_bits()));
            }
        }

        /// The softmax sums to 1 within rounding and keeps the order of its inputs.
        #[test]
        fn softmax_is_a_distribution(xs in proptest::collection::vec(-30f32..30.0, 1..300)) {
            let mut p = xs.clone();
            softmax_body(&mut p);
            let s: f64 = p.iter().map(|&v| v as f64).sum();
            prop_assert!((s - 1.0).abs() < 1e-5, "sum {}", s);
            for i in 1..xs.len() {
                if xs[i] > xs[i - 1] {
                    prop_assert!(p[i] >= p[i - 1]);
                }
            }
        }
    }
}
