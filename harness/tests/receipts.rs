//! Receipts from a real `harness run`, accepted by `harness verify-receipt`; every field tampered
//! with, one at a time, fails with that field's exit code.

use std::path::Path;

use bitnet_harness::receipt::*;
use serde_json::{json, Value};

mod common;
use common::{harness, text};

/// A directory where `harness run` and `harness bless` made a golden and a receipt.
fn real_run() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/small.yaml"),
        "description: small\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3, 4]\ngeneration:\n  steps: 3\n",
    )
    .unwrap();
    assert!(harness(root, &["bless"]).status.success());
    let out = harness(root, &["run"]);
    assert!(out.status.success(), "{}", text(&out));
    dir
}

#[test]
fn every_tampered_field_fails_with_its_code() {
    let dir = real_run();
    let root = dir.path();
    let out = harness(
        root,
        &[
            "verify-receipt",
            "receipts",
            "--against-goldens",
            "--max-age",
            "1h",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let receipt: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("receipts/small.json")).unwrap())
            .unwrap();
    assert_eq!(receipt["compute_path"], "real");
    assert!(receipt["throughput"]["decode_tps"].as_f64().unwrap() > 0.0);
    assert!(
        receipt["throughput"]["reference_decode_tps"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    std::fs::write(root.join("other.txt"), "not the scenario").unwrap();

    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &[&str], u8)> = vec![
        (
            "schema_version",
            |r| r["schema_version"] = json!(2),
            &[],
            EXIT_VERSION,
        ),
        (
            "schema_version missing",
            |r| {
                r.as_object_mut().unwrap().remove("schema_version");
            },
            &[],
            EXIT_MALFORMED,
        ),
        (
            "unknown field",
            |r| r["extra"] = json!(1),
            &[],
            EXIT_MALFORMED,
        ),
        (
            "scenario",
            |r| r["scenario"] = json!("elsewhere"),
            &["--against-goldens"],
            EXIT_SCENARIO_HASH,
        ),
        (
            "scenario as a path to another golden",
            |r| r["scenario"] = json!("../goldens/small"),
            &["--against-goldens"],
            EXIT_SCENARIO_HASH,
        ),
        (
            "scenario without goldens",
            |r| r["scenario"] = json!("tiny"),
            &[],
            EXIT_SCENARIO_HASH,
        ),
        (
            "scenario_file",
            |r| r["scenario_file"] = json!("other.txt"),
            &[],
            EXIT_SCENARIO_HASH,
        ),
        (
            "scenario_blake3",
            |r| r["scenario_blake3"] = json!("0".repeat(64)),
            &[],
            EXIT_SCENARIO_HASH,
        ),
        (
            "model",
            |r| r["model"] = json!("other.txt"),
            &[],
            EXIT_MODEL_HASH,
        ),
        (
            "model_blake3",
            |r| r["model_blake3"] = json!("f".repeat(64)),
            &[],
            EXIT_MODEL_HASH,
        ),
        (
            "engine.version",
            |r| r["engine"]["version"] = json!(""),
            &[],
            EXIT_PROVENANCE,
        ),
        (
            "engine.git_commit",
            |r| r["engine"]["git_commit"] = json!("abc"),
            &[],
            EXIT_PROVENANCE,
        ),
        (
            "engine.git_dirty",
            |r| r["engine"]["git_dirty"] = json!("no"),
            &[],
            EXIT_MALFORMED,
        ),
        (
            "build.profile",
            |r| r["build"]["profile"] = json!("fast"),
            &[],
            EXIT_PROVENANCE,
        ),
        (
            "build.target_arch",
            |r| r["build"]["target_arch"] = json!(""),
            &[],
            EXIT_PROVENANCE,
        ),
        (
            "build.cpu_features",
            |r| r["build"]["cpu_features"] = json!("avx2"),
            &[],
            EXIT_MALFORMED,
        ),
        (
            "backend",
            |r| r["backend"] = json!("tpu"),
            &[],
            EXIT_PROVENANCE,
        ),
        (
            // A CUDA check that passed makes the receipt `backend: cuda`, with its GPU.
            "verdicts.cuda pass on a cpu receipt",
            |r| r["verdicts"]["cuda"] = json!("pass"),
            &[],
            EXIT_PROVENANCE,
        ),
        (
            "backend cuda without GPU kernels",
            |r| r["backend"] = json!("cuda"),
            &[],
            EXIT_GPU_KERNELS,
        ),
        (
            "GPU kernels required",
            |_| {},
            &["--require-gpu-kernels"],
            EXIT_GPU_KERNELS,
        ),
        (
            "kernels empty",
            |r| r["kernels"] = json!([]),
            &[],
            EXIT_KERNELS,
        ),
        (
            "kernels malformed",
            |r| r["kernels"] = json!(["TQ2 fast"]),
            &[],
            EXIT_KERNELS,
        ),
        (
            "kernels of another backend",
            |r| r["kernels"] = json!(["tq2_0_q8k_dot_cuda"]),
            &[],
            EXIT_KERNELS,
        ),
        (
            "compute_path",
            |r| r["compute_path"] = json!("mock"),
            &[],
            EXIT_COMPUTE_PATH,
        ),
        ("threads", |r| r["threads"] = json!(0), &[], EXIT_PROVENANCE),
        (
            "throughput.prefill_tps",
            |r| r["throughput"]["prefill_tps"] = json!(0.0),
            &[],
            EXIT_THROUGHPUT,
        ),
        (
            "throughput.decode_tps",
            |r| r["throughput"]["decode_tps"] = json!(-3.0),
            &[],
            EXIT_THROUGHPUT,
        ),
        (
            "throughput.reference_prefill_tps",
            |r| r["throughput"]["reference_prefill_tps"] = json!(0.0),
            &[],
            EXIT_THROUGHPUT,
        ),
        (
            "throughput.reference_decode_tps",
            |r| r["throughput"]["reference_decode_tps"] = json!(-1.0),
            &[],
            EXIT_THROUGHPUT,
        ),
        (
            "decode floor",
            |_| {},
            &["--min-decode-tps", "1e12"],
            EXIT_THROUGHPUT,
        ),
        (
            "trace_digest",
            |r| r["trace_digest"] = json!("1".repeat(64)),
            &["--against-goldens"],
            EXIT_TRACE_DIGEST,
        ),
        (
            "trace_digest malformed",
            |r| r["trace_digest"] = json!("xyz"),
            &[],
            EXIT_TRACE_DIGEST,
        ),
        (
            "verdicts fail",
            |r| r["verdicts"]["parity"] = json!("fail"),
            &[],
            EXIT_VERDICT,
        ),
        (
            "verdicts unknown",
            |r| r["verdicts"]["engine"] = json!("maybe"),
            &[],
            EXIT_VERDICT,
        ),
        (
            "verdicts of a check the scenario has not",
            |r| r["verdicts"]["bogus"] = json!("pass"),
            &[],
            EXIT_VERDICT,
        ),
        (
            "decode_tps absent though the scenario generates 3 tokens",
            |r| r["throughput"]["decode_tps"] = json!(null),
            &[],
            EXIT_THROUGHPUT,
        ),
        (
            "reference_decode_tps absent beside a reference run",
            |r| r["throughput"]["reference_decode_tps"] = json!(null),
            &[],
            EXIT_THROUGHPUT,
        ),
        (
            "kernels listed twice",
            |r| {
                let k = r["kernels"][0].clone();
                r["kernels"].as_array_mut().unwrap().push(k);
            },
            &[],
            EXIT_KERNELS,
        ),
        (
            "verdicts empty",
            |r| r["verdicts"] = json!({}),
            &[],
            EXIT_VERDICT,
        ),
        (
            "started_at",
            |r| r["started_at"] = json!("yesterday"),
            &[],
            EXIT_TIME,
        ),
        (
            "started_at future",
            |r| r["started_at"] = json!("2999-01-01T00:00:00Z"),
            &[],
            EXIT_TIME,
        ),
        (
            "started_at too old",
            |r| r["started_at"] = json!("2001-01-01T00:00:00Z"),
            &["--max-age", "7d"],
            EXIT_TIME,
        ),
        (
            "duration_seconds",
            |r| r["duration_seconds"] = json!(-1.0),
            &[],
            EXIT_TIME,
        ),
        // Forgeries that used to pass the gate.
        (
            "duration_seconds overflowing the age check",
            |r| r["duration_seconds"] = json!(1e19),
            &[],
            EXIT_TIME,
        ),
        (
            "tokens/s too small to be a run",
            |r| r["throughput"]["decode_tps"] = json!(5e-324),
            &[],
            EXIT_THROUGHPUT,
        ),
        (
            "tokens/s too large to be this machine",
            |r| r["throughput"]["prefill_tps"] = json!(1.8e19),
            &[],
            EXIT_THROUGHPUT,
        ),
        (
            "reference figure nulled",
            |r| r["throughput"]["reference_prefill_tps"] = json!(null),
            &[],
            EXIT_THROUGHPUT,
        ),
        (
            "model path missing",
            |r| r["model"] = json!("no/such/model.gguf"),
            &[],
            EXIT_MODEL_HASH,
        ),
        (
            "model path empty",
            |r| r["model"] = json!(""),
            &[],
            EXIT_MODEL_HASH,
        ),
        (
            "model path a directory",
            |r| r["model"] = json!("scenarios"),
            &[],
            EXIT_MODEL_HASH,
        ),
        (
            "model path a device",
            |r| r["model"] = json!("/dev/null"),
            &[],
            EXIT_MODEL_HASH,
        ),
        (
            "scenario path missing",
            |r| r["scenario_file"] = json!("scenarios/none.yaml"),
            &[],
            EXIT_SCENARIO_HASH,
        ),
        (
            "scenario path a device",
            |r| r["scenario_file"] = json!("/dev/null"),
            &[],
            EXIT_SCENARIO_HASH,
        ),
        (
            "kernels of an instruction set the build does not have",
            |r| {
                let k: Vec<Value> = r["kernels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| {
                        let s = k.as_str().unwrap();
                        let base = s.rsplit_once('_').unwrap().0;
                        json!(format!("{base}_neon"))
                    })
                    .collect();
                r["kernels"] = json!(k);
            },
            &[],
            EXIT_KERNELS,
        ),
        (
            "a made-up kernel added",
            |r| {
                r["kernels"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("q4_q8_dot_scalar"))
            },
            &[],
            EXIT_KERNELS,
        ),
        (
            "a failing check's verdict dropped",
            |r| {
                r["verdicts"].as_object_mut().unwrap().remove("parity");
            },
            &[],
            EXIT_VERDICT,
        ),
        (
            "another engine version",
            |r| r["engine"]["version"] = json!("9.9.9"),
            &[],
            EXIT_PROVENANCE,
        ),
        (
            "a KV cache type the scenario does not run",
            |r| r["kv_cache"] = json!("f16"),
            &[],
            EXIT_PROVENANCE,
        ),
        (
            "threads the scenario does not run",
            |r| r["threads"] = json!(7),
            &[],
            EXIT_PROVENANCE,
        ),
    ];
    for (what, edit, flags, code) in cases {
        let mut r = receipt.clone();
        edit(&mut r);
        let path = root.join("tampered.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
        let mut args = vec!["verify-receipt", "tampered.json"];
        args.extend_from_slice(flags);
        let out = harness(root, &args);
        assert_eq!(
            out.status.code(),
            Some(code as i32),
            "{what}: {}",
            text(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("tampered.json"),
            "{what}: the message names the receipt: {err}"
        );
    }
    // Several receipts: every failure reported, the first one's code returned.
    let out = harness(root, &["verify-receipt", "receipts", "tampered.json"]);
    // The last case written (threads) is a provenance failure.
    assert_eq!(out.status.code(), Some(EXIT_PROVENANCE as i32));
    assert_eq!(
        harness(root, &["verify-receipt", "missing-dir"])
            .status
            .code(),
        Some(2)
    );
}

/// A run forced onto the 256-bit VNNI variant records its own IDs for the ternary products and
/// AVX2's for the rest (the code they run), and the gate accepts that pair but no other mix.
#[test]
fn a_vnni256_run_records_its_kernels_and_passes_the_gate() {
    if !bitnet_engine::kernels::Kernel::Vnni256.is_available() {
        eprintln!("skipped: this CPU has no AVX-512 VL VNNI");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/v.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3, 4, 5]\ngeneration:\n  steps: 2\ngolden: false\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(root)
        .args(["run"])
        .env_remove("CI")
        .env("BITNET_KERNEL", "vnni256")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let path = root.join("receipts/v.json");
    let receipt: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let kernels: Vec<&str> = receipt["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(kernels.contains(&"tq2_0_q8k_dot_vnni256"), "{kernels:?}");
    assert!(
        kernels
            .iter()
            .all(|k| k.ends_with("_vnni256") || k.ends_with("_avx2") || k.ends_with("_scalar")),
        "{kernels:?}"
    );
    let out = harness(root, &["verify-receipt", "receipts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The same kernels with an AVX-512 one among them: no single variant records that.
    let mut mixed = receipt.clone();
    mixed["kernels"]
        .as_array_mut()
        .unwrap()
        .push(json!("f16_f16_dot_avx512"));
    std::fs::write(root.join("mixed.json"), serde_json::to_vec(&mixed).unwrap()).unwrap();
    let out = harness(root, &["verify-receipt", "mixed.json"]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_KERNELS as i32),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("mixes the variants"), "{}", text(&out));
}

#[test]
fn receipts_are_checked_against_their_own_project_from_any_directory() {
    let dir = real_run();
    let root = dir.path();
    let elsewhere = tempfile::tempdir().unwrap();
    let receipts = root.join("receipts");
    let receipts = receipts.to_str().unwrap();
    // From another directory: the scenario, model and goldens are the receipt's project's.
    let out = harness(
        elsewhere.path(),
        &["verify-receipt", receipts, "--against-goldens"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // `--root` elsewhere: the recorded model (checked first) is not there.
    let out = harness(
        elsewhere.path(),
        &[
            "verify-receipt",
            receipts,
            "--root",
            elsewhere.path().to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(EXIT_MODEL_HASH as i32),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&elsewhere.path().display().to_string()),
        "{}",
        text(&out)
    );
    // A goldens directory given explicitly is taken as given (here: one without the golden).
    let out = harness(
        elsewhere.path(),
        &["verify-receipt", receipts, "--against-goldens", "."],
    );
    assert_eq!(
        out.status.code(),
        Some(EXIT_TRACE_DIGEST as i32),
        "{}",
        text(&out)
    );
}

#[test]
fn the_checked_in_receipt_schema_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let on_disk = std::fs::read_to_string(root.join("receipts/schema.json")).unwrap_or_default();
    assert!(
        on_disk == json_schema(),
        "receipts/schema.json is stale: regenerate it with `cargo run -p bitnet-harness --bin harness -- schema --receipt > receipts/schema.json`"
    );
}

/// A receipt that repeats a key is malformed: JSON readers keep the last value, so a forged
/// `"parity": "fail", …, "parity": "pass"` read as a pass.
#[test]
fn a_receipt_repeating_a_key_is_malformed() {
    let dir = real_run();
    let root = dir.path();
    let path = root.join("receipts/small.json");
    let honest = std::fs::read_to_string(&path).unwrap();
    let forged = honest.replacen(
        "\"verdicts\": {",
        "\"verdicts\": {\n    \"parity\": \"fail\",",
        1,
    );
    assert_ne!(forged, honest);
    assert!(forged.contains("\"parity\": \"pass\""));
    std::fs::write(&path, forged).unwrap();
    let out = harness(root, &["verify-receipt", "receipts/small.json"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(EXIT_MALFORMED)),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("the key `parity` appears twice"),
        "{}",
        text(&out)
    );
}

#[test]
fn every_scenario_that_runs_here_needs_its_receipt() {
    // A second scenario that runs here, and one skipped here (its model file absent): with
    // `--every-scenario`, deleting the first's receipt fails the gate (exit 23); the skipped
    // one needs none.
    let dir = real_run();
    let root = dir.path();
    std::fs::write(
        root.join("scenarios/other.yaml"),
        "description: other\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [5, 6]\ngolden: false\n",
    )
    .unwrap();
    std::fs::write(
        root.join("scenarios/absent.yaml"),
        "description: absent\nmodel:\n  path: nowhere.gguf\ninputs:\n  tokens:\n    - [5, 6]\n",
    )
    .unwrap();
    let out = harness(root, &["run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!root.join("receipts/absent.json").exists());
    let gate = |root: &Path| harness(root, &["verify-receipt", "receipts", "--every-scenario"]);
    let out = gate(root);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::remove_file(root.join("receipts/other.json")).unwrap();
    let out = gate(root);
    assert_eq!(
        out.status.code(),
        Some(i32::from(EXIT_MISSING)),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("scenario `other` runs on this machine but has no receipt"),
        "{}",
        text(&out)
    );
    // Without the flag, the receipts present are all that is checked.
    let out = harness(root, &["verify-receipt", "receipts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A goldens directory that is not one is a bad argument, not a digest mismatch (16).
    let out = harness(
        root,
        &[
            "verify-receipt",
            "receipts",
            "--against-goldens",
            "scenarios/small.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is not a directory of goldens"),
        "{}",
        text(&out)
    );
}
