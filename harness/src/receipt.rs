//! Receipts: JSON proof of a real run, one per scenario (`receipts/<scenario>.json`, schema in
//! `receipts/schema.json`), and the checks of `harness verify-receipt`, the CI gate. Last step of
//! the data flow (DESIGN.md, "Receipts").
//!
//! Exit codes of `harness verify-receipt` (the first failing receipt's class when several fail):
//!
//! | code | constant | failure |
//! |---|---|---|
//! | 0 | `EXIT_OK` | every receipt holds |
//! | 2 | (usage) | bad arguments, no receipt found |
//! | 10 | `EXIT_MALFORMED` | not JSON, a field missing, unknown or of the wrong type |
//! | 11 | `EXIT_VERSION` | `schema_version` is not 1 |
//! | 12 | `EXIT_COMPUTE_PATH` | `compute_path` is not `real` |
//! | 13 | `EXIT_KERNELS` | kernels empty, malformed, not of the backend, unknown to this engine, of an ISA the build lacks, mixed variants, or lacking the scenario's `receipt.kernels` |
//! | 14 | `EXIT_GPU_KERNELS` | GPU kernels required (backend `cuda` or `--require-gpu-kernels`) and absent, or recorded on the host emulation |
//! | 15 | `EXIT_MODEL_HASH` | the model is not a file (or is empty, or a `/proc` or `/sys` pseudo-file), or `model_blake3` differs from its hash |
//! | 16 | `EXIT_TRACE_DIGEST` | `trace_digest` differs from the golden's (`--against-goldens`) or is malformed |
//! | 17 | `EXIT_THROUGHPUT` | a tokens/s figure outside [`MIN_TPS`, `MAX_TPS`], under `--min-decode-tps` or the scenario's `receipt.min_decode_tps`, or a reference figure null although parity ran |
//! | 18 | `EXIT_TIME` | `started_at` unparsable, in the future, or older than `--max-age`; a duration over a week |
//! | 19 | `EXIT_VERDICT` | a check failed, a verdict is not `pass`/`fail`/`ignored`, a check other than `cuda` is `ignored`, or a check the scenario implies is missing |
//! | 20 | `EXIT_SCENARIO_HASH` | the scenario is not a file or does not load, or `scenario_blake3` differs from its hash |
//! | 21 | `EXIT_PROVENANCE` | engine version not this one, a commit not in this checkout, build, backend or threads inconsistent (`cuda` without a `gpu` section, a passing `cuda` verdict or the scenario's `cuda` backend) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const EXIT_OK: u8 = 0;
pub const EXIT_MALFORMED: u8 = 10;
pub const EXIT_VERSION: u8 = 11;
pub const EXIT_COMPUTE_PATH: u8 = 12;
pub const EXIT_KERNELS: u8 = 13;
pub const EXIT_GPU_KERNELS: u8 = 14;
pub const EXIT_MODEL_HASH: u8 = 15;
pub const EXIT_TRACE_DIGEST: u8 = 16;
pub const EXIT_THROUGHPUT: u8 = 17;
pub const EXIT_TIME: u8 = 18;
pub const EXIT_VERDICT: u8 = 19;
pub const EXIT_SCENARIO_HASH: u8 = 20;
pub const EXIT_PROVENANCE: u8 = 21;
/// `--reproduce`: the scenario's engine run here gives another trace digest, or a throughput
/// outside the stated factor of the recorded one, or cannot run.
pub const EXIT_REPRODUCE: u8 = 22;

/// The receipt of one scenario's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Always 1.
    pub schema_version: u32,
    pub scenario: String,
    /// The scenario file, relative to the directory `harness run` ran in.
    pub scenario_file: String,
    pub scenario_blake3: String,
    /// The model file (generated or the user's).
    pub model: String,
    pub model_blake3: String,
    pub engine: EngineInfo,
    pub build: BuildInfo,
    /// `cpu` or `cuda`.
    pub backend: String,
    /// Kernel IDs the engine recorded as they executed (`tq2_0_q8k_dot_scalar`, ...).
    pub kernels: Vec<String>,
    /// The engine's variant per kind of product (`TQ2_0/decode` → `avx512`, `other` → the rest's)
    /// when it ran a plan tuned by `harness bench`; absent when one variant ran everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_plan: Option<std::collections::BTreeMap<String, String>>,
    /// `real`: the numbers come from running the model, not from a mock or a replay.
    pub compute_path: String,
    pub threads: usize,
    pub throughput: Throughput,
    /// blake3 over the scenario's golden lines (joined by `\n`).
    pub trace_digest: String,
    /// Check name → `pass`, `fail` or `ignored`.
    pub verdicts: BTreeMap<String, String>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_seconds: f64,
    /// `harness bench --receipt`: the engine and llama.cpp side by side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<crate::bench::BenchReport>,
    /// The GPU the `cuda` check ran on (present exactly when `backend` is `cuda`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuInfo>,
}

/// The device of a `cuda` run, and the CUDA backend's own throughput in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuInfo {
    /// The device's name (`NVIDIA H200`).
    pub device: String,
    /// The driver's CUDA version (`12.8`).
    pub driver_version: String,
    /// `major.minor`.
    pub compute_capability: String,
    /// NVRTC's version, when it compiled the kernels (absent with a cached PTX).
    pub nvrtc_version: Option<String>,
    /// The CUDA backend's tokens/s in the same run (trace capture on).
    pub prefill_tps: f64,
    pub decode_tps: Option<f64>,
}

/// The device name the CUDA backend's host emulation records: not GPU evidence.
pub const HOST_EMULATION_DEVICE: &str = "host emulation";

/// What produced the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineInfo {
    pub version: String,
    /// 40 hex digits, or `unknown` outside a git checkout.
    pub git_commit: String,
    pub git_dirty: bool,
}

/// How it was built and where it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildInfo {
    /// `release` or `debug`.
    pub profile: String,
    pub target_arch: String,
    /// CPU features detected at run time (`avx2`, `avx512f`, `avx512vnni`, `f16c`, `fma`, `neon`).
    pub cpu_features: Vec<String>,
    /// `/proc/cpuinfo`'s model name, family and model (empty in receipts older than the field).
    #[serde(default)]
    pub cpu_model: String,
}

/// Tokens per second measured in this run (trace capture on, for both sides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    pub prefill_tps: f64,
    /// Absent when the scenario generates fewer than two tokens (no decode call).
    pub decode_tps: Option<f64>,
    /// The reference's, measured in the same run; absent when no reference ran.
    pub reference_prefill_tps: Option<f64>,
    pub reference_decode_tps: Option<f64>,
}

/// CPU features this machine has, detected at run time.
pub fn cpu_features() -> Vec<String> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
        ] {
            if on {
                v.push(name.to_string());
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            v.push("neon".to_string());
        }
    }
    v
}

/// `(commit, dirty)` of the git checkout at `dir`, or `("unknown", false)`.
pub fn git_state(dir: &Path) -> (String, bool) {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(c) if c.len() == 40 => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            (c, dirty)
        }
        _ => ("unknown".into(), false),
    }
}

/// RFC 3339 UTC, to the second, of a time (`2026-12-03T20:43:51Z`); times before the epoch are
/// written as the epoch.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        // Past the year 9999: no such clock; the epoch rather than a panic.
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Seconds since the epoch of an RFC 3339 time (`Z` or a numeric offset; a fraction of a second
/// is dropped), or `None` when `s` is not one (a date that does not exist, such as February 30,
/// included).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Parse `7d`, `12h`, `30m`, `45s` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| {
        format!("bad duration `{s}`: expected a number and a unit, like 7d, 12h, 30m or 45s")
    })?;
    let mult = match unit {
        "d" => 86_400,
        "h" => 3600,
        "m" => 60,
        "s" | "" => 1,
        _ => return Err(format!("bad duration `{s}`: unit must be d, h, m or s")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("bad duration `{s}`: too large"))
}

/// The ISA suffixes kernel IDs end with.
pub const ISAS: &[&str] = &[
    "scalar",
    "avx2",
    "vnni256",
    "avx512",
    "avx512vnni",
    "neon",
    "cuda",
];

/// Whether a kernel ID is well formed: lowercase words, digits and underscores, at least three
/// parts, ending with a known ISA.
pub fn kernel_id_ok(id: &str) -> bool {
    let parts: Vec<&str> = id.split('_').collect();
    parts.len() >= 3
        && id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        && parts.iter().all(|p| !p.is_empty())
        && ISAS.iter().any(|isa| id.ends_with(&format!("_{isa}")))
}

/// The digest of a golden body.
pub fn trace_digest(golden_body: &str) -> String {
    blake3::hash(golden_body.as_bytes()).to_hex().to_string()
}

impl Receipt {
    /// Write `dir/<scenario>.json` atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.scenario));
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bitnet_engine::npy::write_atomic(&path, &json)?;
        Ok(path)
    }
}

/// The JSON Schema of receipts, as checked in at `receipts/schema.json`.
pub fn json_schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Receipt)).expect("schema serializes") + "\n"
}

/// What `verify-receipt` checks beyond the receipt itself.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub require_gpu_kernels: bool,
    pub min_decode_tps: Option<f64>,
    pub max_age_seconds: Option<u64>,
    /// The goldens directory to compare trace digests against.
    pub goldens: Option<PathBuf>,
    /// Where relative paths in receipts (scenario and model files) are resolved.
    pub base: PathBuf,
    /// "Now", in seconds since the epoch.
    pub now: i64,
}

/// A failed check: the exit code of its class and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

/// Check one receipt file.
pub fn verify_file(path: &Path, o: &VerifyOptions) -> Result<(), Failure> {
    let shown = path.display().to_string();
    let fail = |code: u8, message: String| Failure {
        code,
        message: format!("{shown}: {message}"),
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(EXIT_MALFORMED, format!("cannot read: {e}")))?;
    // The version first, so a future schema is named as such rather than as unknown fields.
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(EXIT_MALFORMED, format!("not JSON: {e}")))?;
    match raw.get("schema_version").and_then(|v| v.as_u64()) {
        Some(1) => {}
        Some(v) => {
            return Err(fail(
                EXIT_VERSION,
                format!("field `schema_version` is {v}, expected 1"),
            ))
        }
        None => {
            return Err(fail(
                EXIT_MALFORMED,
                "field `schema_version` is missing or not a number, expected 1".into(),
            ))
        }
    }
    let r: Receipt = serde_json::from_str(&text).map_err(|e| {
        fail(
            EXIT_MALFORMED,
            format!("does not match the receipt schema: {e}"),
        )
    })?;
    if r.compute_path != "real" {
        return Err(fail(
            EXIT_COMPUTE_PATH,
            format!(
                "field `compute_path` is `{}`, expected `real`",
                r.compute_path
            ),
        ));
    }
    if r.kernels.is_empty() {
        return Err(fail(
            EXIT_KERNELS,
            "field `kernels` is empty, expected the kernel IDs that executed".into(),
        ));
    }
    if let Some(bad) = r.kernels.iter().find(|k| !kernel_id_ok(k)) {
        return Err(fail(EXIT_KERNELS, format!("field `kernels` has `{bad}`, expected `<format>_<activation>_<op>_<isa>` with isa one of {}", ISAS.join(", "))));
    }
    if r.build.target_arch.is_empty() {
        return Err(fail(
            EXIT_PROVENANCE,
            "field `build.target_arch` is empty, expected the target (`x86_64`, `aarch64`)".into(),
        ));
    }
    // Kernels the engine can record, of an instruction set the recorded target and CPU have.
    let known = bitnet_engine::kernels::known_kernel_ids();
    for k in &r.kernels {
        if !known.contains(k) {
            return Err(fail(
                EXIT_KERNELS,
                format!("field `kernels` has `{k}`, which this engine has no kernel of"),
            ));
        }
        let isa = k.rsplit('_').next().unwrap_or("");
        let (arch_ok, feature) = match isa {
            // GPU kernels: the device is checked with `backend` below.
            "scalar" | "cuda" => (true, None),
            "avx2" => (r.build.target_arch == "x86_64", Some("avx2")),
            "avx512" => (r.build.target_arch == "x86_64", Some("avx512f")),
            "vnni256" => (r.build.target_arch == "x86_64", Some("avx512vnni")),
            "neon" => (r.build.target_arch == "aarch64", Some("neon")),
            _ => (false, None),
        };
        let has = feature.is_none_or(|f| r.build.cpu_features.iter().any(|c| c == f));
        if !arch_ok || !has {
            return Err(fail(
                EXIT_KERNELS,
                format!(
                    "field `kernels` has `{k}`, an {isa} kernel, but the build is {} with CPU features [{}]",
                    r.build.target_arch,
                    r.build.cpu_features.join(", ")
                ),
            ));
        }
    }
    let simd: std::collections::BTreeSet<&str> = r
        .kernels
        .iter()
        .filter_map(|k| k.rsplit('_').next())
        .filter(|isa| !matches!(*isa, "scalar" | "cuda"))
        .collect();
    // Without a plan one run uses one variant: the ISAs are those that variant records (the
    // `vnni256` variant runs AVX2's kernels for its non-ternary products). With a plan, those of
    // the variants it names.
    use bitnet_engine::kernels::Kernel;
    match &r.kernel_plan {
        None => {
            let one_variant = Kernel::ALL
                .iter()
                .any(|k| simd.iter().all(|isa| k.recorded_isas().contains(isa)));
            if !simd.is_empty() && !one_variant {
                return Err(fail(
                    EXIT_KERNELS,
                    format!(
                        "field `kernels` mixes the variants {simd:?}; one run uses one variant (and scalar helpers) unless `kernel_plan` names several"
                    ),
                ));
            }
        }
        Some(plan) => {
            let mut allowed = std::collections::BTreeSet::new();
            for (kind, v) in plan {
                let Some(k) = Kernel::ALL.into_iter().find(|k| k.suffix() == v) else {
                    return Err(fail(
                        EXIT_KERNELS,
                        format!("field `kernel_plan` gives `{kind}` the variant `{v}`, which this engine does not have"),
                    ));
                };
                let (w, phase) = kind.split_once('/').unwrap_or((kind, ""));
                let known_kind = kind == "other"
                    || (matches!(phase, "decode" | "prefill")
                        && bitnet_engine::gguf::GgmlType::all().any(|t| t.name() == w));
                if !known_kind {
                    return Err(fail(
                        EXIT_KERNELS,
                        format!("field `kernel_plan` has the kind `{kind}`, expected `other` or `<weight type>/decode|prefill`"),
                    ));
                }
                allowed.extend(k.recorded_isas().iter().copied());
            }
            if !plan.contains_key("other") {
                return Err(fail(
                    EXIT_KERNELS,
                    "field `kernel_plan` has no `other` entry (the variant of everything else)"
                        .into(),
                ));
            }
            if let Some(isa) = simd.iter().find(|isa| !allowed.contains(*isa)) {
                return Err(fail(
                    EXIT_KERNELS,
                    format!(
                        "field `kernels` has {isa} kernels, which no variant of `kernel_plan` runs"
                    ),
                ));
            }
        }
    }
    let gpu: Vec<&String> = r.kernels.iter().filter(|k| k.ends_with("_cuda")).collect();
    match r.backend.as_str() {
        "cpu" => {
            if let Some(k) = gpu.first() {
                return Err(fail(
                    EXIT_KERNELS,
                    format!("field `kernels` has the GPU kernel `{k}` but `backend` is `cpu`"),
                ));
            }
            if o.require_gpu_kernels {
                return Err(fail(EXIT_GPU_KERNELS, "GPU kernels are required (--require-gpu-kernels) but `kernels` has none and `backend` is `cpu`".into()));
            }
        }
        "cuda" => {
            if gpu.is_empty() {
                return Err(fail(
                    EXIT_GPU_KERNELS,
                    "field `backend` is `cuda` but `kernels` has no `_cuda` kernel".into(),
                ));
            }
            match &r.gpu {
                None => {
                    return Err(fail(
                        EXIT_PROVENANCE,
                        "field `backend` is `cuda` but the receipt has no `gpu` section (device, driver)".into(),
                    ))
                }
                Some(g) if g.device.is_empty() || g.device == HOST_EMULATION_DEVICE => {
                    return Err(fail(
                        EXIT_GPU_KERNELS,
                        format!("field `gpu.device` is `{}`: the `_cuda` kernels ran on the host emulation, not on a GPU", g.device),
                    ))
                }
                Some(_) => {}
            }
        }
        other => {
            return Err(fail(
                EXIT_PROVENANCE,
                format!("field `backend` is `{other}`, expected `cpu` or `cuda`"),
            ))
        }
    }
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit());
    if !hex64(&r.model_blake3) {
        return Err(fail(
            EXIT_MODEL_HASH,
            format!(
                "field `model_blake3` is `{}`, expected 64 hex digits",
                r.model_blake3
            ),
        ));
    }
    let model = o.base.join(&r.model);
    if r.model.is_empty() || !hashable_file(&model) {
        return Err(fail(
            EXIT_MODEL_HASH,
            format!(
                "field `model` is `{}`: `{}` is not a file (a non-empty regular file outside /proc and /sys), so `model_blake3` cannot be checked",
                r.model,
                model.display()
            ),
        ));
    }
    {
        let got = blake3_file(&model).map_err(|e| {
            fail(
                EXIT_MODEL_HASH,
                format!("cannot hash `{}`: {e}", model.display()),
            )
        })?;
        if got != r.model_blake3 {
            return Err(fail(
                EXIT_MODEL_HASH,
                format!(
                    "field `model_blake3` is {}, but `{}` hashes to {got}",
                    r.model_blake3,
                    model.display()
                ),
            ));
        }
    }
    if !hex64(&r.scenario_blake3) {
        return Err(fail(
            EXIT_SCENARIO_HASH,
            format!(
                "field `scenario_blake3` is `{}`, expected 64 hex digits",
                r.scenario_blake3
            ),
        ));
    }
    let scenario = o.base.join(&r.scenario_file);
    if r.scenario_file.is_empty() || !hashable_file(&scenario) {
        return Err(fail(
            EXIT_SCENARIO_HASH,
            format!(
                "field `scenario_file` is `{}`: `{}` is not a file (a non-empty regular file outside /proc and /sys), so `scenario_blake3` cannot be checked",
                r.scenario_file,
                scenario.display()
            ),
        ));
    }
    {
        let got = blake3_file(&scenario).map_err(|e| fail(EXIT_SCENARIO_HASH, e.to_string()))?;
        if got != r.scenario_blake3 {
            return Err(fail(
                EXIT_SCENARIO_HASH,
                format!(
                    "field `scenario_blake3` is {}, but `{}` hashes to {got}",
                    r.scenario_blake3,
                    scenario.display()
                ),
            ));
        }
    }
    if !hex64(&r.trace_digest) {
        return Err(fail(
            EXIT_TRACE_DIGEST,
            format!(
                "field `trace_digest` is `{}`, expected 64 hex digits",
                r.trace_digest
            ),
        ));
    }
    if let Some(goldens) = &o.goldens {
        let g = crate::golden::snapshot_path(goldens, &r.scenario);
        let text = std::fs::read_to_string(&g).map_err(|e| {
            fail(
                EXIT_TRACE_DIGEST,
                format!("cannot read the golden `{}`: {e}", g.display()),
            )
        })?;
        let want = trace_digest(crate::golden::snapshot_body(&text));
        if want != r.trace_digest {
            return Err(fail(
                EXIT_TRACE_DIGEST,
                format!(
                    "field `trace_digest` is {}, the golden `{}` gives {want}",
                    r.trace_digest,
                    g.display()
                ),
            ));
        }
    }
    let t = &r.throughput;
    for (name, v) in [
        ("throughput.prefill_tps", Some(t.prefill_tps)),
        ("throughput.decode_tps", t.decode_tps),
        ("throughput.reference_prefill_tps", t.reference_prefill_tps),
        ("throughput.reference_decode_tps", t.reference_decode_tps),
    ] {
        if let Some(v) = v {
            if !(MIN_TPS..=MAX_TPS).contains(&v) {
                return Err(fail(
                    EXIT_THROUGHPUT,
                    format!("field `{name}` is {v}, expected tokens/s between {MIN_TPS} and {MAX_TPS:e}"),
                ));
            }
        }
    }
    if let Some(floor) = o.min_decode_tps {
        match t.decode_tps {
            Some(v) if v >= floor => {}
            Some(v) => {
                return Err(fail(
                    EXIT_THROUGHPUT,
                    format!("field `throughput.decode_tps` is {v:.1}, below the floor {floor}"),
                ))
            }
            None => {
                return Err(fail(
                    EXIT_THROUGHPUT,
                    format!("field `throughput.decode_tps` is absent, the floor is {floor}"),
                ))
            }
        }
    }
    let start = parse_rfc3339(&r.started_at).ok_or_else(|| {
        fail(
            EXIT_TIME,
            format!(
                "field `started_at` is `{}`, expected an RFC 3339 time like 2026-01-31T12:00:00Z",
                r.started_at
            ),
        )
    })?;
    if !(r.duration_seconds.is_finite() && (0.0..=MAX_DURATION).contains(&r.duration_seconds)) {
        return Err(fail(
            EXIT_TIME,
            format!(
                "field `duration_seconds` is {}, expected 0 to {MAX_DURATION} seconds",
                r.duration_seconds
            ),
        ));
    }
    let end = start.saturating_add(r.duration_seconds.ceil() as i64);
    if end > o.now + 300 {
        return Err(fail(
            EXIT_TIME,
            format!(
                "field `started_at` {} plus the duration lies in the future",
                r.started_at
            ),
        ));
    }
    if let Some(max) = o.max_age_seconds {
        if o.now.saturating_sub(start) > i64::try_from(max).unwrap_or(i64::MAX) {
            return Err(fail(
                EXIT_TIME,
                format!(
                    "field `started_at` {} is older than the allowed age ({max} s)",
                    r.started_at
                ),
            ));
        }
    }
    if r.verdicts.is_empty() {
        return Err(fail(
            EXIT_VERDICT,
            "field `verdicts` is empty, expected every check's verdict".into(),
        ));
    }
    for (check, v) in &r.verdicts {
        match v.as_str() {
            "pass" => {}
            // A receipt is written only when the scenario ran (not skipped), and then only the
            // `cuda` check can be ignored: any other `ignored` hides a verdict.
            "ignored" if check == "cuda" => {}
            "ignored" => {
                return Err(fail(
                    EXIT_VERDICT,
                    format!("field `verdicts.{check}` is `ignored`, but the scenario ran: only `cuda` may be ignored in a receipt"),
                ))
            }
            "fail" => {
                return Err(fail(
                    EXIT_VERDICT,
                    format!("field `verdicts.{check}` is `fail`"),
                ))
            }
            other => {
                return Err(fail(
                    EXIT_VERDICT,
                    format!(
                    "field `verdicts.{check}` is `{other}`, expected `pass`, `fail` or `ignored`"
                ),
                ))
            }
        }
    }
    if r.engine.version.is_empty()
        || !(r.engine.git_commit == "unknown"
            || (r.engine.git_commit.len() == 40
                && r.engine.git_commit.bytes().all(|c| c.is_ascii_hexdigit())))
    {
        return Err(fail(
            EXIT_PROVENANCE,
            format!(
                "field `engine.git_commit` is `{}`, expected 40 hex digits or `unknown`",
                r.engine.git_commit
            ),
        ));
    }
    if !["release", "debug"].contains(&r.build.profile.as_str()) || r.build.target_arch.is_empty() {
        return Err(fail(
            EXIT_PROVENANCE,
            format!(
                "field `build.profile` is `{}`, expected `release` or `debug`",
                r.build.profile
            ),
        ));
    }
    if r.threads == 0 {
        return Err(fail(
            EXIT_PROVENANCE,
            "field `threads` is 0, expected at least 1".into(),
        ));
    }
    if r.engine.version != env!("CARGO_PKG_VERSION") {
        return Err(fail(
            EXIT_PROVENANCE,
            format!(
                "field `engine.version` is `{}`, this engine is {}",
                r.engine.version,
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    // A commit must be one of this checkout's (when it is a git checkout).
    if r.engine.git_commit != "unknown" && git_state(&o.base).0 != "unknown" {
        let known = std::process::Command::new("git")
            .arg("-C")
            .arg(&o.base)
            .args(["cat-file", "-e"])
            .arg(format!("{}^{{commit}}", r.engine.git_commit))
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !known {
            return Err(fail(
                EXIT_PROVENANCE,
                format!(
                    "field `engine.git_commit` is {}, which is not a commit of `{}`",
                    r.engine.git_commit,
                    o.base.display()
                ),
            ));
        }
    }
    // What the scenario file (present and hash-checked above) implies.
    let loaded = crate::scenario::load_scenario(&scenario).map_err(|e| {
        fail(
            EXIT_SCENARIO_HASH,
            format!("the scenario does not load: {e}"),
        )
    })?;
    let sc = &loaded.scenario;
    if r.threads != sc.threads {
        return Err(fail(
            EXIT_PROVENANCE,
            format!(
                "field `threads` is {}, the scenario runs {}",
                r.threads, sc.threads
            ),
        ));
    }
    if r.backend == "cuda" {
        if !sc.backends.contains(&crate::scenario::Backend::Cuda) {
            return Err(fail(
                EXIT_PROVENANCE,
                "field `backend` is `cuda` but the scenario's `backends` has no `cuda`".into(),
            ));
        }
        if r.verdicts.get("cuda").map(String::as_str) != Some("pass") {
            return Err(fail(
                EXIT_PROVENANCE,
                "field `backend` is `cuda` but `verdicts.cuda` is not `pass`".into(),
            ));
        }
    } else if r.gpu.is_some() {
        return Err(fail(
            EXIT_PROVENANCE,
            format!("field `gpu` is present but `backend` is `{}`", r.backend),
        ));
    }
    for check in crate::run::checks_of(&loaded) {
        if !r.verdicts.contains_key(check.name()) {
            return Err(fail(
                EXIT_VERDICT,
                format!(
                    "field `verdicts` lacks `{}`, a check the scenario implies",
                    check.name()
                ),
            ));
        }
    }
    for want in &sc.receipt.kernels {
        let m = globset::Glob::new(want)
            .map_err(|e| fail(EXIT_KERNELS, format!("the scenario's kernel `{want}`: {e}")))?
            .compile_matcher();
        if !r.kernels.iter().any(|k| m.is_match(k)) {
            return Err(fail(
                EXIT_KERNELS,
                format!("field `kernels` lacks `{want}`, which the scenario's `receipt.kernels` requires"),
            ));
        }
    }
    // The scenario's decode floor, which its `receipt` check held the same figure to.
    if let Some(floor) = sc.receipt.min_decode_tps {
        if !r.throughput.decode_tps.is_some_and(|v| v >= floor) {
            return Err(fail(
                EXIT_THROUGHPUT,
                format!(
                    "field `throughput.decode_tps` is {:?}, under the scenario's `receipt.min_decode_tps` {floor}",
                    r.throughput.decode_tps
                ),
            ));
        }
    }
    let ran_reference = matches!(r.verdicts.get("parity").map(String::as_str), Some("pass"));
    if ran_reference
        && (r.throughput.reference_prefill_tps.is_none()
            || (r.throughput.decode_tps.is_some() && r.throughput.reference_decode_tps.is_none()))
    {
        return Err(fail(
            EXIT_THROUGHPUT,
            "the reference ran (parity passed) but a reference tokens/s figure is null".into(),
        ));
    }
    Ok(())
}

/// Tokens/s a receipt may state: below is not a run, above is not this machine.
pub const MIN_TPS: f64 = 1e-3;
/// See [`MIN_TPS`].
pub const MAX_TPS: f64 = 1e8;
/// Longest run a receipt may state (one week).
pub const MAX_DURATION: f64 = 7.0 * 86400.0;

/// Whether the gate may hash `path`: a regular file that is not empty and not a kernel
/// pseudo-file. Files under `/proc` and `/sys` state a size of 0 (or one they do not hold) and
/// some read without end: `/proc/self/pagemap` named as a receipt's model held the gate for
/// minutes, reading hundreds of gigabytes.
pub fn hashable_file(path: &Path) -> bool {
    let pseudo =
        std::fs::canonicalize(path).is_ok_and(|p| p.starts_with("/proc") || p.starts_with("/sys"));
    !pseudo && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// blake3 of a file's bytes (memory-mapped).
pub fn blake3_file(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap(path)?;
    Ok(h.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_and_known_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
        let s = rfc3339(t);
        assert_eq!(s, "2026-09-21T14:13:20Z"); // worked out from 1_790_000_000 s: 20717 days + 51200 s
        assert_eq!(parse_rfc3339(&s), Some(1_790_000_000));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        // Worked by hand: 2026-09-21T16:13:20+02:00 is 14:13:20 UTC.
        assert_eq!(
            parse_rfc3339("2026-09-21T16:13:20+02:00"),
            Some(1_790_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-09-21T14:13:20.75Z"),
            Some(1_790_000_000)
        );
        // Days that do not exist, and what RFC 3339 does not allow.
        assert_eq!(parse_rfc3339("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2025-02-29T00:00:00Z"), None);
        // RFC 3339 (section 5.6, note) lets another separator stand for the `T`; `time` reads
        // any, as the same instant.
        assert_eq!(parse_rfc3339("2026-09-21 14:13:20Z"), Some(1_790_000_000));
        assert_eq!(parse_rfc3339("2026-09-21T14:13:20"), None);
        assert_eq!(parse_rfc3339("2026-09-21T24:00:00Z"), None);
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn durations_and_kernel_ids() {
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert!(parse_duration("7w").is_err());
        assert!(kernel_id_ok("tq2_0_q8k_dot_scalar"));
        assert!(kernel_id_ok("f16_f16_dot_avx512vnni"));
        assert!(!kernel_id_ok("TQ2_dot_scalar"));
        assert!(!kernel_id_ok("tq2_0_q8k_dot_sse"));
        assert!(!kernel_id_ok("scalar"));
        assert!(!kernel_id_ok("tq2__dot_scalar"));
    }
}
