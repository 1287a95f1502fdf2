//! Q8_0: blocks of 32 int8 values with one f16 scale (`block_q8_0` in ggml-common.h).

use super::float::{f16_to_f32, f32_to_f16};

/// Elements per block.
pub const QK8_0: usize = 32;

/// `block_q8_0`: scale, then 32 signed quants.
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// `dequantize_row_q8_0`: `y = qs[j] * d`.
pub(super) fn dequantize(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(34).zip(out.chunks_exact_mut(QK8_0)) {
        let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
        for (o, &q) in y.iter_mut().zip(&block[2..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

/// `quantize_row_q8_0_ref`: `d = amax/127`, `q = roundf(x/d)` (half away from zero).
pub(super) fn quantize(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK8_0 * 34);
    for block in x.chunks_exact(QK8_0) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        out.extend(block.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}
