//! F32, F16 and BF16: conversions as ggml performs them (`ggml-impl.h`).

/// IEEE half to f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// f32 to IEEE half, round to nearest even (ggml's `GGML_FP32_TO_FP16`, F16C's `vcvtps2ph` with
/// rounding mode 0 and its scalar fallback agree).
pub fn f32_to_f16(v: f32) -> u16 {
    half::f16::from_f32(v).to_bits()
}

/// [`f32_to_f16`] of every value of `src` into `dst` (as long), by the `half` crate's slice
/// conversion: eight at a time by F16C's `vcvtps2ph` where the CPU has it, the instruction
/// [`f32_to_f16`] runs per value there (so the same bits), without a call and a feature check
/// per value.
pub fn f32_to_f16_into(src: &[f32], dst: &mut [u16]) {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    assert_eq!(src.len(), dst.len(), "as many halves as values");
    dst.reinterpret_cast_mut::<half::f16>()
        .convert_from_f32_slice(src);
}

/// bfloat16 to f32 (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 to bfloat16 as ggml's `ggml_compute_fp32_to_bf16`: NaN becomes a quiet NaN, everything else
/// rounds to nearest even.
pub fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

pub(super) fn dequantize_f32(data: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

pub(super) fn dequantize_f16(data: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

pub(super) fn dequantize_bf16(data: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}
