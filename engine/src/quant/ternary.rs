//! Ternary formats: TQ1_0 and TQ2_0 (ggml, `ggml-quants.c`) and I2_S (bitnet.cpp,
//! `src/ggml-bitnet-mad.cpp`, the x86 layout with `QK_I2_S = 128`).

// The loops index like ggml's C so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use super::float::{f16_to_f32, f32_to_f16};

/// Elements per TQ block (ggml's `QK_K`).
pub const QK_K: usize = 256;
/// Elements per I2_S packing group on x86.
pub const QK_I2_S: usize = 128;

/// `block_tq1_0`: 240 trits packed 5 per byte in `qs`, 16 more packed 4 per byte in `qh`, scale.
#[repr(C)]
pub struct BlockTq1_0 {
    pub qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
    pub qh: [u8; QK_K / 64],
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockTq1_0>() == 54);

/// `block_tq2_0`: 256 2-bit codes (0, 1, 2 for −1, 0, +1), scale.
#[repr(C)]
pub struct BlockTq2_0 {
    pub qs: [u8; QK_K / 4],
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockTq2_0>() == 66);

/// `lroundf(v) + 1` clamped to a trit code: ggml assumes ternary input; values outside [−1.5, 1.5]
/// after scaling cannot occur since the scale is the block's absolute maximum.
fn trit(v: f32) -> u8 {
    (v.round() as i32 + 1).clamp(0, 2) as u8
}

/// Pack up to five trits (most significant first) into a byte as `quantize_row_tq1_0_ref` does:
/// base-3 value, then a ceiling division mapping [0, 243) onto [0, 256).
fn pack_trits(q: u16) -> u8 {
    (q * 256).div_ceil(243) as u8
}

/// One trit of a TQ1_0 byte: `((uint8)(q * 3^n) * 3) >> 8`.
fn unpack_trit(q: u8, pow3: u8) -> f32 {
    let shifted = q.wrapping_mul(pow3) as u16;
    (((shifted * 3) >> 8) as i16 - 1) as f32
}

pub(super) fn quantize_tq1_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * 54);
    for b in x.chunks_exact(QK_K) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
        let mut block = [0u8; 54];
        // 32 bytes of 5 trits each, element m + n*32 of the first 160.
        for m in 0..32 {
            let q = (0..5).fold(0u16, |q, n| q * 3 + trit(b[m + n * 32] * id) as u16);
            block[m] = pack_trits(q);
        }
        // 16 bytes of 5 trits each over the next 80 elements.
        for m in 0..16 {
            let q = (0..5).fold(0u16, |q, n| q * 3 + trit(b[160 + m + n * 16] * id) as u16);
            block[32 + m] = pack_trits(q);
        }
        // 4 bytes of 4 trits each over the last 16, shifted to the most significant trits.
        for j in 0..4 {
            let q = (0..4).fold(0u16, |q, m| q * 3 + trit(b[240 + j + m * 4] * id) as u16);
            block[48 + j] = pack_trits(q * 3);
        }
        block[52..54].copy_from_slice(&f32_to_f16(amax).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

pub(super) fn dequantize_tq1_0(data: &[u8], out: &mut [f32]) {
    const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
    for (block, y) in data.chunks_exact(54).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(u16::from_le_bytes([block[52], block[53]]));
        let mut k = 0;
        for n in 0..5 {
            for m in 0..32 {
                y[k] = unpack_trit(block[m], POW3[n]) * d;
                k += 1;
            }
        }
        for n in 0..5 {
            for m in 0..16 {
                y[k] = unpack_trit(block[32 + m], POW3[n]) * d;
                k += 1;
            }
        }
        for n in 0..4 {
            for j in 0..4 {
                y[k] = unpack_trit(block[48 + j], POW3[n]) * d;
                k += 1;
            }
        }
    }
}

pub(super) fn quantize_tq2_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * 66);
    for b in x.chunks_exact(QK_K) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
        let mut block = [0u8; 66];
        for j in (0..64).step_by(32) {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    q |= trit(b[j * 4 + m + n * 32] * id) << (2 * n);
                }
                block[j + m] = q;
            }
        }
        block[64..66].copy_from_slice(&f32_to_f16(amax).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

pub(super) fn dequantize_tq2_0(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(66).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(u16::from_le_bytes([block[64], block[65]]));
        let mut k = 0;
        for j in (0..64).step_by(32) {
            for l in 0..4 {
                for m in 0..32 {
                    let q = (block[j + m] >> (2 * l)) & 3;
                    y[k] = (q as i32 - 1) as f32 * d;
                    k += 1;
                }
            }
        }
    }
}

/// bitnet.cpp's `quantize_i2_s`: one scale per tensor (the absolute maximum, as f32), codes
/// 0/1/2 for negative/zero (|x| < 1e-6)/positive; in each group of 128 elements element `j` goes
/// to byte `j % 32`, bits `6 − 2·(j / 32)`. The scale follows the `n/4` code bytes, padded to 32.
pub(super) fn quantize_i2_s(x: &[f32]) -> Vec<u8> {
    let n = x.len();
    let scale = x.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let mut out = vec![0u8; n / 4 + 32];
    for (g, group) in x.chunks_exact(QK_I2_S).enumerate() {
        for (j, &v) in group.iter().enumerate() {
            let code: u8 = if (v as f64).abs() < 1e-6 {
                1
            } else if (v as f64) * scale > 0.0 {
                2
            } else {
                0
            };
            out[g * 32 + j % 32] |= code << (6 - 2 * (j / 32));
        }
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&(scale as f32).to_le_bytes());
    out
}

/// Inverse of [`quantize_i2_s`]: `(code − 1) · scale` (code 3, which bitnet.cpp never writes,
/// reads as +2 by the same arithmetic its kernels use).
pub(super) fn dequantize_i2_s(data: &[u8], out: &mut [f32]) {
    let n = out.len();
    if n == 0 {
        // An empty tensor has no codes and, as `GgmlType::data_bytes` lays it out, no scale.
        return;
    }
    let s = &data[n / 4..n / 4 + 4];
    let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    for (g, y) in out.chunks_exact_mut(QK_I2_S).enumerate() {
        for (j, o) in y.iter_mut().enumerate() {
            let code = (data[g * 32 + j % 32] >> (6 - 2 * (j / 32))) & 3;
            *o = (code as i32 - 1) as f32 * scale;
        }
    }
}
