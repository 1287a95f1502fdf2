//! The CUDA backend in the harness, on a machine without a GPU (CI's): the `cuda` trials are
//! ignored with the detection's reason; `harness preflight` reports what is missing;
//! `harness bench --backend cuda` exits 2 saying why. The `cuda` check itself runs here on the
//! kernels' host copies (`BITNET_CUDA_EMULATE=1`): it passes, bit-identical to the CPU run, and
//! its receipt names the host emulation, which `verify-receipt` refuses as GPU evidence; the same
//! receipt with a GPU recorded passes `--require-gpu-kernels`, and each inconsistency fails with
//! its code. Nothing here ran on a GPU.

use std::path::Path;
use std::process::{Command, Output};

use bitnet_harness::receipt::*;
use serde_json::{json, Value};

mod common;
use common::text;

fn harness(dir: &Path, args: &[&str], emulate: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.current_dir(dir).args(args).env_remove("CI");
    if emulate {
        c.env("BITNET_CUDA_EMULATE", "1");
    } else {
        c.env_remove("BITNET_CUDA_EMULATE");
    }
    c.output().unwrap()
}

/// Whether this machine has what a `cuda` trial needs (then the no-GPU assertions do not apply).
fn gpu_here() -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    bitnet_engine::cuda::probe(0, Some(&bitnet_harness::run::cuda::ptx_cache(root))).is_ok()
}

const SCENARIO: &str = "description: small, on cpu and cuda\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3, 4, 5]\ngeneration:\n  steps: 3\nreference: none\nbackends: [cpu, cuda]\n";

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
    std::fs::write(dir.path().join("scenarios/small.yaml"), SCENARIO).unwrap();
    dir
}

#[test]
fn without_a_gpu_cuda_trials_are_ignored_with_the_reason() {
    if gpu_here() {
        eprintln!("a GPU is here: nothing to check about its absence");
        return;
    }
    let dir = workspace();
    let root = dir.path();
    let s = bitnet_harness::scenario::load_scenario(&root.join("scenarios/small.yaml")).unwrap();
    let reason = bitnet_engine::cuda::probe(0, None).unwrap_err().to_string();
    let trials = bitnet_harness::run::trials(std::slice::from_ref(&s));
    let cuda = trials
        .iter()
        .find(|t| t.name() == "scenarios::small::cuda")
        .expect("a cuda trial");
    if std::env::var_os("BITNET_CUDA_EMULATE").is_none() {
        assert_eq!(cuda.ignored.as_deref(), Some(reason.as_str()));
    }
    // `harness list` shows it; `harness run` reports it ignored and still passes.
    let out = harness(root, &["list"], false);
    assert!(
        text(&out).contains(&format!("scenarios::small::cuda: test (ignored: {reason})")),
        "{}",
        text(&out)
    );
    let out = harness(root, &["bless"], false);
    assert!(out.status.success(), "{}", text(&out));
    let out = harness(root, &["run"], false);
    assert!(out.status.success(), "{}", text(&out));
    let receipt: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("receipts/small.json")).unwrap())
            .unwrap();
    assert_eq!(receipt["backend"], "cpu");
    assert_eq!(receipt["verdicts"]["cuda"], "ignored");
    assert!(receipt.get("gpu").is_none());
    // A CPU-only receipt passes the plain gate and is refused when GPU kernels are required.
    let out = harness(
        root,
        &["verify-receipt", "receipts", "--against-goldens"],
        false,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = harness(
        root,
        &["verify-receipt", "receipts", "--require-gpu-kernels"],
        false,
    );
    assert_eq!(
        out.status.code(),
        Some(EXIT_GPU_KERNELS as i32),
        "{}",
        text(&out)
    );
    // The bench and preflight say what is missing.
    let out = harness(
        root,
        &["bench", "--backend", "cuda", "--preset", "tiny"],
        false,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("`--backend cuda` needs a GPU: {reason}")),
        "{}",
        text(&out)
    );
    let out = harness(root, &["preflight", "--json"], false);
    assert!(out.status.success(), "{}", text(&out));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["cuda_trials_ignored"], json!(reason));
    assert!(p["kernel_variants"]
        .as_array()
        .unwrap()
        .contains(&json!("scalar")));
    assert!(p["llama_cpp_build_flags"]["llama-cpp-sys-2"].is_string());
    let out = harness(root, &["preflight"], false);
    assert!(text(&out).contains("cuda trials"), "{}", text(&out));
}

#[test]
fn emulated_cuda_check_and_the_receipt_gate() {
    let dir = workspace();
    let root = dir.path();
    let out = harness(root, &["bless"], true);
    assert!(out.status.success(), "{}", text(&out));
    let out = harness(root, &["run"], true);
    assert!(out.status.success(), "{}", text(&out));
    let report = std::fs::read_to_string(root.join("target/harness/report.json")).unwrap();
    assert!(report.contains("HOST EMULATION"), "{report}");
    assert!(report.contains("bit-identical"), "{report}");
    let path = root.join("receipts/small.json");
    let receipt: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(receipt["backend"], "cuda");
    assert_eq!(receipt["verdicts"]["cuda"], "pass");
    assert_eq!(receipt["gpu"]["device"], HOST_EMULATION_DEVICE);
    let kernels: Vec<String> = serde_json::from_value(receipt["kernels"].clone()).unwrap();
    assert!(
        kernels.iter().any(|k| k == "tq2_0_q8k_dot_cuda"),
        "{kernels:?}"
    );
    let known = bitnet_engine::kernels::known_kernel_ids();
    assert!(kernels.iter().all(|k| known.contains(k)), "{kernels:?}");
    // The host emulation is not GPU evidence.
    let out = harness(root, &["verify-receipt", "receipts"], false);
    assert_eq!(
        out.status.code(),
        Some(EXIT_GPU_KERNELS as i32),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("host emulation"), "{}", text(&out));

    // The same receipt as a GPU would write it passes, with GPU kernels required too.
    let write = |r: &Value| std::fs::write(&path, serde_json::to_vec_pretty(r).unwrap()).unwrap();
    let mut gpu = receipt.clone();
    gpu["gpu"]["device"] = json!("NVIDIA H200");
    gpu["gpu"]["driver_version"] = json!("12.8");
    write(&gpu);
    let out = harness(
        root,
        &[
            "verify-receipt",
            "receipts",
            "--against-goldens",
            "--require-gpu-kernels",
        ],
        false,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, u8)> = vec![
        (
            "an unknown _cuda kernel",
            |r| {
                r["kernels"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("magic_f32_cuda"))
            },
            EXIT_KERNELS,
        ),
        (
            "no gpu section",
            |r| {
                r.as_object_mut().unwrap().remove("gpu");
            },
            EXIT_PROVENANCE,
        ),
        (
            "no _cuda kernel",
            |r| {
                let k: Vec<Value> = r["kernels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|k| !k.as_str().unwrap().ends_with("_cuda"))
                    .cloned()
                    .collect();
                r["kernels"] = json!(k);
            },
            EXIT_GPU_KERNELS,
        ),
        (
            "cuda check not passed",
            |r| r["verdicts"]["cuda"] = json!("ignored"),
            EXIT_PROVENANCE,
        ),
        (
            "gpu section on a cpu receipt",
            |r| {
                r["backend"] = json!("cpu");
                let k: Vec<Value> = r["kernels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|k| !k.as_str().unwrap().ends_with("_cuda"))
                    .cloned()
                    .collect();
                r["kernels"] = json!(k);
            },
            EXIT_PROVENANCE,
        ),
        (
            "_cuda kernels on a cpu receipt",
            |r| {
                r["backend"] = json!("cpu");
                r.as_object_mut().unwrap().remove("gpu");
            },
            EXIT_KERNELS,
        ),
    ];
    for (what, edit, code) in cases {
        let mut r = gpu.clone();
        edit(&mut r);
        write(&r);
        let out = harness(root, &["verify-receipt", "receipts"], false);
        assert_eq!(
            out.status.code(),
            Some(code as i32),
            "{what}: {}",
            text(&out)
        );
    }
    // A scenario without `cuda` in its backends cannot have a cuda receipt.
    write(&gpu);
    let scenario = root.join("scenarios/small.yaml");
    std::fs::write(&scenario, SCENARIO.replace("backends: [cpu, cuda]\n", "")).unwrap();
    let mut r = gpu.clone();
    r["scenario_blake3"] = json!(blake3_file(&scenario).unwrap());
    write(&r);
    let out = harness(root, &["verify-receipt", "receipts"], false);
    assert_eq!(
        out.status.code(),
        Some(EXIT_PROVENANCE as i32),
        "{}",
        text(&out)
    );
}
