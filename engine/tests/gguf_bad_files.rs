//! A catalogue of malformed GGUF files, each with the error it must produce, and a property test
//! that mutates valid files (bytes flipped, truncated, fields enlarged) and never panics.

use bitnet_engine::gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value};
use proptest::prelude::*;

mod common;
use common::B;

fn err(b: B) -> GgufError {
    match GgufFile::from_bytes(b.0, "bad.gguf") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn valid_one_tensor() -> B {
    B::header(3, 1, 1)
        .kv_u32("k", 1)
        .tensor("t", &[8], 0, 0)
        .data(32)
}

#[test]
fn catalogue_of_bad_files() {
    type Case<'a> = (&'a str, B, &'a dyn Fn(&GgufError) -> bool, &'a str);
    let cases: Vec<Case> = vec![
        (
            "empty file",
            B(vec![]),
            &|e| matches!(e, GgufError::Truncated { offset: 0, .. }),
            "truncated at byte 0",
        ),
        (
            "bad magic",
            B(b"GGML\x03\0\0\0".to_vec()),
            &|e| matches!(e, GgufError::BadMagic { .. }),
            "expected `GGUF`",
        ),
        (
            "version 1",
            B::header(1, 0, 0),
            &|e| matches!(e, GgufError::Version { version: 1, .. }),
            "version 1",
        ),
        (
            "big-endian (version 3 byte-swapped)",
            B::header(3u32.swap_bytes(), 0, 0),
            &|e| matches!(e, GgufError::Version { .. }),
            "(read as 3, the file is big-endian",
        ),
        (
            "alignment 4, a power of two below ggml's 8",
            B::header(3, 0, 1).kv_u32("general.alignment", 4),
            &|e| matches!(e, GgufError::Alignment { .. }),
            "power of two of at least 8, found uint32 4",
        ),
        (
            "version 4",
            B::header(4, 0, 0),
            &|e| matches!(e, GgufError::Version { version: 4, .. }),
            "expected 2 or 3",
        ),
        (
            "truncated in the counts",
            B(B::header(3, 0, 0).0[..12].to_vec()),
            &|e| matches!(e, GgufError::Truncated { offset: 8, .. }),
            "the tensor count needs 8 bytes",
        ),
        (
            "absurd tensor count",
            B::header(3, u64::MAX, 0),
            &|e| {
                matches!(
                    e,
                    GgufError::Count {
                        what: "tensor",
                        offset: 8,
                        ..
                    }
                )
            },
            "tensor count 18446744073709551615 at byte 8",
        ),
        (
            "absurd metadata count",
            B::header(3, 0, 1 << 50),
            &|e| {
                matches!(
                    e,
                    GgufError::Count {
                        what: "metadata key-value",
                        offset: 16,
                        ..
                    }
                )
            },
            "at byte 16",
        ),
        (
            "absurd key length",
            B::header(3, 0, 1).u64(1 << 40).bytes(&[0; 16]),
            &|e| matches!(e, GgufError::StringLength { offset: 24, .. }),
            "string of 1099511627776 bytes at byte 24",
        ),
        (
            "key not UTF-8",
            B::header(3, 0, 1).u64(2).bytes(&[0xff, 0xfe]).u32(4).u32(0),
            &|e| matches!(e, GgufError::Utf8 { offset: 24, .. }),
            "not valid UTF-8",
        ),
        (
            "unknown value type",
            B::header(3, 0, 1).str("k").u32(13).u32(0),
            &|e| matches!(e, GgufError::ValueType { type_id: 13, .. }),
            "key `k` at byte 33 has unknown value type 13",
        ),
        (
            "duplicate key",
            B::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2),
            &|e| matches!(e, GgufError::DuplicateKey { offset: 41, .. }),
            "duplicate key `k` at byte 41",
        ),
        (
            "empty key",
            B::header(3, 0, 1).kv_u32("", 1),
            &|e| matches!(e, GgufError::EmptyKey { offset: 24, .. }),
            "empty key at byte 24",
        ),
        (
            "absurd array length",
            B::header(3, 0, 1)
                .str("arr")
                .u32(9)
                .u32(6)
                .u64(1 << 40)
                .bytes(&[0; 8]),
            &|e| {
                matches!(
                    e,
                    GgufError::Count {
                        what: "array element",
                        ..
                    }
                )
            },
            "array element count 1099511627776",
        ),
        (
            "arrays nested too deep",
            {
                let mut b = B::header(3, 0, 1).str("deep").u32(9);
                for _ in 0..20 {
                    b = b.u32(9).u64(1);
                }
                b.u32(4).u64(1).u32(0)
            },
            &|e| matches!(e, GgufError::Nesting { .. }),
            "nested deeper than 8",
        ),
        (
            "alignment not a power of two",
            B::header(3, 0, 1).kv_u32("general.alignment", 48),
            &|e| matches!(e, GgufError::Alignment { .. }),
            "found uint32 48",
        ),
        (
            "alignment of the wrong type",
            B::header(3, 0, 1).str("general.alignment").u32(10).u64(32),
            &|e| matches!(e, GgufError::Alignment { .. }),
            "must be a uint32",
        ),
        (
            "five dimensions",
            B::header(3, 1, 0)
                .tensor("t", &[1, 1, 1, 1, 1], 0, 0)
                .data(4),
            &|e| matches!(e, GgufError::Tensor { .. }),
            "tensor `t`: has 5 dimensions",
        ),
        (
            "element count overflows",
            B::header(3, 1, 0)
                .tensor("t", &[1 << 40, 1 << 40], 0, 0)
                .data(4),
            &|e| matches!(e, GgufError::Tensor { .. }),
            "more elements than int64",
        ),
        (
            "row length not a multiple of the block size",
            B::header(3, 1, 0).tensor("w", &[100, 2], 35, 0).data(264),
            &|e| matches!(e, GgufError::Tensor { .. }),
            "row length 100 is not a multiple of TQ2_0's block size 256",
        ),
        (
            "unknown tensor type",
            B::header(3, 1, 0).tensor("t", &[4], 4, 0).data(16),
            &|e| matches!(e, GgufError::UnknownType { type_id: 4, .. }),
            "tensor `t` has unknown type id 4",
        ),
        (
            "duplicate tensor names",
            B::header(3, 2, 0)
                .tensor("t", &[8], 0, 0)
                .tensor("t", &[8], 0, 32)
                .data(64),
            &|e| matches!(e, GgufError::DuplicateTensor { index: 1, .. }),
            "duplicate tensor name `t`",
        ),
        (
            "tensor name too long",
            B::header(3, 1, 0)
                .tensor(&"x".repeat(64), &[8], 0, 0)
                .data(32),
            &|e| matches!(e, GgufError::Tensor { .. }),
            "name is 64 bytes long",
        ),
        (
            "data past the end",
            B::header(3, 1, 0).tensor("t", &[8], 0, 1 << 20).data(32),
            &|e| matches!(e, GgufError::DataPastEnd { .. }),
            "runs past the end of the file",
        ),
        (
            "data cut short",
            B::header(3, 1, 0).tensor("t", &[64], 0, 0).data(100),
            &|e| matches!(e, GgufError::DataPastEnd { .. }),
            "tensor `t` data [",
        ),
        (
            "misaligned data",
            B::header(3, 1, 0).tensor("t", &[4], 0, 4).data(64),
            &|e| {
                matches!(
                    e,
                    GgufError::Misaligned {
                        offset: 4,
                        alignment: 32,
                        ..
                    }
                )
            },
            "offset 4 is not a multiple of the alignment 32",
        ),
    ];
    // Overlap: a 16-element f32 tensor is 64 bytes, so `b` at offset 32 overlaps `a`.
    let overlap = err(B::header(3, 2, 0)
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(96));
    assert!(matches!(overlap, GgufError::Overlap { .. }), "{overlap}");
    assert!(
        overlap.to_string().contains("tensor `b` data")
            && overlap.to_string().contains("overlaps tensor `a`")
    );

    let mut checked = 1;
    for (what, bytes, is_right, message) in cases {
        if message.is_empty() {
            continue;
        }
        let e = err(bytes);
        assert!(is_right(&e), "{what}: wrong error kind: {e:?}");
        let text = e.to_string();
        assert!(text.contains(message), "{what}: `{text}` lacks `{message}`");
        assert!(
            text.starts_with("`bad.gguf`"),
            "{what}: `{text}` does not name the file"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} bad files checked");
}

#[test]
fn the_valid_base_file_parses() {
    let f = GgufFile::from_bytes(valid_one_tensor().0, "ok.gguf").unwrap();
    assert_eq!(f.tensors()[0].n_bytes, 32);
    assert_eq!(f.get("k"), Some(&Value::U32(1)));
}

#[test]
fn bools_read_like_ggml_any_nonzero_byte_is_true() {
    let b = B::header(3, 0, 2)
        .str("yes")
        .u32(7)
        .bytes(&[2])
        .str("no")
        .u32(7)
        .bytes(&[0]);
    let f = GgufFile::from_bytes(b.0, "bools.gguf").unwrap();
    assert_eq!(f.get("yes"), Some(&Value::Bool(true)));
    assert_eq!(f.get("no"), Some(&Value::Bool(false)));
}

#[test]
fn version_2_files_read_like_version_3() {
    // GGUF v2 and v3 share the little-endian layout (v3 added big-endian files, which llama.cpp
    // reads only on big-endian hosts).
    let mut b = valid_one_tensor().0;
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = GgufFile::from_bytes(b, "v2.gguf").unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors()[0].name, "t");
}

#[test]
fn open_names_the_path_of_a_missing_file() {
    let e = GgufFile::open(std::path::Path::new("/nonexistent/m.gguf")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read `/nonexistent/m.gguf`"),
        "{e}"
    );
}

/// Valid files to mutate: one made by hand, one by the writer with every metadata kind and
/// ternary tensors.
fn seeds() -> Vec<Vec<u8>> {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "bitnet");
    w.add_kv("n", Value::U64(3));
    w.add_kv("s", bitnet_engine::gguf::string_array(&["ab", "c"]));
    w.add_kv("f", Value::F32(1.0));
    w.add_tensor("a", &[256, 2], GgmlType::TQ2_0, vec![0x55; 132]);
    w.add_tensor("b", &[256], GgmlType::TQ1_0, vec![0x21; 54]);
    w.add_tensor("c", &[32], GgmlType::Q8_0, vec![1; 34]);
    w.add_tensor("d", &[4, 2], GgmlType::F16, vec![0; 16]);
    // A whole (small) model, so mutations reach the keys and shapes the gate mapper reads.
    let model = bitnet_engine::synth::build(&bitnet_engine::synth::ModelSpec {
        n_layer: 1,
        n_ff: 256,
        n_vocab: 16,
        tokenizer: bitnet_engine::synth::TokenizerKind::None,
        ..Default::default()
    })
    .unwrap()
    .to_bytes()
    .unwrap();
    vec![valid_one_tensor().0, w.to_bytes().unwrap(), model]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { len: usize },
    Enlarge { at: usize, value: u64 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (
            any::<usize>(),
            prop_oneof![
                Just(u64::MAX),
                Just(1u64 << 32),
                Just(1u64 << 62),
                Just(u32::MAX as u64),
                any::<u64>()
            ]
        )
            .prop_map(|(at, value)| Mutation::Enlarge { at, value }),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    match *m {
        Mutation::Flip { at, xor } => {
            let i = at % bytes.len();
            bytes[i] ^= xor;
        }
        Mutation::Truncate { len } => bytes.truncate(len % bytes.len()),
        Mutation::Enlarge { at, value } => {
            let i = at % (bytes.len() - 8);
            bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
        }
    }
    bytes
}

proptest! {
    // At least 10,000 cases in CI (the floor); each parse takes microseconds.
    #![proptest_config(ProptestConfig { cases: 12_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(seed in 0usize..3, muts in proptest::collection::vec(mutation(), 1..4)) {
        static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        let mut bytes = SEEDS.get_or_init(seeds)[seed].clone();
        for m in &muts {
            if bytes.len() > 8 {
                bytes = apply(bytes, m);
            }
        }
        if let Ok(f) = GgufFile::from_bytes(bytes, "mutated.gguf") {
            // The gate mapper reads whatever parsed (block counts, vocabulary sizes and shapes
            // from an untrusted header) without panicking, and names each finding.
            for finding in bitnet_engine::arch::check(&f) {
                prop_assert!(!finding.code.is_empty() && !finding.message.is_empty());
            }
            for t in f.tensors() {
                // Every tensor that parsed is in bounds and dequantizes or errors cleanly.
                let data = f.tensor_data(t);
                prop_assert_eq!(data.len() as u64, t.n_bytes);
                if t.n_elements() < 1 << 20 {
                    let _ = bitnet_engine::quant::dequantize(t.ty, data, t.n_elements() as usize);
                }
            }
        }
    }
}

/// Files gguf's own loader refuses (and on which llama.cpp aborts) are refused here too, naming
/// the field: an alignment below 8, a tensor name with a NUL byte, tensor data with a gap or in
/// another order than the tensors are declared.
#[test]
fn files_llama_cpp_refuses_are_refused() {
    let e = err(B::header(3, 1, 1)
        .kv_u32("general.alignment", 1)
        .tensor("t", &[8], 0, 0)
        .data(32));
    assert!(matches!(e, GgufError::Alignment { .. }), "{e}");
    let e = err(B::header(3, 1, 0).tensor("a\0b", &[8], 0, 0).data(32));
    assert!(e.to_string().contains("NUL"), "{e}");
    // `a` is 32 bytes (8 f32): `b` must start at 32.
    let gap = err(B::header(3, 2, 0)
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[8], 0, 64)
        .data(128));
    assert!(
        gap.to_string().contains("tensor `b`") && gap.to_string().contains("expected 32"),
        "{gap}"
    );
    let reordered = err(B::header(3, 2, 0)
        .tensor("a", &[8], 0, 32)
        .tensor("b", &[8], 0, 0)
        .data(64));
    assert!(reordered.to_string().contains("expected 0"), "{reordered}");
}
