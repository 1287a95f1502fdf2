//! llama.cpp as the reference: it loads our synthetic models, computes what the independent
//! float64 oracle computes (within its int8 activation rounding), and its graph nodes map to every
//! canonical trace point with the right shapes, with and without `.scale` tensors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bitnet_engine::npy::read_npy;
use bitnet_engine::synth::{build, preset, ModelSpec};
use bitnet_engine::trace::{read_trace, PointFilter, TracePoint};
use bitnet_harness::compare::tensor_metrics;
use bitnet_harness::reference::{run_command, run_reference, RefError, RefRequest};

const PROMPT: [u32; 8] = [1, 17, 300, 42, 5, 99, 250, 7];

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_harness"))
}

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let candidates: Vec<PathBuf> = std::env::var_os("BITNET_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join(".venv/bin/python")])
        .collect();
    candidates
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import gguf"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("no Python with the `gguf` package: run `bash ci/setup.sh` or set BITNET_PYTHON")
}

fn model(dir: &Path, name: &str, spec: &ModelSpec) -> PathBuf {
    let path = dir.join(format!("{name}.gguf"));
    build(spec).unwrap().write(&path).unwrap();
    path
}

fn request(model: &Path, out: &Path, generate: usize) -> RefRequest {
    RefRequest {
        model: model.to_owned(),
        tokens: PROMPT.to_vec(),
        generate,
        points: PointFilter::all(),
        threads: 2,
        out: out.to_owned(),
        ubatch: None,
        nudge_embeddings: false,
        kv_cache: Default::default(),
    }
}

#[test]
fn llama_cpp_loads_each_preset_and_agrees_with_the_float64_oracle() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny", "tiny-scales", "gqa", "tq1", "f16"] {
        let spec = preset(name).unwrap();
        let path = model(dir.path(), name, &spec);
        let out = dir.path().join(format!("{name}-ref"));
        run_reference(
            &harness(),
            &request(&path, &out, 3),
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));

        // Every canonical point, at every step, with the documented positions-first shape.
        let recs = read_trace(&out.join("trace.jsonl")).unwrap();
        let n_points = TracePoint::all(spec.n_layer).len();
        assert_eq!(recs.len(), n_points * 3, "{name}: records");
        let (e, hd) = (spec.n_embd as usize, spec.head_dim() as usize);
        for r in &recs {
            let n_pos = if r.step == 0 { 8 } else { 1 };
            let p1 = r.positions[1] as usize;
            let expected = match r.stage.suffix() {
                "q" => vec![n_pos, spec.n_head as usize, hd],
                "k" | "v" => vec![n_pos, spec.n_head_kv() as usize, hd],
                "attn_probs" => vec![n_pos, spec.n_head as usize, p1],
                "ffn_act" | "ffn_sub_norm" => vec![n_pos, spec.n_ff as usize],
                "logits" => vec![n_pos, spec.n_vocab as usize],
                _ => vec![n_pos, e],
            };
            assert_eq!(r.shape, expected, "{name}: {} step {}", r.name, r.step);
            assert_eq!((r.nan, r.inf), (0, 0), "{name}: {}", r.name);
            assert!(r.rms > 0.0, "{name}: {} is all zero", r.name);
        }
        // Softmax rows sum to one and the causal mask holds (weights on later positions are 0).
        let (_, probs) = read_npy(&out.join("blk.0.attn_probs.step0.npy")).unwrap();
        let heads = spec.n_head as usize;
        for t in 0..8 {
            for h in 0..heads {
                let row = &probs[(t * heads + h) * 8..(t * heads + h + 1) * 8];
                assert!(
                    (row.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                    "{name}: row sum"
                );
                assert!(
                    row[t + 1..].iter().all(|&p| p == 0.0),
                    "{name}: causal mask"
                );
            }
        }

        // Logits against the float64 numpy oracle of the same graph.
        let oracle = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/py/bitnet_forward.py"))
            .arg(&path)
            .args(["--tokens", "1,17,300,42,5,99,250,7"])
            .output()
            .unwrap();
        assert!(
            oracle.status.success(),
            "{}",
            String::from_utf8_lossy(&oracle.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&oracle.stdout).unwrap();
        let (shape, logits) = read_npy(&out.join("logits.npy")).unwrap();
        assert_eq!(shape, vec![8, spec.n_vocab as usize]);
        for (i, row) in j["logits"].as_array().unwrap().iter().enumerate() {
            let want: Vec<f32> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let got = &logits[i * want.len()..(i + 1) * want.len()];
            let m = tensor_metrics(&want, got);
            // llama.cpp rounds activations to int8 before every ternary matmul; measured here
            // rel L2 0.027, cosine 0.9996 on tiny. The bands below are 2x looser.
            assert!(
                m.rel_l2 < 0.06 && m.cosine > 0.998,
                "{name} position {i}: {m:?}"
            );
        }
        let gen: Vec<u32> =
            serde_json::from_slice(&std::fs::read(out.join("generated.json")).unwrap()).unwrap();
        assert_eq!(gen.len(), 3, "{name}");
    }
}

#[test]
fn scale_tensors_map_to_the_scaled_outputs() {
    // The same weights with and without `.scale` tensors: if the mapping picked llama.cpp's
    // unnamed matmul before the scale multiply, q/k/v/attn_out/ffn_down would be off by the scale.
    let dir = tempfile::tempdir().unwrap();
    let scaled = preset("tiny-scales").unwrap();
    let folded = ModelSpec {
        scale_tensors: false,
        ..scaled.clone()
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let ma = model(dir.path(), "scaled", &scaled);
    let mb = model(dir.path(), "folded", &folded);
    run_reference(&harness(), &request(&ma, &a, 2), Duration::from_secs(60)).unwrap();
    run_reference(&harness(), &request(&mb, &b, 2), Duration::from_secs(60)).unwrap();
    for point in TracePoint::all(scaled.n_layer) {
        for step in 0..2 {
            let file = format!("{}.step{step}.npy", point.name());
            let (_, x) = read_npy(&a.join(&file)).unwrap();
            let (_, y) = read_npy(&b.join(&file)).unwrap();
            let m = tensor_metrics(&y, &x);
            assert!(m.rel_l2 < 1e-3, "{file}: {m:?}");
        }
    }
}

#[test]
fn a_model_llama_cpp_rejects_fails_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = build(&preset("tiny").unwrap()).unwrap();
    w.add_kv(
        "bitnet.attention.head_count",
        bitnet_engine::gguf::Value::U32(0),
    );
    let path = dir.path().join("bad.gguf");
    w.write(&path).unwrap();
    let err = run_reference(
        &harness(),
        &request(&path, &dir.path().join("o"), 0),
        Duration::from_secs(60),
    )
    .unwrap_err();
    assert!(matches!(err, RefError::Failed { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("the reference failed"), "{text}");
    assert!(
        text.to_lowercase().contains("llama") || text.contains("error"),
        "{text}"
    );
}

#[test]
fn an_abort_inside_llama_cpp_fails_with_its_last_log_lines() {
    // llama.cpp aborts (GGML_ASSERT) on a model with no layers; the child dies, the harness
    // reports the failure with the log lines llama.cpp wrote before it.
    let dir = tempfile::tempdir().unwrap();
    let mut w = build(&preset("tiny").unwrap()).unwrap();
    w.add_kv("bitnet.block_count", bitnet_engine::gguf::Value::U32(0));
    let path = dir.path().join("no-layers.gguf");
    w.write(&path).unwrap();
    let start = std::time::Instant::now();
    let err = run_reference(
        &harness(),
        &request(&path, &dir.path().join("o"), 0),
        Duration::from_secs(60),
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(30));
    let text = err.to_string();
    assert!(matches!(err, RefError::Failed { .. }), "{text}");
    assert!(text.contains("GGML_ASSERT"), "{text}");
    assert!(
        text.contains("llama_model_loader"),
        "the log before the abort is kept: {text}"
    );
}

#[test]
fn a_hanging_reference_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(Path::new("/nonexistent.gguf"), dir.path(), 0);
    let script = dir.path().join("hang.sh");
    std::fs::write(&script, "#!/bin/sh\necho starting\nsleep 30\n").unwrap();
    let start = std::time::Instant::now();
    let err = run_command(
        Path::new("sh"),
        &[script.display().to_string()],
        &req,
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(matches!(err, RefError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("starting"), "{err}");
}
