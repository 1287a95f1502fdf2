//! The engine's fuzz seed corpora (`tests/fuzz_cases/<target>/`: GGUF files, `.npy` files, trace
//! records, vocabularies), replayed through the very functions the fuzz targets run
//! (`fuzz/src/engine_bodies.rs`, included by path): each seed gives the result its `.expected`
//! file states and none panics. The seeds are the hostile inputs of issue 15 (a block count of
//! 2^63−1, an `.npy` shape of `)`, a record pointing at `/dev/zero`, an alignment of 1, a repeated
//! token, a NUL in a tensor name, ...) and valid models the fuzzer starts from. The binary ones
//! are written by `write_seeds` below (`BITNET_WRITE_FUZZ_SEEDS=1 cargo test -p bitnet-engine
//! --test fuzz_corpus -- --ignored`); `.expected` files and text seeds are kept by hand.

#[path = "../../fuzz/src/engine_bodies.rs"]
mod bodies;
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;

use std::path::{Path, PathBuf};

use bitnet_engine::gguf::{string_array, GgmlType, GgufWriter, Value};
use bitnet_engine::synth::{self, ModelSpec};

mod common;
use common::B;

fn cases(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_cases")
        .join(target)
}

#[test]
fn gguf_reader_seeds() {
    assert!(seeds::replay(&cases("gguf_reader"), &bodies::gguf_reader) >= 25);
}

#[test]
fn npy_reader_seeds() {
    assert!(seeds::replay(&cases("npy_reader"), &bodies::npy_reader) >= 8);
}

#[test]
fn trace_reader_seeds() {
    assert!(seeds::replay(&cases("trace_reader"), &bodies::trace_reader) >= 8);
}

#[test]
fn tokenizer_seeds() {
    assert!(seeds::replay(&cases("tokenizer"), &bodies::tokenizer) >= 6);
}

/// A small model in F32 (8-wide, 2 heads sharing one KV head, one layer): a few kilobytes, so
/// the fuzzer's mutations reach its header and shapes rather than only its weights.
fn small_model(vocab: Option<usize>) -> GgufWriter {
    small_model_of(vocab, 16)
}

/// [`small_model`] with `n_vocab` rows of embedding when it has no vocabulary.
fn small_model_of(vocab: Option<usize>, n_plain: u64) -> GgufWriter {
    let (e, f, kv) = (8u64, 16u64, 4u64);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut values = |n: u64, scale: f32| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale;
                v.to_le_bytes()
            })
            .collect()
    };
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "bitnet");
    w.add_kv("bitnet.context_length", Value::U32(64));
    w.add_kv("bitnet.embedding_length", Value::U32(e as u32));
    w.add_kv("bitnet.block_count", Value::U32(1));
    w.add_kv("bitnet.feed_forward_length", Value::U32(f as u32));
    w.add_kv("bitnet.attention.head_count", Value::U32(2));
    w.add_kv("bitnet.attention.head_count_kv", Value::U32(1));
    w.add_kv("bitnet.rope.freq_base", Value::F32(10000.0));
    w.add_kv("bitnet.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    let n_vocab = match vocab {
        None => {
            w.add_kv("tokenizer.ggml.model", "none");
            n_plain
        }
        Some(n) => {
            let v = bitnet_engine::tokenizer::synthetic_bpe_vocab(n).unwrap();
            w.add_kv("tokenizer.ggml.model", "gpt2");
            w.add_kv("tokenizer.ggml.pre", "gpt-2");
            w.add_kv("tokenizer.ggml.tokens", string_array(&v.tokens));
            w.add_kv("tokenizer.ggml.merges", string_array(&v.merges));
            n as u64
        }
    };
    w.add_tensor(
        "token_embd.weight",
        &[e, n_vocab],
        GgmlType::F32,
        values(e * n_vocab, 2.0),
    );
    w.add_tensor("output_norm.weight", &[e], GgmlType::F32, values(e, 2.0));
    for (t, n) in [
        ("attn_norm", e),
        ("attn_sub_norm", e),
        ("ffn_norm", e),
        ("ffn_sub_norm", f),
    ] {
        w.add_tensor(
            &format!("blk.0.{t}.weight"),
            &[n],
            GgmlType::F32,
            values(n, 2.0),
        );
    }
    for (t, n_in, n_out) in [
        ("attn_q", e, e),
        ("attn_k", e, kv),
        ("attn_v", e, kv),
        ("attn_output", e, e),
        ("ffn_gate", e, f),
        ("ffn_up", e, f),
        ("ffn_down", f, e),
    ] {
        w.add_tensor(
            &format!("blk.0.{t}.weight"),
            &[n_in, n_out],
            GgmlType::F32,
            values(n_in * n_out, 1.0),
        );
    }
    w
}

/// The small model with every value of one F32 tensor set to `v`.
fn small_filled(tensor: &str, v: f32) -> Vec<u8> {
    let f = bitnet_engine::gguf::GgufFile::from_bytes(small_model(None).to_bytes().unwrap(), "m")
        .unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_kv(k, v.clone());
    }
    for t in f.tensors() {
        let mut data = f.tensor_data(t).to_vec();
        if t.name == tensor {
            data = std::iter::repeat_n(v.to_le_bytes(), data.len() / 4)
                .flatten()
                .collect();
        }
        w.add_tensor(&t.name, &t.dims, t.ty, data);
    }
    w.to_bytes().unwrap()
}

/// The small model with one metadata value replaced.
fn small_with(key: &str, v: Value) -> Vec<u8> {
    let mut w = small_model(None);
    w.add_kv(key, v);
    w.to_bytes().unwrap()
}

fn npy_with_header(h: &str) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b
}

/// Writes the binary seeds of `gguf_reader` and `npy_reader` (text seeds and every `.expected`
/// are kept by hand). Run with `BITNET_WRITE_FUZZ_SEEDS=1` after changing the cases here.
#[test]
#[ignore = "writes the binary seeds: BITNET_WRITE_FUZZ_SEEDS=1 ... -- --ignored"]
fn write_seeds() {
    if std::env::var_os("BITNET_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let mut gguf: Vec<(&str, Vec<u8>)> = vec![
        (
            "valid_small_f32.gguf",
            small_model(None).to_bytes().unwrap(),
        ),
        (
            "valid_small_bpe.gguf",
            small_model(Some(300)).to_bytes().unwrap(),
        ),
        (
            "block_count_2p63_minus_1.gguf",
            small_with("bitnet.block_count", Value::U64(u64::MAX >> 1)),
        ),
        (
            "block_count_2p31.gguf",
            small_with("bitnet.block_count", Value::U32(1 << 31)),
        ),
        (
            "block_count_2_on_1_layer.gguf",
            small_with("bitnet.block_count", Value::U32(2)),
        ),
        (
            "context_length_0.gguf",
            small_with("bitnet.context_length", Value::U32(0)),
        ),
        (
            "rms_epsilon_nan.gguf",
            small_with(
                "bitnet.attention.layer_norm_rms_epsilon",
                Value::F32(f32::NAN),
            ),
        ),
        (
            "rms_epsilon_negative.gguf",
            small_with("bitnet.attention.layer_norm_rms_epsilon", Value::F32(-1e-5)),
        ),
        (
            "rope_base_infinite.gguf",
            small_with("bitnet.rope.freq_base", Value::F32(f32::INFINITY)),
        ),
        (
            "rope_base_zero.gguf",
            small_with("bitnet.rope.freq_base", Value::F32(0.0)),
        ),
        (
            "head_count_0.gguf",
            small_with("bitnet.attention.head_count", Value::U32(0)),
        ),
        (
            "alignment_1.gguf",
            small_with("general.alignment", Value::U32(1)),
        ),
        (
            "unknown_architecture.gguf",
            small_with("general.architecture", Value::String("bitnot".into())),
        ),
        (
            "vocab_size_past_embedding.gguf",
            small_with("bitnet.vocab_size", Value::U32(1 << 30)),
        ),
        (
            "vocab_size_below_embedding.gguf",
            small_with("bitnet.vocab_size", Value::U32(2)),
        ),
        (
            "prompt_past_vocabulary.gguf",
            small_model_of(None, 3).to_bytes().unwrap(),
        ),
        (
            "nan_output_norm.gguf",
            small_filled("output_norm.weight", f32::NAN),
        ),
        (
            "infinite_embedding.gguf",
            small_filled("token_embd.weight", f32::INFINITY),
        ),
        (
            "huge_attn_norm.gguf",
            small_filled("blk.0.attn_norm.weight", 3e38),
        ),
    ];
    let mut dup = small_model(Some(300));
    let mut tokens = bitnet_engine::tokenizer::synthetic_bpe_vocab(300)
        .unwrap()
        .tokens;
    tokens[290] = tokens[280].clone();
    dup.add_kv("tokenizer.ggml.tokens", string_array(&tokens));
    gguf.push(("duplicate_token.gguf", dup.to_bytes().unwrap()));
    let mut missing = small_model(None);
    missing.remove_tensor("blk.0.ffn_down.weight");
    gguf.push(("missing_tensor.gguf", missing.to_bytes().unwrap()));
    for (name, spec) in [
        (
            "valid_synth_tq2_0_scales.gguf",
            ModelSpec {
                n_layer: 1,
                n_ff: 256,
                n_vocab: 16,
                scale_tensors: true,
                tokenizer: synth::TokenizerKind::None,
                ..Default::default()
            },
        ),
        (
            "valid_synth_i2_s.gguf",
            ModelSpec {
                n_layer: 1,
                n_ff: 256,
                n_vocab: 16,
                ternary_type: synth::TernaryType::I2s,
                embedding_type: synth::EmbeddingType::F16,
                tokenizer: synth::TokenizerKind::None,
                ..Default::default()
            },
        ),
    ] {
        gguf.push((name, synth::build(&spec).unwrap().to_bytes().unwrap()));
    }
    let hand: Vec<(&str, B)> = vec![
        ("empty.gguf", B(vec![])),
        ("bad_magic.gguf", B(b"GGML\x03\0\0\0".to_vec())),
        ("tensor_count_max.gguf", B::header(3, u64::MAX, 0)),
        (
            "array_length_2p40.gguf",
            B::header(3, 0, 1).str("arr").u32(9).u32(6).u64(1 << 40),
        ),
        ("arrays_nested_20_deep.gguf", {
            let mut b = B::header(3, 0, 1).str("deep").u32(9);
            for _ in 0..20 {
                b = b.u32(9).u64(1);
            }
            b.u32(4).u64(1).u32(0)
        }),
        (
            "nul_in_tensor_name.gguf",
            B::header(3, 1, 0).tensor("a\0b", &[8], 0, 0).data(32),
        ),
        (
            "tensor_data_gap.gguf",
            B::header(3, 2, 0)
                .tensor("a", &[8], 0, 0)
                .tensor("b", &[8], 0, 64)
                .data(128),
        ),
        (
            "tensor_data_reordered.gguf",
            B::header(3, 2, 0)
                .tensor("a", &[8], 0, 32)
                .tensor("b", &[8], 0, 0)
                .data(64),
        ),
        (
            "tensor_data_overlap.gguf",
            B::header(3, 2, 0)
                .tensor("a", &[16], 0, 0)
                .tensor("b", &[8], 0, 32)
                .data(96),
        ),
        (
            "tensor_past_end.gguf",
            B::header(3, 1, 0).tensor("t", &[8], 0, 1 << 20).data(32),
        ),
        (
            "tensor_elements_overflow.gguf",
            B::header(3, 1, 0)
                .tensor("t", &[1 << 40, 1 << 40], 0, 0)
                .data(4),
        ),
        (
            "tensor_unknown_type.gguf",
            B::header(3, 1, 0).tensor("t", &[4], 4, 0).data(16),
        ),
        (
            "alignment_48.gguf",
            B::header(3, 1, 1)
                .kv_u32("general.alignment", 48)
                .tensor("t", &[8], 0, 0)
                .data(32),
        ),
        (
            "i2_s_empty_tensor.gguf",
            B::header(3, 1, 0).tensor("t", &[0, 4], 36, 0).data(0),
        ),
        (
            "duplicate_key.gguf",
            B::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2),
        ),
    ];
    gguf.extend(hand.into_iter().map(|(n, b)| (n, b.0)));
    let mut truncated = small_model(None).to_bytes().unwrap();
    truncated.truncate(truncated.len() / 2);
    gguf.push(("truncated_small.gguf", truncated));

    let npy: Vec<(&str, Vec<u8>)> = vec![
        (
            "valid_2x3.npy",
            bitnet_engine::npy::to_npy_bytes(&[2, 3], &[1.0, 2.0, 3.0, -4.0, 0.5, f32::NAN]),
        ),
        (
            "valid_scalar.npy",
            bitnet_engine::npy::to_npy_bytes(&[], &[7.0]),
        ),
        (
            "shape_close_paren.npy",
            npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': )}"),
        ),
        (
            "non_ascii_header.npy",
            npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': é(2,)}"),
        ),
        (
            "shape_overflows.npy",
            npy_with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 3)}",
            ),
        ),
        (
            "shape_needs_exabytes.npy",
            npy_with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,)}",
            ),
        ),
        (
            "header_cut.npy",
            npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape':"),
        ),
        (
            "float64.npy",
            npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,)}"),
        ),
        (
            "fortran_order.npy",
            npy_with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (1,)}"),
        ),
        ("header_past_end.npy", {
            let mut b = npy_with_header("{}");
            b[8] = 0xff;
            b
        }),
        ("bad_magic.npy", b"\x93NUMPZ\x01\x00\x00\x00".to_vec()),
    ];
    for (target, files) in [("gguf_reader", gguf), ("npy_reader", npy)] {
        let dir = cases(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
