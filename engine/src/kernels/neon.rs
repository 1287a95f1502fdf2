//! aarch64 NEON kernels, computing exactly what the scalar specification ([`super::scalar`])
//! computes: each block's 8 integer lanes (elements whose index modulo 32 lies in `4k..4k+4`, less
//! the activations' sums over `32k..32k+32`) are formed exactly with widening multiplies and
//! pairwise adds, then accumulated with fused multiply-adds into 8 float lanes (two 4-lane
//! vectors) and summed in the specification's order. Only baseline NEON instructions are used, so
//! every aarch64 CPU runs them. Checked against the scalar kernels by the same proptests as the
//! x86 ones (`super::tests`) when built for aarch64.
//!
//! The functions are `unsafe` for the caller's feature check only; they read nothing outside the
//! slices they are given (lengths are asserted on entry).

#![allow(clippy::missing_safety_doc)]

use std::arch::aarch64::*;

use super::scalar::{BlockQ8K, QK_K};

const TQ2_BYTES: usize = 66;
const TQ1_BYTES: usize = 54;

/// The 8 integer lanes of one block, from its codes (0..=2) in element order.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn block_lanes(codes: &[u8; QK_K], y: &BlockQ8K) -> (int32x4_t, int32x4_t) {
    // Per 16-element half of each 32-element chunk: int16 sums of bytes 0..8 and 8..16 (at most
    // 8 products of 2·127 each: no overflow).
    let mut s = [vdupq_n_s16(0); 4];
    for c in 0..QK_K / 32 {
        for half in 0..2 {
            let o = 32 * c + 16 * half;
            let w = vreinterpretq_s8_u8(vld1q_u8(codes.as_ptr().add(o)));
            let a = vld1q_s8(y.qs.as_ptr().add(o));
            s[2 * half] = vaddq_s16(s[2 * half], vmull_s8(vget_low_s8(w), vget_low_s8(a)));
            s[2 * half + 1] = vaddq_s16(s[2 * half + 1], vmull_high_s8(w, a));
        }
    }
    // Bytes 4k..4k+4 of a half: pairwise twice.
    let lo = vpaddq_s32(vpaddlq_s16(s[0]), vpaddlq_s16(s[1]));
    let hi = vpaddq_s32(vpaddlq_s16(s[2]), vpaddlq_s16(s[3]));
    let b0 = vpaddlq_s16(vld1q_s16(y.bsums.as_ptr()));
    let b1 = vpaddlq_s16(vld1q_s16(y.bsums.as_ptr().add(8)));
    (vsubq_s32(lo, b0), vsubq_s32(hi, b1))
}

/// `acc = fma(lanes, d, acc)` on both halves.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn accumulate(acc: &mut (float32x4_t, float32x4_t), lanes: (int32x4_t, int32x4_t), d: f32) {
    let dv = vdupq_n_f32(d);
    acc.0 = vfmaq_f32(acc.0, vcvtq_f32_s32(lanes.0), dv);
    acc.1 = vfmaq_f32(acc.1, vcvtq_f32_s32(lanes.1), dv);
}

/// `hsum_float_8`: `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn hsum8(acc: (float32x4_t, float32x4_t)) -> f32 {
    let r = vaddq_f32(acc.0, acc.1);
    let (r0, r1) = (vgetq_lane_f32::<0>(r), vgetq_lane_f32::<1>(r));
    let (r2, r3) = (vgetq_lane_f32::<2>(r), vgetq_lane_f32::<3>(r));
    (r0 + r2) + (r1 + r3)
}

fn f16_scale(b: &[u8]) -> f32 {
    crate::quant::f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// TQ2_0 × Q8_K.
#[target_feature(enable = "neon")]
pub unsafe fn tq2_0_q8k_dot_neon(row: &[u8], a: &[BlockQ8K]) -> f32 {
    assert_eq!(row.len(), a.len() * TQ2_BYTES);
    let mut acc = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let m3 = vdupq_n_u8(3);
    let mut codes = [0u8; QK_K];
    for (x, y) in row.chunks_exact(TQ2_BYTES).zip(a) {
        // Element chunk 4h + l is bits 2l..2l+2 of bytes 32h..32h+32.
        for h in 0..2 {
            for half in 0..2 {
                let q = vld1q_u8(x.as_ptr().add(32 * h + 16 * half));
                for l in 0..4 {
                    let v = vandq_u8(vshlq_u8(q, vdupq_n_s8(-2 * l as i8)), m3);
                    vst1q_u8(codes.as_mut_ptr().add(128 * h + 32 * l + 16 * half), v);
                }
            }
        }
        accumulate(&mut acc, block_lanes(&codes, y), y.d * f16_scale(&x[64..]));
    }
    hsum8(acc)
}

/// Trits plus one of 16 bytes already multiplied by a power of 3: `(v·3) >> 8`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn trits(v: uint8x16_t) -> uint8x16_t {
    let three = vdup_n_u8(3);
    let lo = vshrn_n_u16::<8>(vmull_u8(vget_low_u8(v), three));
    let hi = vshrn_n_u16::<8>(vmull_high_u8(v, vdupq_n_u8(3)));
    vcombine_u8(lo, hi)
}

/// TQ1_0 × Q8_K.
#[target_feature(enable = "neon")]
pub unsafe fn tq1_0_q8k_dot_neon(row: &[u8], a: &[BlockQ8K]) -> f32 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    assert_eq!(row.len(), a.len() * TQ1_BYTES);
    let mut acc = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut codes = [0u8; QK_K];
    for (x, y) in row.chunks_exact(TQ1_BYTES).zip(a) {
        let q0 = vld1q_u8(x.as_ptr());
        let q1 = vld1q_u8(x.as_ptr().add(16));
        let q2 = vld1q_u8(x.as_ptr().add(32));
        // Elements 0..160: trit l of bytes 0..32.
        for (l, &p) in POW3.iter().enumerate() {
            let pv = vdupq_n_u8(p);
            vst1q_u8(codes.as_mut_ptr().add(32 * l), trits(vmulq_u8(q0, pv)));
            vst1q_u8(codes.as_mut_ptr().add(32 * l + 16), trits(vmulq_u8(q1, pv)));
            // Elements 160..240: trit l of bytes 32..48.
            vst1q_u8(
                codes.as_mut_ptr().add(160 + 16 * l),
                trits(vmulq_u8(q2, pv)),
            );
        }
        // Elements 240..256: trit l of qh byte j at 240 + 4l + j.
        let mut h = [0u8; 16];
        for l in 0..4 {
            for j in 0..4 {
                h[4 * l + j] = x[48 + j].wrapping_mul(POW3[l]);
            }
        }
        vst1q_u8(codes.as_mut_ptr().add(240), trits(vld1q_u8(h.as_ptr())));
        accumulate(&mut acc, block_lanes(&codes, y), y.d * f16_scale(&x[52..]));
    }
    hsum8(acc)
}

/// 4 F16 values (bits) as f32, exactly: the magnitude bits moved into f32 position and scaled by
/// 2^112 (exact for normals and subnormals), infinities and NaNs given the f32 exponent.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    let u = vmovl_u16(h);
    let sign = vshlq_n_u32::<16>(vandq_u32(u, vdupq_n_u32(0x8000)));
    let mag = vshlq_n_u32::<13>(vandq_u32(u, vdupq_n_u32(0x7fff)));
    let scaled = vreinterpretq_u32_f32(vmulq_f32(
        vreinterpretq_f32_u32(mag),
        vdupq_n_f32(f32::from_bits(0x7780_0000)), // 2^112
    ));
    let special = vcgeq_u32(mag, vdupq_n_u32(0x7c00 << 13));
    let special_bits = vorrq_u32(mag, vdupq_n_u32(0x7f80_0000));
    vreinterpretq_f32_u32(vorrq_u32(vbslq_u32(special, special_bits, scaled), sign))
}

/// 8 F16 values from little-endian bytes as two f32 vectors.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load8_f16(p: *const u8) -> (float32x4_t, float32x4_t) {
    let v = vld1q_u16(p as *const u16);
    (
        f16x4_to_f32(vget_low_u16(v)),
        f16x4_to_f32(vget_high_u16(v)),
    )
}

/// 8 F16 (`f16`) or F32 values from little-endian bytes as two f32 vectors.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load8(p: *const u8, f16: bool) -> (float32x4_t, float32x4_t) {
    if f16 {
        load8_f16(p)
    } else {
        (
            vld1q_f32(p as *const f32),
            vld1q_f32(p.add(16) as *const f32),
        )
    }
}

/// The tinyBLAS order ([`super::scalar::f16_dot_lanes8`]) for one F16 (`f16`) or F32 row,
/// `cols % 8 == 0`.
#[target_feature(enable = "neon")]
pub unsafe fn float_lanes8_neon(row: &[u8], a: &[u8], cols: usize, f16: bool) -> f32 {
    let es = if f16 { 2 } else { 4 };
    assert!(cols % 8 == 0 && row.len() == es * cols && a.len() == es * cols);
    let mut acc = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    for i in (0..cols).step_by(8) {
        let w = load8(row.as_ptr().add(es * i), f16);
        let x = load8(a.as_ptr().add(es * i), f16);
        acc.0 = vfmaq_f32(acc.0, w.0, x.0);
        acc.1 = vfmaq_f32(acc.1, w.1, x.1);
    }
    hsum8(acc)
}

/// The `ggml_vec_dot_f16`/`_f32` order ([`super::scalar::f16_dot_steps32`]) for one F16 (`f16`)
/// or F32 row, `cols % 32 == 0` (no tail).
#[target_feature(enable = "neon")]
pub unsafe fn float_steps32_neon(row: &[u8], a: &[u8], cols: usize, f16: bool) -> f32 {
    let es = if f16 { 2 } else { 4 };
    assert!(cols % 32 == 0 && row.len() == es * cols && a.len() == es * cols);
    let z = vdupq_n_f32(0.0);
    let mut acc = [(z, z); 4];
    for i in (0..cols).step_by(32) {
        for (j, accj) in acc.iter_mut().enumerate() {
            let w = load8(row.as_ptr().add(es * (i + 8 * j)), f16);
            let x = load8(a.as_ptr().add(es * (i + 8 * j)), f16);
            accj.0 = vfmaq_f32(accj.0, w.0, x.0);
            accj.1 = vfmaq_f32(accj.1, w.1, x.1);
        }
    }
    // (a0+a2)+(a1+a3) lane-wise, then the two `_mm_hadd_ps` of the 8 lanes.
    let lo = vaddq_f32(vaddq_f32(acc[0].0, acc[2].0), vaddq_f32(acc[1].0, acc[3].0));
    let hi = vaddq_f32(vaddq_f32(acc[0].1, acc[2].1), vaddq_f32(acc[1].1, acc[3].1));
    let t = vaddq_f32(lo, hi);
    let (t0, t1) = (vgetq_lane_f32::<0>(t), vgetq_lane_f32::<1>(t));
    let (t2, t3) = (vgetq_lane_f32::<2>(t), vgetq_lane_f32::<3>(t));
    (t0 + t1) + (t2 + t3)
}

/// `Σ code·q` of one I2_S row (bitnet.cpp's x86 layout) against one token's int8 activations,
/// exactly [`super::scalar::i2_s_i8_dot_scalar`]: each 32-byte group gives four runs of 32 codes
/// (shifts 6, 4, 2, 0), multiplied by widening `vmull_s8` (codes ≤ 2: products fit i16) and
/// added pairwise into i32 lanes per group.
#[target_feature(enable = "neon")]
pub unsafe fn i2_s_i8_dot_neon(row: &[u8], q: &[i8]) -> i32 {
    let ng = row.len() / 32;
    assert_eq!(q.len(), ng * super::scalar::QK_I2_S);
    let mask = vdupq_n_u8(3);
    let mut acc = vdupq_n_s32(0);
    for g in 0..ng {
        let p = row.as_ptr().add(32 * g);
        let x = [vld1q_u8(p), vld1q_u8(p.add(16))];
        let y = q.as_ptr().add(128 * g);
        for l in 0..4 {
            let shift = [6, 4, 2, 0][l];
            // Per 16-bit lane at most 4 products of 2·128: no overflow.
            let mut s = vdupq_n_s16(0);
            for (h, xh) in x.iter().enumerate() {
                let c = match shift {
                    6 => vshrq_n_u8::<6>(*xh),
                    4 => vandq_u8(vshrq_n_u8::<4>(*xh), mask),
                    2 => vandq_u8(vshrq_n_u8::<2>(*xh), mask),
                    _ => vandq_u8(*xh, mask),
                };
                let c = vreinterpretq_s8_u8(c);
                let a = vld1q_s8(y.add(32 * l + 16 * h));
                s = vaddq_s16(s, vmull_s8(vget_low_s8(c), vget_low_s8(a)));
                s = vaddq_s16(s, vmull_high_s8(c, a));
            }
            acc = vpadalq_s16(acc, s);
        }
    }
    vaddvq_s32(acc)
}
