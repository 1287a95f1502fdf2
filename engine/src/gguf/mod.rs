//! GGUF files: the model format every scenario starts from (DESIGN.md, "harness::model").
//!
//! [`GgufFile`] reads versions 2 and 3 (every metadata type, arrays included, tensor infos,
//! `general.alignment`) and keeps tensor data memory-mapped; [`GgufWriter`] writes version 3 in
//! the layout llama.cpp's `gguf.cpp` requires. Tensor types are in [`GgmlType`]; their scalar
//! dequantizers are in [`crate::quant`].

mod error;
mod read;
mod types;
mod value;
mod write;

pub use error::GgufError;
pub use read::{
    thp_mode, GgufFile, TensorInfo, DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME, MAX_NESTING,
};
pub use types::{GgmlType, I2_S_SCALE_BYTES};
pub use value::{type_name, Array, Value};
pub use write::{f32_array, i32_array, string_array, GgufWriter};

/// GGUF value type ids.
pub mod value_type {
    pub use super::value::type_id::*;
}

#[cfg(test)]
mod tests;
