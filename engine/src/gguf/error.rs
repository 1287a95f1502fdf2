//! Errors reading or writing GGUF files: each names the file and the byte offset, key or tensor.

use std::path::PathBuf;

/// What went wrong, and where. Offsets are byte offsets from the start of the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{file}`: truncated at byte {offset}: {what} needs {needed} bytes but only {available} remain")]
    Truncated {
        file: String,
        offset: u64,
        what: String,
        needed: u64,
        available: u64,
    },
    #[error("`{file}`: bad magic {found:?} at byte 0, expected `GGUF`")]
    BadMagic { file: String, found: String },
    #[error("`{file}`: unsupported GGUF version {version} at byte 4, expected 2 or 3{}", if version.swap_bytes() == 2 || version.swap_bytes() == 3 { format!(" (read as {}, the file is big-endian: only little-endian GGUF files are read, as by llama.cpp on this machine)", version.swap_bytes()) } else { String::new() })]
    Version { file: String, version: u32 },
    #[error("`{file}`: {what} count {count} at byte {offset} is impossible: at most {max} fit in the {remaining} bytes that follow")]
    Count {
        file: String,
        what: &'static str,
        count: u64,
        offset: u64,
        max: u64,
        remaining: u64,
    },
    #[error("`{file}`: {what}: a string of {len} bytes at byte {offset} runs past the end of the file ({remaining} bytes remain)")]
    StringLength {
        file: String,
        what: String,
        len: u64,
        offset: u64,
        remaining: u64,
    },
    #[error("`{file}`: {what}: the string at byte {offset} is not valid UTF-8")]
    Utf8 {
        file: String,
        what: String,
        offset: u64,
    },
    #[error(
        "`{file}`: key `{key}` at byte {offset} has unknown value type {type_id} (expected 0..=12)"
    )]
    ValueType {
        file: String,
        key: String,
        type_id: u32,
        offset: u64,
    },
    #[error("`{file}`: key `{key}` at byte {offset}: arrays nested deeper than {max} levels")]
    Nesting {
        file: String,
        key: String,
        offset: u64,
        max: usize,
    },
    #[error("`{file}`: duplicate key `{key}` at byte {offset}")]
    DuplicateKey {
        file: String,
        key: String,
        offset: u64,
    },
    #[error("`{file}`: empty key at byte {offset}")]
    EmptyKey { file: String, offset: u64 },
    #[error("`{file}`: key `general.alignment` must be a uint32 power of two of at least 8, found {found}")]
    Alignment { file: String, found: String },
    #[error("`{file}`: tensor `{tensor}`: {what}")]
    Tensor {
        file: String,
        tensor: String,
        what: String,
    },
    #[error("`{file}`: duplicate tensor name `{tensor}` (tensor {index})")]
    DuplicateTensor {
        file: String,
        tensor: String,
        index: u64,
    },
    #[error("`{file}`: tensor `{tensor}` has unknown type id {type_id}")]
    UnknownType {
        file: String,
        tensor: String,
        type_id: u32,
    },
    #[error("`{file}`: tensor `{tensor}` data [{start}, {end}) runs past the end of the file ({file_len} bytes)")]
    DataPastEnd {
        file: String,
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error("`{file}`: tensor `{tensor}` data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        file: String,
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("`{file}`: tensor `{tensor}` data [{start}, {end}) overlaps tensor `{other}`")]
    Overlap {
        file: String,
        tensor: String,
        other: String,
        start: u64,
        end: u64,
    },
    #[error("writing `{path}`: {what}")]
    Write { path: String, what: String },
}
