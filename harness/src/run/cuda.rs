//! The `cuda` check (scenarios with `backends: [cpu, cuda]`): the engine on the CUDA backend
//! (`bitnet_engine::cuda`) against the CPU engine's own run of the same inputs, at every traced
//! point, step and position, within the scenario's tolerances, the greedy tokens equal; and the
//! integer parts of layer 0's products (Q8_K / I8_S activations, ternary lanes, I2_S dots)
//! equal the CPU specification's exactly. A scenario whose cuda check passed gets a receipt with
//! `backend: cuda`, the `_cuda` kernel IDs and the device.
//!
//! Without a GPU (no driver, no device, no NVRTC and no cached PTX) the trial is ignored with the
//! detection's reason, and fails when forced with `--ignored`. `BITNET_CUDA_EMULATE=1` runs the
//! same check on the kernels' host copies instead (`Target::HostEmulation`), to test this check
//! itself on a machine without a GPU: its verdict says so, and its receipts name the device
//! `host emulation`, which `verify-receipt` refuses as GPU evidence.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bitnet_engine::cuda::{self, CudaSession, DeviceInfo, Target};
use bitnet_engine::forward::{RunOptions, Session, Tracer};
use bitnet_engine::trace::{read_trace, PointFilter};

use super::{Context, Runs, Verdict};
use crate::compare::{compare_trace_dirs, CompareSpec};
use crate::scenario::LoadedScenario;

/// Where compiled PTX is cached: `<root>/target/harness/ptx`.
pub fn ptx_cache(root: &Path) -> PathBuf {
    root.join("target/harness/ptx")
}

/// The workspace a scenario belongs to (where `target/harness/ptx` is): the nearest directory
/// above its file with a `Cargo.toml`, else the directory above the scenario's.
pub fn root_of(s: &LoadedScenario) -> PathBuf {
    let dir = s.path.parent().unwrap_or(Path::new("."));
    dir.ancestors()
        .find(|d| d.join("Cargo.toml").is_file())
        .or_else(|| dir.parent())
        .unwrap_or(dir)
        .to_path_buf()
}

/// Whether `BITNET_CUDA_EMULATE=1` asks for the host emulation (tests of this check only).
fn emulate() -> bool {
    std::env::var("BITNET_CUDA_EMULATE").is_ok_and(|v| v == "1")
}

/// The target the check runs on, or why it cannot run here (probed once per process).
pub fn target(root: &Path) -> Result<Target, String> {
    if emulate() {
        return Ok(Target::HostEmulation);
    }
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let cache = ptx_cache(root);
    PROBE
        .get_or_init(|| {
            cuda::probe(0, Some(&cache))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()?;
    Ok(Target::Gpu {
        ordinal: 0,
        ptx_cache: Some(cache),
    })
}

/// Why the `cuda` trials are ignored here (`None` when they can run).
pub fn ignore_reason(root: &Path) -> Option<String> {
    target(root).err()
}

/// What a passing cuda check leaves for the scenario's receipt.
#[derive(Debug, Clone)]
pub struct CudaRun {
    pub device: DeviceInfo,
    pub kernels: Vec<String>,
    pub prefill_tps: f64,
    pub decode_tps: Option<f64>,
}

/// Passing cuda runs by (run directory, scenario stem).
fn passed() -> &'static Mutex<HashMap<(PathBuf, String), CudaRun>> {
    static P: OnceLock<Mutex<HashMap<(PathBuf, String), CudaRun>>> = OnceLock::new();
    P.get_or_init(Default::default)
}

/// The cuda run of a scenario whose cuda check passed in this context, if any.
pub fn passed_run(ctx: &Context, stem: &str) -> Option<CudaRun> {
    passed()
        .lock()
        .ok()?
        .get(&(ctx.runs.clone(), stem.to_string()))
        .cloned()
}

/// Mark a receipt as the CUDA backend's when the scenario's cuda check passed: `backend: cuda`,
/// the `_cuda` kernel IDs beside the CPU run's, and the device.
pub fn annotate_receipt(ctx: &Context, stem: &str, r: &mut crate::receipt::Receipt) {
    let Some(run) = passed_run(ctx, stem) else {
        return;
    };
    r.backend = "cuda".into();
    r.kernels.extend(run.kernels.iter().cloned());
    r.kernels.sort();
    r.kernels.dedup();
    r.gpu = Some(crate::receipt::GpuInfo {
        device: run.device.name.clone(),
        driver_version: run.device.driver_version.clone(),
        compute_capability: run.device.compute_capability.clone(),
        nvrtc_version: run.device.nvrtc_version.clone(),
        prefill_tps: run.prefill_tps,
        decode_tps: run.decode_tps,
    });
}

/// The check itself.
pub fn check_cuda(ctx: &Context, s: &LoadedScenario, runs: &Runs) -> Verdict {
    let target = match target(&ctx.root) {
        Ok(t) => t,
        Err(why) => return Verdict::ignored(why),
    };
    let sc = &s.scenario;
    let model = &*runs.loaded;
    let filter = match PointFilter::new(&sc.trace.points) {
        Ok(f) => f,
        Err(e) => return Verdict::fail(e),
    };
    let tol = &sc.tolerances;
    let tolerance = |name: &str| {
        let mut t = tol.for_point(name);
        t.exact = Some(false);
        t
    };
    let spec = CompareSpec {
        tolerance: &tolerance,
        logits: tol.logits,
        generated_equal: true,
    };
    let mut notes = Vec::new();
    let mut kernels = Vec::new();
    let mut device = None;
    let (mut prefill, mut prefill_s, mut decode, mut decode_s) = (0usize, 0f64, 0usize, 0f64);
    for (i, input) in runs.inputs.iter().enumerate() {
        let dir = ctx.runs.join(&s.stem).join(i.to_string()).join("cuda");
        let _ = std::fs::remove_dir_all(&dir);
        let mut tracer = match Tracer::new(filter.clone(), &dir, true) {
            Ok(t) => t,
            Err(e) => return Verdict::fail(format!("`{}`: {e}", dir.display())),
        };
        let opts = RunOptions {
            generate: sc.generation.steps,
            chunk: None,
            threads: sc.threads,
            kernel: runs.kernel,
            nudge_embeddings: false,
            unpack_tq1: None,
            plan: None,
            kv_type: sc.kv_cache,
        };
        let out = match cuda::run_with(model, &input.tokens, &opts, &target, Some(&mut tracer)) {
            Ok(o) => o,
            Err(e) => return Verdict::fail(format!("input {i}: the CUDA backend failed: {e}")),
        };
        if let Err(e) = tracer.finish() {
            return Verdict::fail(format!("input {i}: {e}"));
        }
        let written = bitnet_engine::npy::write_npy(
            &dir.join("logits.npy"),
            &[input.tokens.len(), model.config.n_vocab],
            &out.logits,
        )
        .and_then(|_| {
            bitnet_engine::npy::write_atomic(
                &dir.join("generated.json"),
                &serde_json::to_vec(&out.generated).expect("ids"),
            )
        });
        if let Err(e) = written {
            return Verdict::fail(format!("input {i}: {e}"));
        }
        let c = match compare_trace_dirs(&dir, &input.engine_dir, &spec) {
            Ok(c) => c,
            Err(e) => return Verdict::fail(format!("input {i}: {e}")),
        };
        if c.first_divergence.is_some()
            || !c.logit_violations.is_empty()
            || !c.unmatched.is_empty()
            || c.generated_mismatch.is_some()
        {
            let mut v = Verdict::fail(format!(
                "input {i}: the CUDA backend against the CPU engine: {}",
                c.failure_summary()
            ));
            v.divergence = c.first_divergence.as_ref().map(|d| format!("cuda: {d}"));
            v.worst = c.worst_headroom().cloned();
            v.per_layer = c.per_layer.clone();
            return v;
        }
        let records = match read_trace(&dir.join("trace.jsonl")) {
            Ok(r) => r,
            Err(e) => return Verdict::fail(format!("input {i}: {e}")),
        };
        let identical = records
            .iter()
            .zip(&input.records)
            .filter(|(a, b)| (&a.name, a.step, &a.blake3) == (&b.name, b.step, &b.blake3))
            .count();
        // The integer parts of layer 0's products, exactly, on the CPU engine's layer-0 input.
        let ints = match CudaSession::new(model, &target) {
            Ok(session) => {
                device.get_or_insert_with(|| session.device().clone());
                let cpu = Session::new(model, 1, runs.kernel);
                let n = input.tokens.len();
                let h = cpu.norm(&cpu.embed(&input.tokens), &model.layers[0].attn_norm);
                session.check_integer_parts(0, &h, n)
            }
            Err(e) => Err(e.to_string()),
        };
        let ints = match ints {
            Ok(note) => note,
            Err(e) => return Verdict::fail(format!("input {i}: integer parts: {e}")),
        };
        kernels.extend(out.kernels);
        prefill += input.tokens.len();
        prefill_s += out.prefill_seconds;
        decode += out.decode_calls;
        decode_s += out.decode_seconds;
        notes.push(format!(
            "input {i}: {} records within tolerance of the CPU engine's, {identical} of {} bit-identical; tokens equal; integer parts equal ({ints})",
            records.len(),
            input.records.len()
        ));
    }
    kernels.sort();
    kernels.dedup();
    let device = device.unwrap_or_else(|| DeviceInfo {
        name: "unknown".into(),
        ordinal: 0,
        compute_capability: "unknown".into(),
        total_memory_bytes: 0,
        driver_version: "unknown".into(),
        nvrtc_version: None,
        peak_bandwidth_gbs: 0.0,
    });
    let per = |n: usize, secs: f64| (n > 0 && secs > 0.0).then(|| n as f64 / secs);
    let head = if target == Target::HostEmulation {
        "HOST EMULATION (BITNET_CUDA_EMULATE=1: the CUDA kernels' host copies, not a GPU)"
            .to_string()
    } else {
        format!(
            "{} (compute {}, driver {})",
            device.name, device.compute_capability, device.driver_version
        )
    };
    if let Ok(mut p) = passed().lock() {
        p.insert(
            (ctx.runs.clone(), s.stem.clone()),
            CudaRun {
                device,
                kernels,
                prefill_tps: per(prefill, prefill_s).unwrap_or(f64::NAN),
                decode_tps: per(decode, decode_s),
            },
        );
    }
    Verdict::pass(format!("{head}: {}", notes.join("; ")))
}
