//! The ggml tensor types a GGUF file can name: id, name, block size and bytes per block.
//!
//! Sizes follow `ggml/src/ggml.c` `type_traits` and `ggml-common.h` of ggml 0.26.0 (the version
//! pinned through `llama-cpp-sys-2`), plus bitnet.cpp's `I2_S` (id 36 in its ggml fork, a slot
//! upstream ggml has retired), whose data is 2 bits per element followed by one f32 scale per
//! tensor, padded to 32 bytes (bitnet.cpp's `quantize_i2_s` in `src/ggml-bitnet-mad.cpp` returns
//! `n/4 + 32`; its x86 layout packs blocks of 128 elements into 32 bytes).

/// A ggml tensor type.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    I2_S,
    MXFP4,
    NVFP4,
    Q1_0,
    Q2_0,
}

/// (type, id, name, block size in elements, bytes per block)
const TABLE: &[(GgmlType, u32, &str, usize, usize)] = &[
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    // I2_S (x86 layout, QK_I2_S = 128): 128 2-bit codes in 32 bytes; the per-tensor scale trails
    // the codes (see `data_bytes`).
    (GgmlType::I2_S, 36, "I2_S", 128, 32),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
    (GgmlType::NVFP4, 40, "NVFP4", 64, 36),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 18),
    (GgmlType::Q2_0, 42, "Q2_0", 64, 18),
];

/// Bytes after an I2_S tensor's codes holding its f32 scale (bitnet.cpp pads it to 32).
pub const I2_S_SCALE_BYTES: u64 = 32;

impl GgmlType {
    fn entry(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        TABLE
            .iter()
            .find(|e| e.0 == self)
            .expect("every variant is in TABLE")
    }

    /// The type with this numeric id, if ggml (or bitnet.cpp, for I2_S) defines one.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// Every known type.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|e| e.0)
    }

    /// The type with this name (`TQ2_0`, case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|e| e.2.eq_ignore_ascii_case(name))
            .map(|e| e.0)
    }

    /// The numeric id stored in GGUF files.
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// The upper-case name (`TQ2_0`).
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Elements per block; a row's length must be a multiple of it.
    pub fn block_size(self) -> usize {
        self.entry().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().4
    }

    /// Bytes of `n` elements of one row, `None` when `n` is not a multiple of the block size or
    /// the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let b = self.block_size() as u64;
        if n % b != 0 {
            return None;
        }
        (n / b).checked_mul(self.type_size() as u64)
    }

    /// Bytes of a whole tensor of `n_elements` (with `row` elements per row), as ggml/bitnet.cpp
    /// lay it out; `None` on overflow or a row that doesn't fit the block size.
    pub fn data_bytes(self, row: u64, n_elements: u64) -> Option<u64> {
        if row == 0 {
            return Some(0);
        }
        if n_elements % row != 0 {
            return None;
        }
        let rows = n_elements / row;
        let total = self.row_bytes(row)?.checked_mul(rows)?;
        if self == GgmlType::I2_S {
            total.checked_add(I2_S_SCALE_BYTES)
        } else {
            Some(total)
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        for t in GgmlType::all() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(43), None);
    }

    #[test]
    fn sizes_of_the_types_this_engine_reads() {
        // Hand-checked against ggml-common.h: block_tq2_0 = 64 qs + f16 d; block_tq1_0 =
        // (256 - 4*256/64)/5 = 48 qs + 4 qh + f16 d; block_q8_0 = f16 d + 32 qs.
        assert_eq!(GgmlType::TQ2_0.row_bytes(512), Some(132));
        assert_eq!(GgmlType::TQ1_0.row_bytes(256), Some(54));
        assert_eq!(GgmlType::Q8_0.row_bytes(64), Some(68));
        assert_eq!(GgmlType::Q8_0.row_bytes(33), None);
        assert_eq!(GgmlType::I2_S.data_bytes(128, 256), Some(64 + 32));
        assert_eq!(GgmlType::I2_S.row_bytes(64), None);
        assert_eq!(GgmlType::F32.data_bytes(3, 6), Some(24));
    }
}
