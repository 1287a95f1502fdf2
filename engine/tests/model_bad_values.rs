//! Semantically invalid hyperparameters in an otherwise well-formed file: each is refused by
//! `Model::load` with an error naming the key and what was expected, before anything is sized by
//! it (a `block_count` of 2^63−1 used to abort the process reserving memory for that many layers).

use bitnet_engine::gguf::Value;
use bitnet_engine::model::Model;
use bitnet_engine::synth::{build, preset};

fn load_with(key: &str, value: Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = build(&preset("tiny").unwrap()).unwrap();
    w.add_kv(key, value);
    w.write(&path).unwrap();
    match Model::load(&path) {
        Ok(_) => panic!("`{key}` accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_hyperparameters_are_refused_with_the_key_named() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "bitnet.block_count",
            Value::U64(u64::MAX >> 1),
            "block_count",
        ),
        ("bitnet.block_count", Value::U32(1 << 31), "block_count"),
        ("bitnet.block_count", Value::U32(1), "number of layers"),
        ("bitnet.block_count", Value::U32(3), "block_count"),
        ("bitnet.context_length", Value::U32(0), "context_length"),
        (
            "bitnet.embedding_length",
            Value::U32(0),
            "bitnet.embedding_length",
        ),
    ];
    for (key, v, want) in cases {
        let e = load_with(key, v);
        assert!(e.contains(want), "{key}: {e}");
    }
    for key in [
        "bitnet.attention.layer_norm_rms_epsilon",
        "bitnet.rope.freq_base",
    ] {
        for v in [f32::NAN, f32::INFINITY, 0.0, -1e-5] {
            let e = load_with(key, Value::F32(v));
            assert!(
                e.contains(key) && e.contains("finite positive"),
                "{key} = {v}: {e}"
            );
        }
    }
}

#[test]
fn a_vocabulary_with_a_repeated_string_is_refused() {
    let mut tokens = bitnet_engine::tokenizer::synthetic_bpe_vocab(512)
        .unwrap()
        .tokens;
    tokens[300] = tokens[299].clone();
    let e = load_with(
        "tokenizer.ggml.tokens",
        bitnet_engine::gguf::string_array(&tokens),
    );
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("token 300 repeats token 299"),
        "{e}"
    );
}
