//! The engine against llama.cpp on every synthetic preset: every trace point of the prefill and
//! of three decode steps, the logits and the greedy tokens; and a planted divergence (an external
//! reference that perturbs one layer) named at its step, position, layer and stage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::Model;
use bitnet_engine::synth::{build, preset};
use bitnet_engine::trace::{PointFilter, Stage};
use bitnet_harness::compare::{compare_trace_dirs, CompareSpec, LogitTolerance, Tolerance};
use bitnet_harness::reference::{run_command, run_reference, RefRequest};

mod common;

const PROMPT: [u32; 8] = [1, 17, 300, 42, 5, 99, 250, 7];

fn engine_trace(model: &Path, out: &Path, generate: usize, threads: usize) -> Vec<String> {
    let m = Model::load(model).unwrap();
    common::engine_trace_dir(&m, &PROMPT, generate, threads, Kernel::Scalar, out).kernels
}

/// Bit-exact: the engine reproduces llama.cpp's CPU build op for op (`ops_ggml.rs` checks each op
/// against ggml), so every value of every point equals the reference's.
fn exact(_name: &str) -> Tolerance {
    Tolerance {
        exact: Some(true),
        ..Tolerance::default()
    }
}

/// Loose bounds (the old flip-tolerant defaults), for a planted perturbation that must still be
/// found by the metrics.
fn tight(_name: &str) -> Tolerance {
    Tolerance {
        cosine_min: Some(0.99999),
        rel_l2_max: Some(1e-5),
        max_abs: None,
        nmse_max: Some(1e-10),
        exact: None,
    }
}

fn spec(tol: &dyn Fn(&str) -> Tolerance) -> CompareSpec<'_> {
    CompareSpec {
        tolerance: tol,
        logits: LogitTolerance {
            kl_max: Some(1e-6),
            top1_agreement_min: Some(1.0),
            ..Default::default()
        },
        generated_equal: true,
    }
}

#[test]
fn engine_matches_llama_cpp_on_every_preset() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny", "tiny-scales", "gqa", "tq1", "f16"] {
        let model = dir.path().join(format!("{name}.gguf"));
        build(&preset(name).unwrap())
            .unwrap()
            .write(&model)
            .unwrap();
        let (e, r) = (
            dir.path().join(format!("{name}-e")),
            dir.path().join(format!("{name}-r")),
        );
        let kernels = engine_trace(&model, &e, 4, 2);
        assert!(
            kernels.iter().any(|k| k.ends_with("_q8k_dot_scalar")),
            "{kernels:?}"
        );
        let req = RefRequest {
            model: model.clone(),
            tokens: PROMPT.to_vec(),
            generate: 4,
            points: PointFilter::all(),
            threads: 2,
            out: r.clone(),
            ubatch: None,
            nudge_embeddings: false,
            kv_cache: Default::default(),
        };
        run_reference(
            Path::new(env!("CARGO_BIN_EXE_harness")),
            &req,
            Duration::from_secs(120),
        )
        .unwrap();
        let c = compare_trace_dirs(&e, &r, &spec(&exact)).unwrap();
        assert!(c.passed(), "{name}: {}", c.failure_summary());
        assert_eq!(c.engine_generated.len(), 4);
        assert!(c.points.iter().all(|p| p.exact && p.diff.is_none()));
        assert!(c.points.iter().all(|p| p.metrics.max_abs == 0.0), "{name}");
        eprintln!("{name}: {} points × positions bit-exact", c.points.len());
    }
}

/// llama.cpp's trace of `model` (PROMPT, `generate` tokens, `threads`) written to `out` by an
/// external reference: `harness ref-trace`, then the Python body `py` run on the trace directory
/// (`sys.argv[1]`) to perturb it, as a buggy reference or one engine layer would.
fn perturbed_reference(
    dir: &Path,
    model: &Path,
    py: &str,
    generate: usize,
    threads: usize,
    out: &Path,
) {
    std::fs::write(dir.join("perturb.py"), py).unwrap();
    let harness = env!("CARGO_BIN_EXE_harness");
    let python = std::env::var("BITNET_PYTHON")
        .unwrap_or_else(|_| format!("{}/../.venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let script = dir.join("perturbing-reference.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\n\"{harness}\" ref-trace \"$@\"\nfor a in \"$@\"; do last=\"$a\"; done\n\"{python}\" \"{}\" \"$last\"\n",
            dir.join("perturb.py").display()
        ),
    )
    .unwrap();
    let req = RefRequest {
        model: model.to_owned(),
        tokens: PROMPT.to_vec(),
        generate,
        points: PointFilter::all(),
        threads,
        out: out.to_owned(),
        ubatch: None,
        nudge_embeddings: false,
        kv_cache: Default::default(),
    };
    // `-o DIR` is the last argument of a request; the script perturbs that directory.
    assert_eq!(req.args()[req.args().len() - 2], "-o");
    run_command(
        Path::new("sh"),
        &[script.display().to_string()],
        &req,
        Duration::from_secs(60),
    )
    .unwrap();
}

#[test]
fn a_planted_divergence_is_named_at_its_layer_and_stage() {
    // An external reference: llama.cpp's trace, then blk.1.ffn_down of the prefill perturbed at
    // position 3 (what a buggy kernel in one layer would look like).
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    build(&preset("tiny").unwrap())
        .unwrap()
        .write(&model)
        .unwrap();
    let py = r#"
import sys, numpy as np
out = sys.argv[1]
f = out + "/blk.1.ffn_down.step0.npy"
a = np.load(f); a[3, 5] += 0.05; np.save(f, a)
"#;
    let (e, r) = (dir.path().join("e"), dir.path().join("r"));
    engine_trace(&model, &e, 2, 1);
    perturbed_reference(dir.path(), &model, py, 2, 1, &r);
    let c = compare_trace_dirs(&e, &r, &spec(&tight)).unwrap();
    let d = c.first_divergence.expect("the perturbation is found");
    assert_eq!(
        (d.step, d.position, d.layer, d.stage),
        (0, 3, Some(1), Stage::FfnDown),
        "{d}"
    );
    assert!(d.before.iter().all(|p| p.violations.is_empty()));
    // Stage replay attributes it to that stage and no other downstream: the perturbation was
    // written into the reference's record after llama.cpp ran, so its `out` (computed from the
    // unperturbed value) no longer equals `ffn_inp + ffn_down` either; every later stage, fed the
    // reference's own inputs, reproduces the reference's outputs.
    let m = Model::load(&model).unwrap();
    let r = bitnet_harness::replay::replay(&m, &PROMPT, &r, 1, Kernel::Scalar, &exact).unwrap();
    let failed: Vec<(u32, Option<u32>, Stage)> = r
        .stages
        .iter()
        .filter(|s| !s.violations.is_empty())
        .map(|s| (s.step, s.layer, s.stage))
        .collect();
    assert_eq!(
        failed,
        vec![(0, Some(1), Stage::FfnDown), (0, Some(1), Stage::Out)],
        "{:?}",
        r.first_failure()
    );
    assert!(r.stages.len() > 50);
    assert_eq!(
        c.per_layer
            .iter()
            .find(|r| r.layer == Some(1))
            .unwrap()
            .violations,
        1
    );
}

#[test]
fn exact_mode_names_a_one_ulp_difference_that_tolerances_admit() {
    // The reference's blk.0.attn_norm at position 2, element 7, moved by one ulp: within any
    // tolerance, but not equal. Exact comparison names the element, both values and the distance.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    build(&preset("tiny").unwrap())
        .unwrap()
        .write(&model)
        .unwrap();
    let py = r#"
import sys, numpy as np
f = sys.argv[1] + "/blk.0.attn_norm.step0.npy"
a = np.load(f); a[2, 7] = np.nextafter(a[2, 7], np.float32(np.inf)); np.save(f, a)
"#;
    let (e, r) = (dir.path().join("e"), dir.path().join("r"));
    engine_trace(&model, &e, 1, 2);
    perturbed_reference(dir.path(), &model, py, 1, 2, &r);
    assert!(compare_trace_dirs(&e, &r, &spec(&tight)).unwrap().passed());
    let c = compare_trace_dirs(&e, &r, &spec(&exact)).unwrap();
    let d = c.first_divergence.expect("one ulp is found");
    assert_eq!(
        (d.step, d.position, d.layer, d.stage),
        (0, 2, Some(0), Stage::AttnNorm),
        "{d}"
    );
    let p = c
        .points
        .iter()
        .find(|p| p.name == "blk.0.attn_norm" && p.position == 2)
        .unwrap();
    let diff = p.diff.as_ref().unwrap();
    assert_eq!(
        (diff.index, diff.coords.clone(), diff.ulps, diff.count),
        (7, vec![7], 1, 1)
    );
    let up = if diff.engine > 0.0 {
        diff.engine.to_bits() + 1
    } else {
        diff.engine.to_bits() - 1
    };
    assert_eq!(diff.reference.to_bits(), up);
    assert!(
        d.violations[0].contains("first at [7]") && d.violations[0].contains("(1 ulp)"),
        "{d}"
    );
}

#[test]
fn engine_traces_are_bit_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("gqa.gguf");
    build(&preset("gqa").unwrap())
        .unwrap()
        .write(&model)
        .unwrap();
    let hashes = |threads: usize, tag: &str| -> Vec<(String, u32, String)> {
        let out: PathBuf = dir.path().join(tag);
        engine_trace(&model, &out, 3, threads);
        bitnet_engine::trace::read_trace(&out.join("trace.jsonl"))
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.step, r.blake3))
            .collect()
    };
    let a = hashes(1, "t1");
    assert_eq!(a, hashes(1, "t1b"), "two runs differ");
    assert_eq!(a, hashes(2, "t2"), "1 and 2 threads differ");
    assert_eq!(a, hashes(3, "t3"), "1 and 3 threads differ");
}
