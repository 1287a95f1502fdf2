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
//! | 18 | `EXIT_TIME` | `started_at` unparsable, in the future, older than `--max-age`, before GGUF existed (2023-08-21) or before its `engine.git_commit` was made (an hour's grace); a duration of 0 or over a week |
//! | 19 | `EXIT_VERDICT` | a check failed, a verdict is not `pass`/`fail`/`ignored`, a check other than `cuda` is `ignored`, or a check the scenario implies is missing |
//! | 20 | `EXIT_SCENARIO_HASH` | the scenario is not a file or does not load, or `scenario_blake3` differs from its hash |
//! | 21 | `EXIT_PROVENANCE` | engine version not this one, a commit not in this checkout, build, backend or threads inconsistent (`cuda` without a `gpu` section, a passing `cuda` verdict or the scenario's `cuda` backend; a passing `cuda` verdict on a `cpu` receipt) |
//! | 22 | `EXIT_REPRODUCE` | `--reproduce`: another trace digest or throughput here |
//! | 23 | `EXIT_MISSING` | `--every-scenario`: a scenario of the project that runs on this machine (none of its skip reasons holds) has no receipt |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod verify;
pub use verify::{
    blake3_file, hashable_file, verify_file, Failure, VerifyOptions, MAX_DURATION, MAX_TPS, MIN_TPS,
};

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
/// `--every-scenario`: a scenario of the project that runs on this machine has no receipt.
pub const EXIT_MISSING: u8 = 23;

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
    /// when it ran a plan tuned by `harness bench`; absent when one variant ran everything. A
    /// kind's value names its measured knobs after the variant: `vnni256 rows 8 prefetch 4096`
    /// (decode: rows per kernel call, prefetch distance in bytes, 0: none), `vnni256 tokens 2`
    /// (prefill: tokens per kernel call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_plan: Option<std::collections::BTreeMap<String, String>>,
    /// `real`: the numbers come from running the model, not from a mock or a replay.
    pub compute_path: String,
    pub threads: usize,
    /// The KV cache's type (`f32`, `f16`), as the scenario's `kv_cache` says; absent: `f32`.
    #[serde(
        default,
        skip_serializing_if = "bitnet_engine::attention::KvType::is_f32"
    )]
    pub kv_cache: bitnet_engine::attention::KvType,
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
