//! Weight formats: the scalar specification of every tensor type the engine reads.
//!
//! Each format has a plain dequantizer (the reference every kernel is tested against) and the
//! quantizer that creates model files, both following ggml's `ggml-quants.c` (`*_ref` quantizers
//! and `dequantize_row_*`) or, for I2_S, bitnet.cpp's `src/ggml-bitnet-mad.cpp`. Block layouts are
//! `#[repr(C)]` structs with their sizes asserted at compile time; the functions read and write
//! plain little-endian bytes so no unsafe casting is needed.

mod float;
mod q6_k;
mod q8_0;
mod ternary;

pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, f32_to_f16_into};
pub use q6_k::{q6_k_codes, q6_k_d, q6_k_scales, BlockQ6K, Q6_K_BYTES};
pub use q8_0::{BlockQ8_0, QK8_0};
pub use ternary::{BlockTq1_0, BlockTq2_0, QK_I2_S, QK_K};

use crate::gguf::GgmlType;

/// Why a tensor could not be converted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantError {
    #[error("tensor type `{0}` is not supported by this engine (supported: F32, F16, BF16, Q8_0, Q6_K, TQ1_0, TQ2_0, I2_S)")]
    Unsupported(GgmlType),
    #[error("{ty}: {n} elements is not a multiple of the block size {block}")]
    BlockSize {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{ty}: {n} elements need {expected} bytes, got {got}")]
    Length {
        ty: GgmlType,
        n: usize,
        expected: usize,
        got: usize,
    },
}

/// Types with a dequantizer here.
pub const SUPPORTED: [GgmlType; 8] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q6_K,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::I2_S,
];

fn check(ty: GgmlType, data_len: usize, n: usize) -> Result<(), QuantError> {
    if !SUPPORTED.contains(&ty) {
        return Err(QuantError::Unsupported(ty));
    }
    if n % ty.block_size() != 0 {
        return Err(QuantError::BlockSize {
            ty,
            n,
            block: ty.block_size(),
        });
    }
    // I2_S's row size is `n/4`; its trailing scale is checked by its own function.
    let expected = ty.data_bytes(n as u64, n as u64).unwrap_or(u64::MAX) as usize;
    if data_len != expected {
        return Err(QuantError::Length {
            ty,
            n,
            expected,
            got: data_len,
        });
    }
    Ok(())
}

/// Dequantize `n` elements of a whole tensor of type `ty` (for I2_S, `data` includes the trailing
/// scale).
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    check(ty, data.len(), n)?;
    let mut out = vec![0f32; n];
    match ty {
        GgmlType::F32 => float::dequantize_f32(data, &mut out),
        GgmlType::F16 => float::dequantize_f16(data, &mut out),
        GgmlType::BF16 => float::dequantize_bf16(data, &mut out),
        GgmlType::Q8_0 => q8_0::dequantize(data, &mut out),
        GgmlType::Q6_K => q6_k::dequantize(data, &mut out),
        GgmlType::TQ1_0 => ternary::dequantize_tq1_0(data, &mut out),
        GgmlType::TQ2_0 => ternary::dequantize_tq2_0(data, &mut out),
        GgmlType::I2_S => ternary::dequantize_i2_s(data, &mut out),
        _ => unreachable!("checked by `check`"),
    }
    Ok(out)
}

/// Quantize `values` (a whole tensor, rows laid end to end) to type `ty`, as ggml's reference
/// quantizers (bitnet.cpp's for I2_S) do.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>, QuantError> {
    if !SUPPORTED.contains(&ty) {
        return Err(QuantError::Unsupported(ty));
    }
    let n = values.len();
    if n % ty.block_size() != 0 {
        return Err(QuantError::BlockSize {
            ty,
            n,
            block: ty.block_size(),
        });
    }
    Ok(match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| f32_to_f16(v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => values
            .iter()
            .flat_map(|&v| f32_to_bf16(v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => q8_0::quantize(values),
        GgmlType::Q6_K => q6_k::quantize(values),
        GgmlType::TQ1_0 => ternary::quantize_tq1_0(values),
        GgmlType::TQ2_0 => ternary::quantize_tq2_0(values),
        GgmlType::I2_S => ternary::quantize_i2_s(values),
        _ => unreachable!("checked above"),
    })
}

#[cfg(test)]
mod tests;
