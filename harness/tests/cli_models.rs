//! `harness gen-model` and `harness inspect` as a user runs them.

use std::process::Command;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

#[test]
fn gen_model_then_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("t.gguf");
    let out = harness()
        .args(["gen-model", "--preset", "tiny", "-o"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 layers"));

    let out = harness().arg("inspect").arg(&model).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("GGUF v3"), "{text}");
    assert!(text.contains("bitnet.block_count"), "{text}");
    assert!(
        text.contains("blk.1.ffn_down.weight") && text.contains("TQ2_0"),
        "{text}"
    );

    let out = harness()
        .args(["inspect", "--json"])
        .arg(&model)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["metadata"]["general.architecture"]["value"], "bitnet");
    let tensors = j["tensors"].as_array().unwrap();
    let t = tensors
        .iter()
        .find(|t| t["name"] == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(t["shape"], serde_json::json!([256, 256]));
    assert_eq!(t["bytes"], 256 * 66);
}

#[test]
fn inspect_on_a_truncated_file_prints_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("t.gguf");
    let ok = harness()
        .args(["gen-model", "--preset", "tiny", "-o"])
        .arg(&model)
        .status();
    assert!(ok.unwrap().success());
    let bytes = std::fs::read(&model).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = harness().arg("inspect").arg(&cut).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("cut.gguf") && err.contains("runs past the end of the file"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn gen_model_spec_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    let gen = |spec: &std::path::Path, out: &std::path::Path| {
        harness()
            .args(["gen-model", "--spec"])
            .arg(spec)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap()
    };
    let x = dir.path().join("x.gguf");
    std::fs::write(&spec, "n_embd: 512\nn_layers: 3\n").unwrap();
    let out = gen(&spec, &x);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.yaml:2:1") && err.contains("unknown field `n_layers`"),
        "{err}"
    );

    std::fs::write(&spec, "n_embd: 300\n").unwrap();
    let err = String::from_utf8_lossy(&gen(&spec, &x).stderr).into_owned();
    assert!(err.contains("`n_embd` is 300"), "{err}");
    assert!(!x.exists());

    // An empty spec (or comments only) is a mistake, not the default model; `{}` asks for that.
    for text in ["", "# nothing yet\n"] {
        std::fs::write(&spec, text).unwrap();
        let out = gen(&spec, &x);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("spec.yaml: the spec is empty"), "{err}");
        assert!(!x.exists());
    }
    std::fs::write(&spec, "{}\n").unwrap();
    assert!(gen(&spec, &x).status.success());
    assert!(x.exists());

    let out = harness()
        .args(["gen-model", "--preset", "huge", "-o", "x.gguf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown preset `huge`; presets: tiny"),
        "{err}"
    );

    std::fs::write(&spec, "n_layer: 1\nn_head_kv: 2\nseed: 9\n").unwrap();
    let model = dir.path().join("ok.gguf");
    let out = gen(&spec, &model);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn trace_on_a_fresh_tiny_model_writes_every_file_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("t.gguf");
    assert!(harness()
        .args(["gen-model", "--preset", "tiny", "-o"])
        .arg(&model)
        .status()
        .unwrap()
        .success());
    let out_dir = dir.path().join("trace");
    let out = harness()
        .arg("trace")
        .arg(&model)
        .args([
            "--prompt",
            "The harness runs",
            "--generate",
            "3",
            "--points",
            "blk.*.attn_out",
            "--points",
            "logits",
            "-o",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("prompt tokens: [") && text.contains("generated: ["),
        "{text}"
    );
    assert!(text.contains("last-position logits: argmax"), "{text}");
    let records = bitnet_engine::trace::read_trace(&out_dir.join("trace.jsonl")).unwrap();
    // 2 layers' attn_out + logits, for the prefill and 2 decode steps.
    assert_eq!(records.len(), 3 * 3);
    assert!(records
        .iter()
        .all(|r| r.name == "logits" || r.name.ends_with(".attn_out")));
    for r in &records {
        assert!(out_dir.join(r.file.as_ref().unwrap()).exists());
    }
    let (shape, _) = bitnet_engine::npy::read_npy(&out_dir.join("logits.npy")).unwrap();
    assert_eq!(shape[1], 512);
    let gen: Vec<u32> =
        serde_json::from_slice(&std::fs::read(out_dir.join("generated.json")).unwrap()).unwrap();
    assert_eq!(gen.len(), 3);
    // A point glob that matches nothing is a usage error.
    let bad = harness()
        .arg("trace")
        .arg(&model)
        .args(["--tokens", "1,2", "--points", "blk.*.atn_out", "-o"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("match no trace point"));
}
