//! Q6_K (ggml, `ggml-quants.c`): 256 weights in 16 groups of 16, each weight 6 bits (its low 4
//! in `ql`, its high 2 in `qh`), each group an 8-bit scale, the block one F16 scale. The format
//! llama.cpp's `llama-quantize` gives a tied token embedding (the output matrix) when it
//! quantizes a model to TQ1_0 or TQ2_0.

// The loops index like ggml's C so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::float::{f16_to_f32, f32_to_f16};
use super::ternary::QK_K;
use crate::kernels::scalar::ggml_nearest_int as nearest_int;

/// `block_q6_K`: low 4 bits, high 2 bits, 16 group scales, block scale.
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// Bytes of one Q6_K block.
pub const Q6_K_BYTES: usize = 210;

/// ggml's `GROUP_MAX_EPS`: a group (or block) whose largest magnitude is below it is all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// The 6-bit codes (0..63, the weight plus 32) of one block, in element order.
pub fn q6_k_codes(block: &[u8]) -> [u8; QK_K] {
    let (ql, qh) = (&block[..128], &block[128..192]);
    let mut q = [0u8; QK_K];
    for half in 0..2 {
        let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
        let y = &mut q[128 * half..];
        for l in 0..32 {
            y[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            y[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    q
}

/// A block's 16 group scales.
pub fn q6_k_scales(block: &[u8]) -> [i8; QK_K / 16] {
    std::array::from_fn(|i| block[192 + i] as i8)
}

/// A block's F16 scale as f32.
pub fn q6_k_d(block: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[208], block[209]]))
}

/// `dequantize_row_q6_K`: element `i` is `d · scales[i/16] · (code − 32)`, multiplied in that
/// order in f32.
pub(super) fn dequantize(data: &[u8], out: &mut [f32]) {
    for (block, y) in data
        .chunks_exact(Q6_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = q6_k_d(block);
        let sc = q6_k_scales(block);
        for (i, (y, q)) in y.iter_mut().zip(q6_k_codes(block)).enumerate() {
            *y = d * sc[i / 16] as f32 * (q as i32 - 32) as f32;
        }
    }
}

/// ggml's `make_qx_quants` with `rmse_type` 1 and no importance weights, for `nmax` 32: the
/// group's scale, its codes (0..63) written to `l`.
fn make_qx_quants(x: &[f32], l: &mut [i8]) -> f32 {
    const NMAX: i32 = 32;
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let q = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let iscale = -(NMAX as f32) / max;
    for (l, &v) in l.iter_mut().zip(x) {
        *l = (code(iscale, v) + NMAX) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(NMAX as f32 + 0.1f32 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (l, &v) in l.iter_mut().zip(x) {
                *l = (code(iscale, v) + NMAX) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `quantize_row_q6_K_ref` (what `llama-quantize` runs without an importance matrix).
pub(super) fn quantize(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * Q6_K_BYTES);
    for x in x.chunks_exact(QK_K) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..QK_K / 16 {
            let scale = make_qx_quants(&x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        let mut block = [0u8; Q6_K_BYTES];
        if max_abs_scale < GROUP_MAX_EPS {
            out.extend_from_slice(&block);
            continue;
        }
        let iscale = -128f32 / max_scale;
        let d16 = f32_to_f16(1.0 / iscale);
        let mut sc = [0i8; QK_K / 16];
        for ib in 0..QK_K / 16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        let d0 = f16_to_f32(d16);
        for j in 0..QK_K / 16 {
            let d = d0 * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        let (ql, rest) = block.split_at_mut(128);
        let (qh, tail) = rest.split_at_mut(64);
        for half in 0..2 {
            let (j, ql, qh) = (128 * half, &mut ql[64 * half..], &mut qh[32 * half..]);
            for i in 0..32 {
                let q = |o: usize| l[j + i + o] as u8;
                ql[i] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
                ql[i + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
                qh[i] =
                    (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
            }
        }
        for (t, s) in tail[..16].iter_mut().zip(sc) {
            *t = s as u8;
        }
        tail[16..18].copy_from_slice(&d16.to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}
