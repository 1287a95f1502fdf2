//! Tokenizer parity: the engine's byte-level BPE (engine::tokenizer) gives llama.cpp's token ids
//! (`llama_tokenize` on the same GGUF vocabulary) for the shipped scenarios' prompts and a set of
//! hard cases, on the small vocabulary of the tiny preset and the 32002-token one of the 700m
//! shape.

use std::path::Path;

use bitnet_engine::model::Model;
use bitnet_engine::synth::{build, preset, ModelSpec};
use bitnet_harness::reference::llama;

const HARD: &[&str] = &[
    "",
    " ",
    "a",
    "Hello world",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\n\n",
    "it's we're they've I'm you'll she'd 'tis",
    "numbers 1 22 333 4444 3.14159 1e-5 0x1F",
    "punctuation!!! ... ??? --- (brackets) [x] {y}",
    "héllo wörld ñandú façade",
    "日本語のテキスト 中文 한국어",
    "emoji 🙂🚀 and ZWJ 👩‍💻",
    "Ελληνικά кириллица עברית العربية",
    "mixed123abc ABC123 a1b2c3",
    "The harness runs the engine and the reference on the same tokens.",
    "\u{00a0}non-breaking\u{2003}em space\u{3000}ideographic",
];

fn check(model_path: &Path, prompts: &[String]) {
    let model = Model::load(model_path).unwrap();
    let t = model
        .tokenizer
        .as_ref()
        .expect("the preset has a vocabulary");
    for p in prompts {
        let ours = t.encode(p, true);
        let theirs = llama::tokenize(model_path, p).unwrap();
        assert_eq!(ours, theirs, "prompt {p:?}");
        assert_eq!(t.decode(&ours), *p, "round trip of {p:?}");
    }
}

fn shipped_prompts() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let files = bitnet_harness::scenario::find_scenarios(&[root.join("scenarios")]).unwrap();
    let mut prompts = Vec::new();
    for f in files {
        prompts.extend(
            bitnet_harness::scenario::load_scenario(&f)
                .unwrap()
                .scenario
                .inputs
                .prompts,
        );
    }
    assert!(!prompts.is_empty(), "a shipped scenario has text prompts");
    prompts
}

#[test]
fn engine_token_ids_equal_llama_cpp_on_the_tiny_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    build(&preset("tiny").unwrap())
        .unwrap()
        .write(&path)
        .unwrap();
    let mut prompts: Vec<String> = HARD.iter().map(|s| s.to_string()).collect();
    prompts.extend(shipped_prompts());
    check(&path, &prompts);
}

#[test]
fn engine_token_ids_equal_llama_cpp_on_a_32002_token_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v32k.gguf");
    let spec = ModelSpec {
        n_vocab: 32002,
        n_layer: 1,
        ..ModelSpec::default()
    };
    build(&spec).unwrap().write(&path).unwrap();
    let prompts: Vec<String> = HARD.iter().map(|s| s.to_string()).collect();
    check(&path, &prompts);
}

#[test]
fn models_without_a_vocabulary_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.gguf");
    let spec = ModelSpec {
        tokenizer: bitnet_engine::synth::TokenizerKind::None,
        ..ModelSpec::default()
    };
    build(&spec).unwrap().write(&path).unwrap();
    assert!(Model::load(&path).unwrap().tokenizer.is_none());
    let e = llama::tokenize(&path, "hi").unwrap_err();
    assert!(e.contains("has no vocabulary"), "{e}");
}
