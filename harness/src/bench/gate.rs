//! The perf gate: a bench report's engine/llama.cpp ratios against the floors committed per
//! processor family in `receipts/perf-baseline.json`, and the rounds whose spread is too wide
//! to trust.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BenchReport, Stats, ThreadResult};

/// The perf gate's stored floors (`receipts/perf-baseline.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerfBaseline {
    /// Always 1.
    pub schema_version: u32,
    /// Where the floors come from (the run they were measured in).
    pub note: String,
    /// A ratio passes when it is at least `min_ratio × (1 − noise_margin)`.
    pub noise_margin: f64,
    /// The conservative floors, for a CPU no entry of `cpus` matches.
    pub floors: Vec<Floor>,
    /// Floors measured on a processor family: the first entry whose `cpu_match` is part of the
    /// report's `cpu_model` applies.
    #[serde(default)]
    pub cpus: Vec<CpuFloors>,
}

/// The floors of one processor family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuFloors {
    /// A substring of the CPU model (`Intel(R) Xeon(R) Processor (family 6, model 167)`).
    pub cpu_match: String,
    /// Where the floors come from (the machine, date and measured ratios).
    pub note: String,
    pub floors: Vec<Floor>,
}

/// A round set is noisy when its slowest and fastest rates differ by more than this factor: the
/// machine's other load moved them, and the median is not a figure to trust alone.
pub const NOISY_SPREAD: f64 = 1.5;

/// Which of a thread count's rates are noisy ([`NOISY_SPREAD`]), named (`engine decode`).
pub fn noisy(t: &ThreadResult) -> Vec<String> {
    let mut v = Vec::new();
    let mut check = |side: &str, phase: &str, s: &Stats| {
        if s.samples.len() > 1 && s.max > s.min * NOISY_SPREAD {
            v.push(format!(
                "{side} {phase} [{:.1}-{:.1}] spreads more than {NOISY_SPREAD}x",
                s.min, s.max
            ));
        }
    };
    check("engine", "prefill", &t.engine.prefill_tps);
    check("engine", "decode", &t.engine.decode_tps);
    if let Some(l) = &t.llama {
        check("llama.cpp", "prefill", &l.prefill_tps);
        check("llama.cpp", "decode", &l.decode_tps);
    }
    v
}

/// One floor: engine/llama.cpp ratio of a phase at a thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Floor {
    pub threads: usize,
    /// `prefill` or `decode`.
    pub phase: String,
    pub min_ratio: f64,
}

/// Read a JSON file into `T`, naming the file, line and column on error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = bitnet_engine::files::read_text_limited(
        path,
        bitnet_engine::files::MAX_JSON_BYTES,
        "JSON file",
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    crate::bounded::json(&text)
        .and_then(|()| serde_json::from_str(&text))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Check a report against the floors: `Ok(lines)` when every floor holds, `Err(lines)` naming
/// each one that does not (and any floor the report has no measurement for).
pub fn gate(base: &PerfBaseline, report: &BenchReport) -> Result<Vec<String>, Vec<String>> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    if !(0.0..1.0).contains(&base.noise_margin) {
        bad.push(format!(
            "noise_margin {} is outside [0, 1)",
            base.noise_margin
        ));
    }
    let (floors, source) = match base
        .cpus
        .iter()
        .find(|c| !c.cpu_match.is_empty() && report.cpu_model.contains(&c.cpu_match))
    {
        Some(c) => (&c.floors, format!("floors of `{}`", c.cpu_match)),
        None => (
            &base.floors,
            format!(
                "conservative floors (no entry for CPU `{}`)",
                if report.cpu_model.is_empty() {
                    "unknown"
                } else {
                    &report.cpu_model
                }
            ),
        ),
    };
    ok.push(format!("using the {source}"));
    bad.push(format!("using the {source}"));
    for f in floors {
        let Some(t) = report.results.iter().find(|t| t.threads == f.threads) else {
            bad.push(format!(
                "{} at {} thread(s): no measurement in the report",
                f.phase, f.threads
            ));
            continue;
        };
        let ratio = match f.phase.as_str() {
            "prefill" => t.prefill_ratio,
            "decode" => t.decode_ratio,
            other => {
                bad.push(format!(
                    "floor phase `{other}`: expected `prefill` or `decode`"
                ));
                continue;
            }
        };
        let Some(ratio) = ratio else {
            bad.push(format!(
                "{} at {} thread(s): the report has no llama.cpp run to compare with ({})",
                f.phase,
                f.threads,
                report
                    .reference_unavailable
                    .as_deref()
                    .unwrap_or("no reference")
            ));
            continue;
        };
        let limit = f.min_ratio * (1.0 - base.noise_margin);
        let line = format!(
            "{} at {} thread(s): engine/llama.cpp {ratio:.3}x, floor {:.3}x less {:.0}% = {limit:.3}x",
            f.phase,
            f.threads,
            f.min_ratio,
            100.0 * base.noise_margin
        );
        let noise = noisy(t);
        let line = if noise.is_empty() {
            line
        } else {
            format!("{line} (noisy: {})", noise.join("; "))
        };
        if ratio.is_finite() && ratio >= limit {
            ok.push(line);
        } else {
            bad.push(line);
        }
    }
    // Only the line naming the floors: nothing failed.
    if bad.len() == 1 {
        bad.clear();
    }
    if bad.is_empty() {
        Ok(ok)
    } else {
        Err(bad)
    }
}
