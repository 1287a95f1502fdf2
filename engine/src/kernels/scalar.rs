//! Scalar kernels: the specification every other variant is tested against. Each follows the
//! ggml function it names (`ggml/src/ggml-quants.c`, `ggml/src/ggml-cpu/quants.c`, `vec.h`),
//! including the order of every float operation:
//!
//! - Q8_K activation quantization: `quantize_row_q8_K_ref` (round half to even via ggml's
//!   `nearest_int`, scale `-127/max` of the signed extreme);
//! - ternary dot products: the integer sum of a block is exact; blocks are accumulated in block
//!   order in f32 as `sumf += (float)sumi * (d_w * d_a)` (TQ1_0) / `(d_a * d_w)` (TQ2_0);
//! - F16 and F32 dot products: products in f32, summed in f64 in index order, then rounded to f32
//!   (ggml's generic `ggml_vec_dot_f16` / `ggml_vec_dot_f32`).

// The loops index like ggml's C so the two can be read side by side.
#![allow(clippy::needless_range_loop)]

use crate::quant::f16_to_f32;

/// Elements per Q8_K block.
pub const QK_K: usize = 256;

/// `block_q8_K`: f32 scale, 256 int8 quants, 16 partial sums of 16 quants.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// ggml's `nearest_int`: round to nearest, ties to even, through the float mantissa.
#[inline]
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// `quantize_row_q8_K_ref` for one row (`x.len()` a multiple of 256).
pub fn quantize_q8k(x: &[f32], out: &mut Vec<BlockQ8K>) {
    out.clear();
    for block in x.chunks_exact(QK_K) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in block {
            let a = v.abs();
            if a > amax {
                amax = a;
                max = v;
            }
        }
        let mut y = BlockQ8K::default();
        if amax != 0.0 {
            let iscale = -127.0f32 / max;
            for (q, &v) in y.qs.iter_mut().zip(block) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for (s, chunk) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
                *s = chunk.iter().map(|&q| q as i16).sum();
            }
            y.d = 1.0 / iscale;
        }
        out.push(y);
    }
}

/// `ggml_vec_dot_tq2_0_q8_K_generic` over one row of `row.len()/66` blocks.
pub fn tq2_0_q8k_dot_scalar(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in row.chunks_exact(66).zip(a) {
        let mut sumi = 0i32;
        for j in (0..64).step_by(32) {
            for l in 0..4 {
                for k in 0..32 {
                    let w = ((x[j + k] >> (2 * l)) & 3) as i32 - 1;
                    sumi += y.qs[j * 4 + l * 32 + k] as i32 * w;
                }
            }
        }
        let d = y.d * f16_to_f32(u16::from_le_bytes([x[64], x[65]]));
        sumf += sumi as f32 * d;
    }
    sumf
}

/// One trit of a TQ1_0 byte: `((uint8)(q * 3^l) * 3) >> 8` minus one.
#[inline]
fn trit(q: u8, pow3: u8) -> i32 {
    ((q.wrapping_mul(pow3) as u16 * 3) >> 8) as i32 - 1
}

/// `ggml_vec_dot_tq1_0_q8_K_generic` over one row of `row.len()/54` blocks.
pub fn tq1_0_q8k_dot_scalar(row: &[u8], a: &[BlockQ8K]) -> f32 {
    const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
    let mut sumf = 0f32;
    for (x, y) in row.chunks_exact(54).zip(a) {
        let mut sum = 0i32;
        for (l, &p) in POW3.iter().enumerate().take(5) {
            for m in 0..32 {
                sum += trit(x[m], p) * y.qs[l * 32 + m] as i32;
            }
        }
        for (l, &p) in POW3.iter().enumerate().take(5) {
            for m in 0..16 {
                sum += trit(x[32 + m], p) * y.qs[160 + l * 16 + m] as i32;
            }
        }
        for (l, &p) in POW3.iter().enumerate().take(4) {
            for j in 0..4 {
                sum += trit(x[48 + j], p) * y.qs[240 + l * 4 + j] as i32;
            }
        }
        let dw = f16_to_f32(u16::from_le_bytes([x[52], x[53]]));
        sumf += sum as f32 * (dw * y.d);
    }
    sumf
}

/// `ggml_vec_dot_f16` (generic): f16 weights against f16-rounded activations.
pub fn f16_f16_dot_scalar(row: &[u8], a: &[u16]) -> f32 {
    let mut sum = 0f64;
    for (w, &x) in row.chunks_exact(2).zip(a) {
        sum += (f16_to_f32(u16::from_le_bytes([w[0], w[1]])) * f16_to_f32(x)) as f64;
    }
    sum as f32
}

/// `ggml_vec_dot_f32` (generic): f32 products summed in f64.
pub fn f32_f32_dot_scalar(x: &[f32], y: &[f32]) -> f32 {
    let mut sum = 0f64;
    for (&a, &b) in x.iter().zip(y) {
        sum += (a * b) as f64;
    }
    sum as f32
}

/// [`f32_f32_dot_scalar`] with the weights as little-endian f32 bytes.
pub fn f32_bytes_dot_scalar(row: &[u8], a: &[f32]) -> f32 {
    let mut sum = 0f64;
    for (w, &x) in row.chunks_exact(4).zip(a) {
        sum += (f32::from_le_bytes([w[0], w[1], w[2], w[3]]) * x) as f64;
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;
    use crate::quant::{dequantize, quantize};
    use proptest::prelude::*;

    /// Dequantize both sides and sum block by block in the kernel's order: the kernels must
    /// equal this exactly, since ternary × int8 products are small integers.
    fn reference_dot(ty: GgmlType, row: &[u8], a: &[BlockQ8K], n: usize) -> f32 {
        let w = dequantize(ty, row, n).unwrap();
        let bs = ty.type_size();
        let mut sumf = 0f32;
        for (b, y) in a.iter().enumerate() {
            let dw = f16_to_f32(u16::from_le_bytes([
                row[b * bs + bs - 2],
                row[b * bs + bs - 1],
            ]));
            let mut sumi = 0i32;
            for k in 0..QK_K {
                let t = if dw == 0.0 { 0.0 } else { w[b * QK_K + k] / dw };
                sumi += t as i32 * y.qs[k] as i32;
            }
            sumf += match ty {
                GgmlType::TQ1_0 => sumi as f32 * (dw * y.d),
                _ => sumi as f32 * (y.d * dw),
            };
        }
        sumf
    }

    #[test]
    fn q8k_hand_worked() {
        // max = -2 (largest magnitude, negative): iscale = 63.5, d = 1/63.5.
        let mut x = vec![0f32; 256];
        x[0] = -2.0;
        x[1] = 1.0;
        x[2] = 0.5 / 63.5; // 0.5 after scaling: ties to even -> 0
        x[3] = 1.5 / 63.5; // 1.5 -> 2
        let mut q = Vec::new();
        quantize_q8k(&x, &mut q);
        assert_eq!(q[0].qs[..4], [-127, 64, 0, 2]);
        assert_eq!(q[0].d, 1.0 / 63.5);
        assert_eq!(q[0].bsums[0], -127 + 64 + 2);
        let mut z = Vec::new();
        quantize_q8k(&[0.0; 256], &mut z);
        assert_eq!(z[0], BlockQ8K::default());
    }

    proptest! {
        #[test]
        fn ternary_dots_equal_the_dequantized_reference(
            seed in any::<u64>(), blocks in 1usize..4, scale in 0.001f32..4.0, tq1 in any::<bool>()
        ) {
            let n = blocks * QK_K;
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1); (s >> 33) as u32 };
            let w: Vec<f32> = (0..n).map(|_| ((next() % 3) as f32 - 1.0) * scale).collect();
            let x: Vec<f32> = (0..n).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let ty = if tq1 { GgmlType::TQ1_0 } else { GgmlType::TQ2_0 };
            let row = quantize(ty, &w).unwrap();
            let mut a = Vec::new();
            quantize_q8k(&x, &mut a);
            let got = if tq1 { tq1_0_q8k_dot_scalar(&row, &a) } else { tq2_0_q8k_dot_scalar(&row, &a) };
            prop_assert_eq!(got.to_bits(), reference_dot(ty, &row, &a, n).to_bits());
        }
    }

    #[test]
    fn edge_blocks_all_minus_one_zero_plus_one() {
        for v in [-1.0f32, 0.0, 1.0] {
            for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
                let row = quantize(ty, &[v; 512]).unwrap();
                let mut a = Vec::new();
                quantize_q8k(&[1.0; 512], &mut a); // every quant -127, d = -1/127
                let got = if ty == GgmlType::TQ1_0 {
                    tq1_0_q8k_dot_scalar(&row, &a)
                } else {
                    tq2_0_q8k_dot_scalar(&row, &a)
                };
                // Σ v·1 over 512 elements: exactly v·512 up to the scale's rounding.
                assert!((got - v * 512.0).abs() <= 512.0 * 1e-6, "{ty} {v}: {got}");
            }
        }
    }
}
