//! `harness inspect --check-arch`, the gate mapper: every preset maps to its architecture, and
//! each mis-mapped file (a preset with one thing changed, as a converter might get it wrong) is
//! refused with its own finding and a distinct exit code.

use std::path::Path;
use std::process::Command;

use bitnet_engine::gguf::{GgmlType, GgufWriter, Value};
use bitnet_engine::synth::{build, preset, PRESETS, SLOW_PRESETS};

fn check_arch(path: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["inspect", "--check-arch"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_preset_maps_to_its_architecture() {
    let dir = tempfile::tempdir().unwrap();
    for name in PRESETS.iter().filter(|n| !SLOW_PRESETS.contains(n)) {
        let path = dir.path().join(format!("{name}.gguf"));
        build(&preset(name).unwrap()).unwrap().write(&path).unwrap();
        let (code, text) = check_arch(&path);
        assert_eq!(code, 0, "{name}: {text}");
        let arch = preset(name).unwrap().architecture.as_str();
        assert!(
            text.contains(&format!("maps to `{arch}`")),
            "{name}: {text}"
        );
    }
}

/// The slow presets are checked on a copy with one block: the same keys, names, types and shapes
/// per block, in seconds instead of a gigabyte.
#[test]
fn the_slow_presets_shapes_map() {
    let dir = tempfile::tempdir().unwrap();
    for name in SLOW_PRESETS {
        let mut spec = preset(name).unwrap();
        spec.n_layer = 1;
        spec.n_vocab = spec.n_vocab.min(4096);
        let path = dir.path().join(format!("{name}.gguf"));
        build(&spec).unwrap().write(&path).unwrap();
        let (code, text) = check_arch(&path);
        assert_eq!(code, 0, "{name}: {text}");
    }
}

/// The `tiny` preset (or `b158-tiny`, for `bitnet-b1.58`) with one change.
fn tiny_with(b158: bool, change: impl FnOnce(&mut GgufWriter)) -> GgufWriter {
    let mut w = build(&preset(if b158 { "b158-tiny" } else { "tiny" }).unwrap()).unwrap();
    change(&mut w);
    w
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n).flat_map(|_| 1f32.to_le_bytes()).collect()
}

#[test]
fn each_mis_mapped_file_is_refused_with_its_own_finding() {
    let dir = tempfile::tempdir().unwrap();
    // (case, file, exit code, finding code, subject, words of the message)
    type Case = (
        &'static str,
        GgufWriter,
        i32,
        &'static str,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown architecture",
            tiny_with(false, |w| w.add_kv("general.architecture", "llama")),
            31,
            "architecture-unknown",
            "general.architecture",
            "is `llama`; this engine runs `bitnet`, `bitnet-b1.58`, `bitnet-25`",
        ),
        (
            "no architecture",
            tiny_with(false, |w| {
                w.remove_kv("general.architecture");
            }),
            31,
            "architecture-missing",
            "general.architecture",
            "names no architecture",
        ),
        (
            "keys under another architecture's name",
            tiny_with(false, |w| {
                w.add_kv("general.architecture", "bitnet-b1.58");
            }),
            30,
            "key-foreign",
            "bitnet.block_count",
            "a key of architecture `bitnet` in a `bitnet-b1.58` file",
        ),
        (
            "a required key missing",
            tiny_with(true, |w| {
                w.remove_kv("bitnet-b1.58.attention.layer_norm_rms_epsilon");
            }),
            30,
            "key-missing",
            "bitnet-b1.58.attention.layer_norm_rms_epsilon",
            "missing (a float)",
        ),
        (
            "a key of the wrong type",
            tiny_with(false, |w| w.add_kv("bitnet.block_count", "two")),
            30,
            "key-type",
            "bitnet.block_count",
            "expected a uint32",
        ),
        (
            "head counts that do not divide",
            tiny_with(false, |w| {
                w.add_kv("bitnet.attention.head_count_kv", Value::U32(3))
            }),
            30,
            "key-inconsistent",
            "bitnet.attention.head_count_kv",
            "3 key/value heads do not divide the 4 query heads",
        ),
        (
            "a vocabulary size the tokenizer disagrees with",
            tiny_with(false, |w| w.add_kv("bitnet.vocab_size", Value::U32(600))),
            30,
            "vocab-inconsistent",
            "tokenizer.ggml.tokens",
            "holds 512 tokens, the vocabulary size is 600",
        ),
        (
            "a required tensor missing",
            tiny_with(false, |w| {
                w.remove_tensor("blk.1.ffn_down.weight");
            }),
            30,
            "tensor-missing",
            "blk.1.ffn_down.weight",
            "a required tensor of the architecture",
        ),
        (
            "an untied output matrix",
            tiny_with(false, |w| {
                w.add_tensor(
                    "output.weight",
                    &[256, 512],
                    GgmlType::F32,
                    f32_bytes(256 * 512),
                )
            }),
            30,
            "tensor-unknown",
            "output.weight",
            "the output is tied to `token_embd.weight`",
        ),
        (
            "a fused qkv projection",
            tiny_with(false, |w| {
                w.add_tensor(
                    "blk.0.attn_qkv.weight",
                    &[256, 768],
                    GgmlType::F32,
                    f32_bytes(256 * 768),
                )
            }),
            30,
            "tensor-unknown",
            "blk.0.attn_qkv.weight",
            "q, k and v are separate projections",
        ),
        (
            "a block beyond block_count",
            tiny_with(false, |w| {
                w.add_tensor(
                    "blk.2.attn_norm.weight",
                    &[256],
                    GgmlType::F32,
                    f32_bytes(256),
                )
            }),
            30,
            "tensor-layer",
            "blk.2.attn_norm.weight",
            "belongs to block 2, but the file has 2 blocks",
        ),
        (
            "a projection of the wrong shape",
            tiny_with(false, |w| {
                w.remove_tensor("blk.0.ffn_norm.weight");
                w.add_tensor(
                    "blk.0.ffn_norm.weight",
                    &[512],
                    GgmlType::F32,
                    f32_bytes(512),
                )
            }),
            30,
            "tensor-shape",
            "blk.0.ffn_norm.weight",
            "shape [512], expected [256]",
        ),
        (
            "a type the engine does not read for the role",
            tiny_with(false, |w| {
                w.remove_tensor("token_embd.weight");
                w.add_tensor(
                    "token_embd.weight",
                    &[256, 512],
                    GgmlType::TQ2_0,
                    vec![0; 66 * 512],
                )
            }),
            30,
            "tensor-type",
            "token_embd.weight",
            "type TQ2_0 is not one the engine reads for it (expected one of F32, F16, Q6_K)",
        ),
        (
            "a file type that names another format",
            tiny_with(false, |w| w.add_kv("general.file_type", Value::U32(40))),
            30,
            "file-type",
            "general.file_type",
            "is 40 (I2_S), but no projection is: they are TQ2_0",
        ),
        (
            "a scale tensor of more than one value",
            tiny_with(false, |w| {
                w.add_tensor("blk.0.attn_q.scale", &[2], GgmlType::F32, f32_bytes(2))
            }),
            30,
            "tensor-shape",
            "blk.0.attn_q.scale",
            "shape [2], expected [1]",
        ),
    ];
    assert!(cases.len() >= 10);
    let mut messages = std::collections::BTreeSet::new();
    for (i, (case, w, want_code, finding, subject, words)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.gguf"));
        w.write(&path).unwrap();
        let (code, text) = check_arch(&path);
        assert_eq!(code, want_code, "{case}: {text}");
        let line = format!("[{finding}] `{subject}`: ");
        let hit = text
            .lines()
            .find(|l| l.trim_start().starts_with(&line))
            .unwrap_or_else(|| panic!("{case}: no `{line}` in:\n{text}"));
        assert!(hit.contains(words), "{case}: `{words}` not in `{hit}`");
        // Each case's message is its own.
        assert!(messages.insert(hit.trim().to_string()), "{case}: {hit}");
    }
}

#[test]
fn unreadable_files_are_bad_input_not_a_mapping_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00truncated").unwrap();
    let (code, text) = check_arch(&path);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("bad.gguf"), "{text}");
    let (code, _) = check_arch(&dir.path().join("absent.gguf"));
    assert_eq!(code, 2);
}

#[test]
fn json_lists_the_findings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    tiny_with(false, |w| {
        w.remove_tensor("output_norm.weight");
    })
    .write(&path)
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["inspect", "--check-arch", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(30));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["maps"], false);
    assert_eq!(j["architecture"], "bitnet");
    assert_eq!(j["findings"][0]["code"], "tensor-missing");
    assert_eq!(j["findings"][0]["subject"], "output_norm.weight");
}

/// A "mostly TQ2_0" file with one projection kept in F16, as llama.cpp's quantizer can leave
/// one (both loaders run it): it maps.
#[test]
fn a_file_type_that_names_most_projections_maps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mostly.gguf");
    let spec = preset("tiny").unwrap();
    let (rows, cols) = (spec.n_embd as usize, spec.n_embd as usize);
    let mut w = tiny_with(false, |w| w.add_kv("general.file_type", Value::U32(37)));
    w.remove_tensor("blk.0.attn_q.weight");
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7) % 3) as f32 - 1.0)
        .collect();
    w.add_tensor(
        "blk.0.attn_q.weight",
        &[cols as u64, rows as u64],
        GgmlType::F16,
        bitnet_engine::quant::quantize(GgmlType::F16, &values).unwrap(),
    );
    w.write(&path).unwrap();
    let (code, text) = check_arch(&path);
    assert_eq!(code, 0, "{text}");
}
