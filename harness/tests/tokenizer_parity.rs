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
    "runs of one pair: lll aaaa eee sss 1000000 ttt nnnn    ...... ----",
    "trailing spaces and tabs   \t\t  ",
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

/// LLaMA 3 pre-tokenization's own hard cases: contractions in any case, digit runs split in
/// threes, newlines kept with the punctuation before them, whitespace runs ending in newlines.
const LLAMA3_HARD: &[&str] = &[
    "IT'S WE'RE THEY'VE I'M YOU'LL SHE'D It'S",
    "1234567 12 123456 3.14159265 2024-11-22",
    "hello\r\nworld\n\n\nbye\r\r",
    "end.\n\nNext: (a)\n  b\t\n c",
    "   \n   x  \n",
    " ?!\n\n...\r\n--",
    "don't stop—'twas 'S",
    "١٢٣٤ ٥٦ numerals and ⅫⅩ",
];

fn llama_bpe(spec: &ModelSpec, path: &Path) {
    let mut w = build(spec).unwrap();
    w.add_kv("tokenizer.ggml.pre", "llama-bpe");
    w.write(path).unwrap();
    let t = Model::load(path).unwrap().tokenizer.unwrap();
    assert_eq!(t.pre, bitnet_engine::tokenizer::PreTokenizer::Llama3);
}

#[test]
fn llama_bpe_vocabularies_tokenize_as_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let mut prompts: Vec<String> = HARD
        .iter()
        .chain(LLAMA3_HARD)
        .map(|s| s.to_string())
        .collect();
    prompts.extend(shipped_prompts());
    let path = dir.path().join("tiny-llama3.gguf");
    llama_bpe(&preset("tiny").unwrap(), &path);
    check(&path, &prompts);
    let path = dir.path().join("v32k-llama3.gguf");
    let spec = ModelSpec {
        n_vocab: 32002,
        n_layer: 1,
        ..ModelSpec::default()
    };
    llama_bpe(&spec, &path);
    check(&path, &prompts);
}

#[test]
fn random_strings_tokenize_as_llama_cpp_with_both_pre_tokenizers() {
    // A deterministic generator over a pool that exercises every branch of both splitters.
    const POOL: &[&str] = &[
        "a",
        "Z",
        "é",
        "ß",
        "ж",
        "日",
        "한",
        "ا",
        "1",
        "٣",
        "Ⅻ",
        "½",
        " ",
        "  ",
        "\t",
        "\n",
        "\r",
        "\r\n",
        "\u{a0}",
        "\u{3000}",
        "'",
        "'s",
        "'T",
        "'re",
        "'LL",
        ".",
        "!",
        "?",
        "-",
        "—",
        "🙂",
        "👩\u{200d}💻",
        "\u{301}",
        "$",
        "€",
        "_",
        "/",
    ];
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let prompts: Vec<String> = (0..150)
        .map(|_| {
            let len = 1 + next() % 12;
            (0..len)
                .map(|_| POOL[(next() % POOL.len() as u64) as usize])
                .collect()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let gpt2 = dir.path().join("tiny.gguf");
    build(&preset("tiny").unwrap())
        .unwrap()
        .write(&gpt2)
        .unwrap();
    check(&gpt2, &prompts);
    let l3 = dir.path().join("tiny-llama3.gguf");
    llama_bpe(&preset("tiny").unwrap(), &l3);
    check(&l3, &prompts);
}

#[test]
fn llama3_takes_a_word_that_is_a_token_whole_without_merges() {
    // Replace the last token of the tiny vocabulary by " zzzq" (byte-mapped `Ġzzzq`), which no
    // merge produces: llama.cpp's llama3 tokenizer (`ignore_merges`) emits it whole, the gpt2 one
    // spells it from merges and bytes.
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("tiny.gguf");
    build(&preset("tiny").unwrap())
        .unwrap()
        .write(&plain)
        .unwrap();
    let f = bitnet_engine::gguf::GgufFile::open(&plain).unwrap();
    let mut tokens: Vec<String> = f
        .get("tokenizer.ggml.tokens")
        .and_then(bitnet_engine::gguf::Value::as_array)
        .unwrap()
        .values
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // The last normal token (type 1; control tokens are not text).
    let types = f
        .get("tokenizer.ggml.token_type")
        .and_then(bitnet_engine::gguf::Value::as_array)
        .unwrap();
    let last = (0..tokens.len())
        .rev()
        .find(|&i| types.values[i].as_i64() == Some(1))
        .unwrap();
    tokens[last] = "\u{120}zzzq".into();
    for pre in ["gpt-2", "llama-bpe"] {
        let path = dir.path().join(format!("{pre}.gguf"));
        let mut w = build(&preset("tiny").unwrap()).unwrap();
        w.add_kv("tokenizer.ggml.pre", pre);
        w.add_kv(
            "tokenizer.ggml.tokens",
            bitnet_engine::gguf::string_array(&tokens),
        );
        w.write(&path).unwrap();
        let prompts = vec!["a zzzq b".to_string(), " zzzq".to_string()];
        check(&path, &prompts);
        let t = Model::load(&path).unwrap().tokenizer.unwrap();
        let ids = t.encode(" zzzq", false);
        if pre == "llama-bpe" {
            assert_eq!(ids, [last as u32], "{pre}");
        } else {
            assert!(ids.len() > 1, "{pre}: {ids:?}");
        }
    }
}

/// The special-token metadata as llama.cpp reads it, with llama.cpp as the oracle: without a BOS
/// id (its default for a `gpt2` vocabulary, 11), with one past the vocabulary (the default
/// again), without `add_bos_token` (true for the LLaMA 3 pre-tokenizers only), the engine gives
/// llama.cpp's ids; a key of the wrong type (a string id, an int32 id, an integer flag, token
/// types of another type or too few) is refused by both.
#[test]
fn special_token_metadata_is_read_as_llama_cpp_reads_it() {
    use bitnet_engine::gguf::{GgufWriter, Value};
    let dir = tempfile::tempdir().unwrap();
    let spec = preset("tiny").unwrap();
    type Edit = fn(&mut GgufWriter);
    let same: Vec<(&str, Edit)> = vec![
        ("no BOS id", |w| {
            w.remove_kv("tokenizer.ggml.bos_token_id");
            w.add_kv("tokenizer.ggml.add_bos_token", Value::Bool(true));
        }),
        ("a BOS id past the vocabulary", |w| {
            w.add_kv("tokenizer.ggml.bos_token_id", Value::U32(1_000_000));
            w.add_kv("tokenizer.ggml.add_bos_token", Value::Bool(true));
        }),
        ("llama-bpe without add_bos_token", |w| {
            w.add_kv("tokenizer.ggml.pre", "llama-bpe");
            w.remove_kv("tokenizer.ggml.add_bos_token");
        }),
        ("gpt-2 without add_bos_token", |w| {
            w.remove_kv("tokenizer.ggml.add_bos_token");
        }),
        ("add_bos_token true", |w| {
            w.add_kv("tokenizer.ggml.add_bos_token", Value::Bool(true))
        }),
    ];
    let prompts: Vec<String> = ["Hello world", "a", " x y "].map(String::from).to_vec();
    for (what, edit) in same {
        let path = dir.path().join("m.gguf");
        let mut w = build(&spec).unwrap();
        edit(&mut w);
        w.write(&path).unwrap();
        let t = Model::load(&path).unwrap().tokenizer.unwrap();
        for p in &prompts {
            let theirs = llama::tokenize(&path, p).unwrap();
            assert_eq!(t.encode(p, true), theirs, "{what}: {p:?}");
        }
    }
    let refused: Vec<(&str, Edit, &str)> = vec![
        (
            "a string BOS id",
            |w| w.add_kv("tokenizer.ggml.bos_token_id", "1"),
            "tokenizer.ggml.bos_token_id`: expected a uint32, found string",
        ),
        (
            "an int32 BOS id",
            |w| w.add_kv("tokenizer.ggml.bos_token_id", Value::I32(-1)),
            "tokenizer.ggml.bos_token_id`: expected a uint32, found int32",
        ),
        (
            "an integer add_bos_token",
            |w| w.add_kv("tokenizer.ggml.add_bos_token", Value::U32(1)),
            "tokenizer.ggml.add_bos_token`: expected a bool, found uint32",
        ),
        (
            "uint32 token types",
            |w| {
                w.add_kv(
                    "tokenizer.ggml.token_type",
                    Value::Array(bitnet_engine::gguf::Array::new(
                        bitnet_engine::gguf::value_type::U32,
                        vec![Value::U32(1); 512],
                    )),
                )
            },
            "tokenizer.ggml.token_type`: expected an array of int32",
        ),
        (
            "a string where the vocabulary belongs",
            |w| w.add_kv("tokenizer.ggml.tokens", "abc"),
            "tokenizer.ggml.tokens`: expected an array of strings, found string",
        ),
        (
            "too few token types",
            |w| {
                w.add_kv(
                    "tokenizer.ggml.token_type",
                    bitnet_engine::gguf::i32_array(&[1; 10]),
                )
            },
            "10 types for 512 tokens",
        ),
    ];
    for (what, edit, says) in refused {
        let path = dir.path().join("m.gguf");
        let mut w = build(&spec).unwrap();
        edit(&mut w);
        w.write(&path).unwrap();
        let e = Model::load(&path).unwrap_err().to_string();
        assert!(e.contains(says), "{what}: {e}");
        // One mention of the file, and no tensor where a key is wrong.
        assert_eq!(e.matches("m.gguf").count(), 1, "{what}: {e}");
        assert!(!e.contains("tensor `"), "{what}: {e}");
        assert!(
            llama::tokenize(&path, "Hello").is_err(),
            "{what}: llama.cpp loads it"
        );
    }
}

/// Float hyperparameters are float32 exactly, as llama.cpp reads them: a float64 epsilon or an
/// integer RoPE base is refused by both, naming the key.
#[test]
fn float_hyperparameters_of_another_type_are_refused_as_llama_cpp_refuses_them() {
    use bitnet_engine::gguf::Value;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    for (key, value) in [
        ("bitnet.attention.layer_norm_rms_epsilon", Value::F64(1e-5)),
        ("bitnet.rope.freq_base", Value::U32(10000)),
    ] {
        let mut w = build(&preset("tiny").unwrap()).unwrap();
        w.add_kv(key, value);
        w.write(&path).unwrap();
        let e = Model::load(&path).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("a float32"), "{key}: {e}");
        // llama.cpp's whole load (its tokenizer-only load skips the hyperparameters).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["ref-trace", "m.gguf", "--tokens", "1", "-o", "r"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key}: llama.cpp loads it");
        assert!(text.contains("wrong type"), "{key}: {text}");
    }
}

/// A 32002-token vocabulary whose unused tail holds added tokens of every type, as conversion
/// tools write them (user-defined, control, unknown, unused, byte), including texts llama.cpp
/// retypes: end-of-generation and fill-in-the-middle texts become control tokens, gpt-oss's
/// `<|channel|>` becomes user-defined.
fn added_tokens_model(path: &Path, extra: impl FnOnce(&mut bitnet_engine::gguf::GgufWriter)) {
    use bitnet_engine::gguf::{i32_array, string_array};
    const ADDED: &[(&str, i32)] = &[
        ("<tool_call>", 4),
        ("Hello", 4),
        (" xyz", 4),
        ("abc<def", 4),
        ("\n\n", 4),
        ("<|user|>", 3),
        ("<|assistant|>", 3),
        ("<|user|>x", 4),
        ("<|eot_id|>", 4),
        ("<|channel|>", 3),
        ("<|message|>", 1),
        ("<|fim_prefix|>", 4),
        ("<SUF>", 1),
        ("<|im_start|>", 4),
        ("<b>", 4),
        ("<b><b>", 4),
        ("日本", 4),
        ("éè", 4),
        ("Ġhello", 4),
        ("<unk>", 2),
        ("<unused0>", 5),
        ("<0x41>", 6),
        ("<|spare_unused|>", 3),
        ("ĠĠĠĠ", 1),
        ("\u{1F642}x", 1),
    ];
    let spec = ModelSpec {
        n_vocab: 32002,
        n_layer: 1,
        ..ModelSpec::default()
    };
    let mut v = bitnet_engine::tokenizer::synthetic_bpe_vocab(32002).unwrap();
    let first_unused = v.token_types.iter().position(|&t| t == 5).unwrap();
    for (k, (text, ty)) in ADDED.iter().enumerate() {
        v.tokens[first_unused + k] = text.to_string();
        v.token_types[first_unused + k] = *ty;
    }
    let mut w = build(&spec).unwrap();
    w.add_kv("tokenizer.ggml.tokens", string_array(&v.tokens));
    w.add_kv("tokenizer.ggml.token_type", i32_array(&v.token_types));
    extra(&mut w);
    w.write(path).unwrap();
}

const ADDED_PROMPTS: &[&str] = &[
    "x<tool_call>y",
    "Hello world, Hello!Hello",
    "say <|user|>hi<|assistant|> there",
    "<|user|>xx<|user|>",
    " xyz xyz  xyz",
    "abc<def abc<de abc<defabc<def",
    "a\n\n\nb\n\n",
    "<|eot_id|>end",
    "<|channel|>analysis<|message|>text",
    "<|fim_prefix|>pre<SUF>",
    "<b><b><b>",
    "日本語 éè caféè",
    "<unk><unused0><0x41><|spare_unused|>",
    "Ġhello Ġhello",
    "<|im_start|>user\nHello<tool_call> xyz",
    "🙂x 🙂xy",
];

/// Engine and llama.cpp agree on `prompts` (ids) and on every token's text (each id rendered
/// as `llama_token_to_piece` without special renders it).
fn check_with_pieces(path: &Path, prompts: &[String]) {
    let model = Model::load(path).unwrap();
    let t = model.tokenizer.as_ref().unwrap();
    let mut seen = Vec::new();
    for p in prompts {
        let ours = t.encode(p, true);
        let theirs = llama::tokenize(path, p).unwrap();
        assert_eq!(ours, theirs, "prompt {p:?}");
        seen.extend(ours);
    }
    seen.extend((31960..32002).chain(0..300));
    let pieces = llama::detokenize(path, &seen).unwrap();
    for (id, piece) in seen.iter().zip(pieces) {
        assert_eq!(
            t.decode(&[*id]),
            String::from_utf8_lossy(&piece),
            "token {id}"
        );
    }
}

#[test]
fn added_tokens_of_every_type_tokenize_and_render_as_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let mut prompts: Vec<String> = ADDED_PROMPTS.iter().map(|s| s.to_string()).collect();
    prompts.extend(HARD.iter().map(|s| s.to_string()));
    let path = dir.path().join("added.gguf");
    added_tokens_model(&path, |_| {});
    let t = Model::load(&path).unwrap().tokenizer.unwrap();
    // Hand-checked: the user-defined `<tool_call>` is one token between the text around it.
    let tool = t.encode("<tool_call>", false);
    assert_eq!(tool.len(), 1, "{tool:?}");
    assert_eq!(t.encode("x<tool_call>y", false)[1], tool[0]);
    check_with_pieces(&path, &prompts);
    // LLaMA 3 pre-tokenization, EOS added, and a FIM prefix id named by the file (so
    // `<|fim_prefix|>` is not made a control token by its text, and is matched in text).
    let path = dir.path().join("added-llama3.gguf");
    added_tokens_model(&path, |w| {
        w.add_kv("tokenizer.ggml.pre", "llama-bpe");
        w.add_kv("tokenizer.ggml.add_eos_token", true);
        w.add_kv("tokenizer.ggml.fim_pre_token_id", 5u32);
    });
    let t = Model::load(&path).unwrap().tokenizer.unwrap();
    assert_eq!(t.encode("a", true).last().copied(), t.eos);
    check_with_pieces(&path, &prompts);
}

/// A vocabulary llama.cpp runs but the engine cannot tokenize text with (a pre-tokenizer it
/// lacks) still loads: the model runs on token ids, and text prompts are refused saying why. A
/// pre-tokenizer llama.cpp does not know either refuses the model, as llama.cpp does.
#[test]
fn a_vocabulary_only_llama_cpp_tokenizes_still_runs_on_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qwen2.gguf");
    let mut w = build(&preset("tiny").unwrap()).unwrap();
    w.add_kv("tokenizer.ggml.pre", "qwen2");
    w.write(&path).unwrap();
    let model = Model::load(&path).unwrap();
    assert!(model.tokenizer.is_none());
    let e = model.text_tokenizer("qwen2.gguf").unwrap_err();
    assert!(
        e.contains("pre-tokenizer `qwen2`") && e.contains("give token ids"),
        "{e}"
    );
    assert!(llama::tokenize(&path, "hi").is_ok(), "llama.cpp runs it");
    let path = dir.path().join("gpt5.gguf");
    let mut w = build(&preset("tiny").unwrap()).unwrap();
    w.add_kv("tokenizer.ggml.pre", "gpt-5");
    w.write(&path).unwrap();
    let e = Model::load(&path).unwrap_err().to_string();
    assert!(e.contains("pre-tokenizer `gpt-5` is not supported"), "{e}");
    assert!(
        llama::tokenize(&path, "hi").is_err(),
        "llama.cpp refuses it"
    );
}
